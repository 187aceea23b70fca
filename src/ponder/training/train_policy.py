"""Training recipe of the embedded policy: next-token loss on reference solutions.

Problems are drawn fresh from the train split every step (the space is far larger than what a
run sees), so the model cannot memorise and the dev/test splits stay unseen. Data for step ``s``
depends only on ``(seed, s)``, which makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ponder.errors import ConfigError
from ponder.tasks.arithmetic import (
    LEVELS,
    Problem,
    corrupt_solution,
    draw_problem,
    revision_prompt,
    shuffled_solution,
    split_of,
)
from ponder.training.checkpoint import cosine_lr, eta_line, load_checkpoint, progress_bar, save_checkpoint
from ponder.training.model import ModelConfig, TinyTransformer, save_model
from ponder.training.tokenizer import CharTokenizer


@dataclass
class PolicyTrainConfig:
    out_dir: str = "runs/policy"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.05
    seed: int = 0
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    max_seq_len: int = 512
    # Sampling weight of each level in the training mix (levels 1..5).
    level_weights: tuple[float, ...] = field(default=(1.0, 1.0, 1.0, 1.0, 1.0))
    # Every ``revision_every``-th batch shows 1..max_attempts earlier wrong attempts before each
    # reference solution, so the policy learns to revise (see ``revision_prompt``). Whole batches,
    # not mixed ones, so the long revision prompts do not pad every batch. 0 (the shipped policy)
    # disables it: with 5, a 3000-step run learned far more slowly (dev L1 0.15 at step 1800).
    revision_every: int = 0
    max_attempts: int = 2
    # Share of training solutions that apply the operations in a random order (see
    # ``solution_in_order``): 0 (the shipped policy) always follows the question's order.
    order_shuffle: float = 0.0
    eval_every: int = 100
    eval_from: int = 1200  # before this step, evaluate only every 5 x eval_every
    # Early stop at the first evaluation where dev greedy accuracy on ``stop_level`` reaches
    # ``stop_accuracy``: trained to convergence the policy solves nearly every chain, which would
    # leave test-time compute nothing to do. Stopping once the easiest level is reliable keeps the
    # long chains hard. None trains all ``steps``.
    stop_level: int = 1
    # 0.95 on the dev split leaves room for its noise: the test-split target is 0.85.
    stop_accuracy: float | None = 0.95
    # ... or, whichever comes first, once the hardest level gets this good (it must stay hard).
    cap_level: int = 5
    cap_accuracy: float | None = 0.3
    ckpt_every: int = 100
    eval_per_level: int = 100
    threads: int = 0  # 0: torch's default
    # Stop after this step while keeping the learning-rate schedule of ``steps`` (so a second
    # model can see exactly the data and schedule another run saw before it stopped early).
    stop_step: int | None = None
    # Mixed precision: bf16 autocast for the forward pass (about 1.6x faster on CPUs with
    # AVX512-BF16). Off for the shipped policy, whose recipe predates it.
    bf16: bool = False
    # Split each batch, sorted by length, into this many micro-batches with their own padding
    # and accumulate gradients: the same gradient as one batch, with far fewer padded tokens.
    length_buckets: int = 1
    # Where the steps run ("cpu", "cuda", "cuda:1", ...). The data stream and the schedule do not
    # depend on it, so a run may resume on another device; dev evaluations run on the CPU.
    device: str = "cpu"

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            vocab_size=CharTokenizer().vocab_size,
            d_model=self.d_model,
            n_layer=self.n_layer,
            n_head=self.n_head,
            max_seq_len=self.max_seq_len,
            head="lm",
        )


def draw_train_problems(rng: random.Random, n: int, level_weights: tuple[float, ...]) -> list[Problem]:
    levels = sorted(LEVELS)
    if len(level_weights) != len(levels):
        raise ConfigError(f"level_weights needs {len(levels)} entries, got {len(level_weights)}")
    out: list[Problem] = []
    while len(out) < n:
        level = rng.choices(levels, weights=level_weights)[0]
        problem = draw_problem(rng, level)
        if split_of(problem.question) == "train":
            out.append(problem)
    return out


def training_example(
    problem: Problem, rng: random.Random, cfg: PolicyTrainConfig, revision: bool
) -> tuple[str, str]:
    """(prompt, target) for one problem: plain, or after earlier wrong attempts."""
    if revision:
        attempts = [corrupt_solution(problem, rng) for _ in range(rng.randint(1, cfg.max_attempts))]
        return revision_prompt(problem.prompt, attempts), problem.solution
    # The draw happens only when shuffling is on, so the default recipe's data stream is unchanged.
    if cfg.order_shuffle > 0 and rng.random() < cfg.order_shuffle:
        return problem.prompt, shuffled_solution(problem, rng)
    return problem.prompt, problem.solution


def encode_batch(
    tok: CharTokenizer, prompts: list[str], targets: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``[bos] prompt target [eos]``; the loss covers target and eos only."""
    seqs, starts = [], []
    for prompt, target in zip(prompts, targets):
        p = tok.encode(prompt, bos=True)
        seqs.append(p + tok.encode(target) + [tok.eos_id])
        starts.append(len(p))
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width - 1), tok.pad_id, dtype=torch.long)
    y = torch.full((len(seqs), width - 1), -100, dtype=torch.long)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        t = torch.tensor(s)
        x[i, : len(s) - 1] = t[:-1]
        y[i, start - 1 : len(s) - 1] = t[start:]
    return x, y, torch.tensor(starts)


