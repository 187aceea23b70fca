"""Training recipe of the step checker: the policy's own samples, every slip corrected.

The checker is a language model of the policy's size, started from the policy's weights and
fine-tuned on solutions the policy sampled (``ponder train rollouts --label checked``). The
target at every character is not the character the policy wrote but what a careful solver would
write there given the text so far (:func:`ponder.tasks.answers.expected_chars`): where the policy
slipped, the checker learns the right character; elsewhere it learns to continue the policy's
text faithfully, slips included, so that one slip does not make every later step look wrong.

The policy's greedy mistakes are where its own distribution is confidently wrong, so the policy
cannot judge them (the likelihood verifier shows it). Trained on thousands of the policy's slips,
the checker puts most of its probability on the right character exactly there, and a written
slip becomes a low-probability token (scored by :class:`~ponder.verifiers.likelihood.CheckerLMVerifier`).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ponder.errors import ConfigError
from ponder.tasks.answers import expected_chars
from ponder.tasks.arithmetic import (
    ANSWER_PREFIX,
    STEP_DELIMITER,
    Problem,
    level_spec,
    number_width,
    parse_question,
)
from ponder.training.checkpoint import cosine_lr, progress_bar, resume_fine_tune, save_checkpoint
from ponder.training.model import TinyTransformer, load_model, save_model
from ponder.training.prm_data import read_labels
from ponder.training.tokenizer import CharTokenizer
from ponder.training.train_policy import lm_loss, make_optimizer, training_device


@dataclass
class CheckerTrainConfig:
    samples: str = "runs/checker/samples.jsonl"
    init_from: str = "runs/policy/policy.safetensors"
    out_dir: str = "runs/checker"
    steps: int = 500
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    ckpt_every: int = 100
    threads: int = 0
    # The policy may apply the operations in any order (embedded+orders): any unused operation is
    # a right next step (``expected_chars(any_order=True)``).
    any_order: bool = False
    # Where the steps run ("cpu" or "cuda"); free to change between resumes.
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"checker {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"checker lr must be > 0, got {self.lr}")


def sample_problem(record: dict) -> Problem:
    """The problem a sampled solution answers, at the width its level writes numbers in."""
    problem = parse_question(record["question"])
    if "level" in record:
        width = number_width(level_spec(record["level"]).max_value)
        problem = replace(problem, width=max(problem.width, width))
    return problem


def corrected_example(
    record: dict, tok: CharTokenizer, any_order: bool = False
) -> tuple[list[int], list[int]]:
    """``(input ids, target ids)`` of one sample: ``[bos] prompt solution`` in; out, at each
    position, the corrected next character (-100 where no rule applies), and end of text after a
    complete answer line."""
    prompt_ids = tok.encode(record["prompt"], bos=True)
    solution = record["solution"]
    problem = sample_problem(record)
    expected = expected_chars(problem, solution, any_order)
    targets = [-100] * (len(prompt_ids) - 1)
    targets += [tok.token_of(c) if c is not None else -100 for c in expected]
    last_line = solution.split(STEP_DELIMITER)[-1]
    complete = bool(expected) and expected[-1] is not None and last_line.startswith(ANSWER_PREFIX)
    targets.append(tok.eos_id if complete and len(last_line) == len(ANSWER_PREFIX) + problem.width else -100)
    return prompt_ids + tok.encode(solution), targets


def checker_loss(
    model: TinyTransformer, batch: list[tuple[list[int], list[int]]], pad_id: int
) -> torch.Tensor:
    """The policy's next-token loss, on right-padded corrected examples."""
    width = max(len(ids) for ids, _ in batch)
    x = torch.full((len(batch), width), pad_id, dtype=torch.long)
    y = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, (ids, targets) in enumerate(batch):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(targets)] = torch.tensor(targets)
    device = next(model.parameters()).device
    return lm_loss(model, x.to(device), y.to(device))


def train_checker(cfg: CheckerTrainConfig, resume: bool = True, log=print) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not Path(cfg.init_from).is_file():
        raise ConfigError(f"checker: no policy weights to start from at {cfg.init_from}")
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    tok = CharTokenizer()
    records = read_labels(cfg.samples) if Path(cfg.samples).is_file() else []
    if not records:
        raise ConfigError(
            f"no sampled solutions in {cfg.samples}: run `ponder train rollouts --label checked` first"
        )
    data = []
    for i, record in enumerate(records):
        missing = [k for k in ("question", "prompt", "solution") if not isinstance(record.get(k), str)]
        if missing:
            raise ConfigError(
                f"{cfg.samples}: sample {i} has no {', '.join(missing)} (not a sampled-solutions file)"
            )
        data.append(corrected_example(record, tok, cfg.any_order))
    model, _ = load_model(cfg.init_from)
    if model.config.head != "lm":
        raise ConfigError(f"checker: {cfg.init_from} is not a policy (language model) checkpoint")
    model.to(training_device(cfg.device))
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, elapsed = (
        resume_fine_tune(ckpt_path, asdict(cfg), model, opt, "checker", log) if resume else (0, 0.0)
    )
    log(f"checker: {model.num_params():,} parameters, {len(data)} sampled solutions, {cfg.steps} steps")
    model.train()
    with progress_bar("train checker", cfg.steps, completed=step) as (bar, task):
        while step < cfg.steps:
            t0 = time.perf_counter()
            rng = random.Random(f"checker/{cfg.seed}/{step}")
            batch = [data[i] for i in rng.sample(range(len(data)), min(cfg.batch_size, len(data)))]
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
            loss = checker_loss(model, batch, tok.pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            bar.update(task, advance=1, info=f"loss {loss.item():.4f}")
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_checkpoint(
                    ckpt_path,
                    model=model.state_dict(),
                    optimizer=opt.state_dict(),
                    step=step,
                    elapsed=elapsed,
                    config=asdict(cfg),
                )
                log(f"checker step {step}/{cfg.steps}: loss {loss.item():.4f}")
    final = out / "checker.safetensors"
    save_model(
        model.eval().cpu(),
        final,
        metadata={"train_config": asdict(cfg), "train_seconds": round(elapsed, 1), "samples": len(data)},
    )
    return final
