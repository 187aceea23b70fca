"""Training recipe of the reviser: the policy taught to revise its own wrong attempts.

Snell et al. (2024, section 6.1) fine-tune the policy on the policy's *own* mistakes: sample many
answers per train question, then show up to four wrong ones in context before a right solution,
the wrong attempt closest to the right one (edit distance) last. A revision model trained on
made-up mistakes learns to write a different chain, not to fix the one it sees; trained on its own
slips it learns where it slips and what the step should have been.

Examples are drawn fresh at every step from the policy's sampled solutions (``ponder train
rollouts --label checked``), grouped by question:

- **revise** (``revise_weight``): 1..``max_attempts`` of the question's wrong samples, each followed by
  an ``R:`` line, then the question again (:func:`~ponder.tasks.arithmetic.revision_prompt`), the
  closest to the reference solution last; the target is the reference solution.
- **keep** (``keep_weight``): the same, but the last attempt shown is one of the question's right
  samples; the target is that solution again. At test time a revision prompt shows every earlier
  attempt, right or not, so the reviser must learn to check before it changes anything.
- **plain** (``plain_weight``): the question alone, the target one of the policy's own samples
  (right or wrong). This self-distillation keeps a first attempt what the policy would write, so
  what revision adds is measured against the same first attempts.
"""

from __future__ import annotations

import difflib
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ponder.errors import ConfigError
from ponder.tasks.arithmetic import ANSWER_PREFIX, STEP_DELIMITER, revision_prompt
from ponder.training.checkpoint import cosine_lr, progress_bar, resume_fine_tune, save_checkpoint
from ponder.training.model import load_model, save_model
from ponder.training.prm_data import read_labels
from ponder.training.tokenizer import CharTokenizer
from ponder.training.train_checker import sample_problem
from ponder.training.train_policy import accumulate_lm_loss, make_optimizer

# Draws of a (prompt, target) pair before giving up: only a context too short for nearly every
# sample needs more.
MAX_DRAWS = 10_000


@dataclass
class ReviserTrainConfig:
    samples: str = "runs/reviser/samples.jsonl"
    init_from: str = "runs/policy/policy.safetensors"
    out_dir: str = "runs/reviser"
    # 600 steps at 3e-4 had not learned to revise (RESULTS.md); 1,200 at 1e-3 had.
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    max_attempts: int = 3  # most earlier attempts a training prompt shows
    revise_weight: float = 0.5
    keep_weight: float = 0.25
    plain_weight: float = 0.25
    length_buckets: int = 4
    ckpt_every: int = 100
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ckpt_every", "max_attempts", "length_buckets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"reviser {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"reviser lr must be > 0, got {self.lr}")
        weights = (self.revise_weight, self.keep_weight, self.plain_weight)
        if min(weights) < 0 or self.revise_weight <= 0:
            raise ConfigError(
                "reviser example weights must be >= 0 with revise_weight > 0, "
                f"got revise/keep/plain {weights}"
            )


@dataclass
class QuestionSamples:
    """One train question's sampled solutions, split by outcome, and its reference solution."""

    prompt: str
    reference: str
    wrong: list[str]
    right: list[str]


def group_samples(records: list[dict], source: str = "samples") -> list[QuestionSamples]:
    """The sampled solutions of ``records`` grouped by question (distinct texts, first seen first)."""
    groups: dict[str, QuestionSamples] = {}
    seen: dict[str, set[str]] = defaultdict(set)
    for i, record in enumerate(records):
        missing = [k for k in ("question", "prompt", "solution") if not isinstance(record.get(k), str)]
        if missing or not isinstance(record.get("outcome"), (int, float)):
            what = ", ".join(missing) or "outcome"
            raise ConfigError(f"{source}: sample {i} has no {what} (not a sampled-solutions file)")
        question = record["question"]
        if question not in groups:
            groups[question] = QuestionSamples(
                record["prompt"], sample_problem(record).solution, wrong=[], right=[]
            )
        text = record["solution"]
        if text in seen[question]:
            continue
        seen[question].add(text)
        (groups[question].right if record["outcome"] >= 1 else groups[question].wrong).append(text)
    return list(groups.values())


def is_complete(solution: str) -> bool:
    """Whether a sampled solution ends in an answer line (not cut off by the token limit)."""
    return solution.rstrip(STEP_DELIMITER).split(STEP_DELIMITER)[-1].startswith(ANSWER_PREFIX)