def lm_loss(model: TinyTransformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


def accumulate_lm_loss(
    model: TinyTransformer,
    tok: CharTokenizer,
    pairs: list[tuple[str, str]],
    buckets: int = 1,
    bf16: bool = False,
) -> float:
    """Backpropagate the mean next-token loss over all target tokens of ``pairs``; returns it.

    With ``buckets`` > 1 the pairs are sorted by length and split into that many micro-batches,
    each padded only to its own longest sequence; every micro-batch's summed loss is divided by
    the whole batch's target-token count, so the accumulated gradient equals one big batch's.
    """
    order = sorted(pairs, key=lambda p: len(p[0]) + len(p[1]))
    size = -(-len(order) // max(1, buckets))
    parts = [order[i : i + size] for i in range(0, len(order), size)]
    encoded = [encode_batch(tok, [a for a, _ in part], [b for _, b in part]) for part in parts]
    n_target = sum(int((y != -100).sum()) for _, y, _ in encoded)
    device = next(model.parameters()).device
    total = 0.0
    for x, y, _ in encoded:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = (
            F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                y.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            / n_target
        )
        loss.backward()
        total += loss.item()
    return total


def training_device(name: str) -> torch.device:
    """The torch device called ``name``, refused with a clear error when this machine lacks it."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {name!r} (try 'cpu' or 'cuda')") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: training runs on 'cpu' or 'cuda'")
    return device


def make_optimizer(model: TinyTransformer, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "emb" in n]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def stop_reason(acc: dict, cfg: PolicyTrainConfig) -> str | None:
    """Why training stops after an evaluation with dev accuracies ``acc`` (None: go on)."""
    for level, target in ((cfg.stop_level, cfg.stop_accuracy), (cfg.cap_level, cfg.cap_accuracy)):
        got = acc.get(level, acc.get(str(level), 0.0))  # checkpoints store levels as strings
        if target is not None and got >= target:
            return f"dev greedy L{level} {got:.2f} >= {target}"
    return None


def _target_met(history: list[dict], cfg: PolicyTrainConfig) -> bool:
    return bool(history) and stop_reason(history[-1]["dev_greedy"], cfg) is not None


def train_policy(
    cfg: PolicyTrainConfig, resume: bool = True, log=print, max_steps_this_run: int | None = None
) -> Path | None:
    """Train (or resume) the policy; returns the final safetensors file, or None when
    ``max_steps_this_run`` stopped it early (after a checkpoint, so a rerun resumes)."""
    from ponder.backends.embedded import EmbeddedGenerator
    from ponder.eval.metrics import greedy_correct, per_level
    from ponder.tasks.arithmetic import make_split

    if cfg.stop_step is not None and cfg.stop_step < 1:
        raise ConfigError(f"stop_step must be >= 1, got {cfg.stop_step}")
    if cfg.length_buckets < 1:
        raise ConfigError(f"length_buckets must be >= 1, got {cfg.length_buckets}")
    if not 0.0 <= cfg.order_shuffle <= 1.0:
        raise ConfigError(f"order_shuffle must be within [0, 1], got {cfg.order_shuffle}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = training_device(cfg.device)
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    tok = CharTokenizer()
    model = TinyTransformer(cfg.model_config()).to(device)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, elapsed, history, stopped_early = 0, 0.0, [], False
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        # Where the run lives and when it stops may change between runs; what it learns may not.
        free = {
            "out_dir",
            "stop_level",
            "stop_accuracy",
            "cap_level",
            "cap_accuracy",
            "eval_every",
            "eval_from",
            "eval_per_level",
            "threads",
            "stop_step",
            "length_buckets",
            "device",
        }
        # A key the checkpoint lacks predates that option: the run had its default behaviour.
        saved = asdict(PolicyTrainConfig()) | state["config"]
        saved["level_weights"] = tuple(saved["level_weights"])
        current = asdict(cfg) | {"level_weights": tuple(cfg.level_weights)}
        if {k: v for k, v in saved.items() if k not in free} != {
            k: v for k, v in current.items() if k not in free
        }:
            raise ConfigError(
                f"checkpoint {ckpt_path} was written with a different training config; "
                "use another --out-dir or --no-resume"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed, history = state["step"], state["elapsed"], state["history"]
        # A stricter stop rule than the one that stopped the run lets it train on.
        stopped_early = state.get("stopped_early", False) and _target_met(state["history"], cfg)
        log(f"resuming from step {step} ({elapsed / 60:.1f} min done)")
    log(f"policy: {model.num_params():,} parameters, {cfg.steps} steps of {cfg.batch_size}")
    dev = make_split("dev", n_per_level=cfg.eval_per_level, seed=cfg.seed)

    def evaluate() -> dict[int, float]:
        # The embedded generator decodes on the CPU; a copy leaves the training model in place.
        judged = model if device.type == "cpu" else copy.deepcopy(model).cpu()
        judged.eval()
        acc = per_level(dev, [float(c) for c in greedy_correct(EmbeddedGenerator(judged, tok), dev)])
        model.train()
        return acc

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            model=model.state_dict(),
            optimizer=opt.state_dict(),
            step=step,
            elapsed=elapsed,
            history=history,
            stopped_early=stopped_early,
            config=asdict(cfg),
        )

    model.train()
    end = cfg.steps if cfg.stop_step is None else min(cfg.steps, cfg.stop_step)
    stop_at = end if max_steps_this_run is None else min(end, step + max_steps_this_run)
    with progress_bar("train policy", end, completed=step) as (bar, task):
        while step < stop_at and not stopped_early:
            t0 = time.perf_counter()
            rng = random.Random(f"policy/{cfg.seed}/{step}")
            batch = draw_train_problems(rng, cfg.batch_size, tuple(cfg.level_weights))
            revision = cfg.revision_every > 0 and step % cfg.revision_every == cfg.revision_every - 1
            pairs = [training_example(p, rng, cfg, revision) for p in batch]
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
            opt.zero_grad(set_to_none=True)
            loss = accumulate_lm_loss(model, tok, pairs, cfg.length_buckets, cfg.bf16)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            bar.update(task, advance=1, info=f"loss {loss:.4f}")
            every = cfg.eval_every if step >= cfg.eval_from else 5 * cfg.eval_every
            if step % every == 0 or step == end:
                acc = evaluate()
                history.append({"step": step, "loss": loss, "dev_greedy": acc, "elapsed": elapsed})
                log(
                    f"step {step}: loss {loss:.4f} dev greedy "
                    + " ".join(f"L{k}={v:.2f}" for k, v in acc.items())
                )
                reason = stop_reason(acc, cfg)
                if reason is not None:
                    stopped_early = True
                    log(f"early stop at step {step}: {reason}")
            if step % cfg.ckpt_every == 0 or step == end or stopped_early:
                checkpoint()
            if step % 250 == 0 and bar.disable:
                log(eta_line("policy step", step, end, elapsed) + f", loss {loss:.4f}")
    if step < end and not stopped_early:
        checkpoint()
        log(f"stopped at step {step} of {cfg.steps}; rerun to resume")
        return None
    final = out / "policy.safetensors"
    save_model(
        model.cpu(),
        final,
        metadata={
            "train_config": asdict(cfg),
            "train_seconds": round(elapsed, 1),
            "final_step": step,
            "stopped_early": stopped_early,
            "history": history,
        },
    )
    return final