def closest_last(attempts: list[str], reference: str) -> list[str]:
    """``attempts`` ordered so the one most like ``reference`` (edit similarity) comes last."""
    return sorted(attempts, key=lambda a: difflib.SequenceMatcher(None, a, reference).ratio())


def draw_example(
    groups: list[QuestionSamples], rng: random.Random, cfg: ReviserTrainConfig, max_chars: int
) -> tuple[str, str]:
    """One (prompt, target) pair: a revise, keep or plain example (see the module docstring)."""
    kinds = ("revise", "keep", "plain")
    for _ in range(MAX_DRAWS):
        kind = rng.choices(kinds, weights=(cfg.revise_weight, cfg.keep_weight, cfg.plain_weight))[0]
        g = rng.choice(groups)
        if kind == "plain":
            # Complete samples only: a cut-off one followed by end of text would teach stopping.
            pool = [t for t in g.wrong + g.right if is_complete(t)]
            if pool:
                return g.prompt, rng.choice(pool)
            continue
        if kind == "revise" and g.wrong:
            k = rng.randint(1, min(cfg.max_attempts, len(g.wrong)))
            shown, target = closest_last(rng.sample(g.wrong, k), g.reference), g.reference
        elif kind == "keep" and g.right:
            k = rng.randint(0, min(cfg.max_attempts - 1, len(g.wrong)))
            target = rng.choice(g.right)
            shown = rng.sample(g.wrong, k) + [target]
        else:
            continue  # this question has no sample of the kind drawn
        prompt = revision_prompt(g.prompt, shown)
        while len(shown) > 1 and len(prompt) + len(target) + 2 > max_chars:
            shown = shown[1:]  # as the strategy does: the oldest attempt goes first
            prompt = revision_prompt(g.prompt, shown)
        if len(prompt) + len(target) + 2 <= max_chars:
            return prompt, target
    raise ConfigError(
        f"reviser: no training example fits the model's {max_chars}-token context in {MAX_DRAWS} draws "
        "(are the samples' solutions longer than the context?)"
    )


def train_reviser(cfg: ReviserTrainConfig, resume: bool = True, log=print) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not Path(cfg.init_from).is_file():
        raise ConfigError(f"reviser: no policy weights to start from at {cfg.init_from}")
    records = read_labels(cfg.samples) if Path(cfg.samples).is_file() else []
    if not records:
        raise ConfigError(
            f"no sampled solutions in {cfg.samples}: run `ponder train rollouts --label checked` first"
        )
    groups = group_samples(records, cfg.samples)
    if not any(g.wrong for g in groups):
        raise ConfigError(f"{cfg.samples} holds no wrong samples: there is nothing to learn to revise")
    model, _ = load_model(cfg.init_from)
    if model.config.head != "lm":
        raise ConfigError(f"reviser: {cfg.init_from} is not a policy (language model) checkpoint")
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    tok = CharTokenizer()
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, elapsed = (
        resume_fine_tune(ckpt_path, asdict(cfg), model, opt, "reviser", log) if resume else (0, 0.0)
    )
    n_wrong = sum(len(g.wrong) for g in groups)
    log(
        f"reviser: {model.num_params():,} parameters, {len(groups)} questions "
        f"({n_wrong} distinct wrong samples), {cfg.steps} steps"
    )
    model.train()
    with progress_bar("train reviser", cfg.steps, completed=step) as (bar, task):
        while step < cfg.steps:
            t0 = time.perf_counter()
            rng = random.Random(f"reviser/{cfg.seed}/{step}")  # a resumed run draws the same batches
            pairs = [draw_example(groups, rng, cfg, model.config.max_seq_len) for _ in range(cfg.batch_size)]
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
            opt.zero_grad(set_to_none=True)
            loss = accumulate_lm_loss(model, tok, pairs, buckets=cfg.length_buckets)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            bar.update(task, advance=1, info=f"loss {loss:.4f}")
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_checkpoint(
                    ckpt_path,
                    model=model.state_dict(),
                    optimizer=opt.state_dict(),
                    step=step,
                    elapsed=elapsed,
                    config=asdict(cfg),
                )
                log(f"reviser step {step}/{cfg.steps}: loss {loss:.4f}")
    final = out / "reviser.safetensors"
    save_model(
        model.eval(),
        final,
        metadata={"train_config": asdict(cfg), "train_seconds": round(elapsed, 1), "questions": len(groups)},
    )
    return final
