"""Training recipe of the embedded verifier (PRM head + ORM head) on rollout labels.

Like real PRMs, the verifier starts from the policy's own weights (it already reads the task) and
gets a fresh two-logit head: a soft binary cross-entropy against the Monte-Carlo step labels at
every step end, and against the sample's outcome at its last token.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ponder.errors import ConfigError
from ponder.training.checkpoint import cosine_lr, load_checkpoint, progress_bar, save_checkpoint
from ponder.training.model import ModelConfig, TinyTransformer, load_model, save_model
from ponder.training.prm_data import read_labels
from ponder.training.tokenizer import CharTokenizer
from ponder.training.train_policy import make_optimizer
from ponder.verifiers.embedded import encode_for_scoring


@dataclass
class VerifierTrainConfig:
    labels: str = "runs/verifier/labels.jsonl"
    init_from: str = "runs/policy/policy.safetensors"
    out_dir: str = "runs/verifier"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 50
    weight_decay: float = 0.05
    seed: int = 0
    ckpt_every: int = 100
    threads: int = 0


@dataclass
class EncodedRecord:
    ids: list[int]
    ends: list[int]
    step_labels: list[float]
    outcome: float


def encode_records(records: list[dict], tok: CharTokenizer) -> list[EncodedRecord]:
    out = []
    for r in records:
        ids, ends = encode_for_scoring(tok, r["prompt"], r["solution"])
        if r.get("step_labels") is None:  # an outcome-only sample: trains the ORM head alone
            out.append(EncodedRecord(ids, [], [], float(r["outcome"])))
            continue
        if len(ends) != len(r["step_labels"]) or not ends:
            continue  # a sample with no steps teaches nothing about steps
        out.append(EncodedRecord(ids, ends, [float(x) for x in r["step_labels"]], float(r["outcome"])))
    return out


def verifier_loss(model: TinyTransformer, batch: list[EncodedRecord], pad_id: int) -> torch.Tensor:
    width = max(len(r.ids) for r in batch)
    x = torch.full((len(batch), width), pad_id, dtype=torch.long)
    for i, r in enumerate(batch):
        x[i, : len(r.ids)] = torch.tensor(r.ids)
    logits = model(x)
    rows = torch.tensor([i for i, r in enumerate(batch) for _ in r.ends], dtype=torch.long)
    cols = torch.tensor([e for r in batch for e in r.ends], dtype=torch.long)
    step_targets = torch.tensor([v for r in batch for v in r.step_labels], dtype=torch.float32)
    prm = (
        F.binary_cross_entropy_with_logits(logits[rows, cols, 0], step_targets)
        if len(step_targets)
        else logits.new_zeros(())
    )
    last = torch.tensor([len(r.ids) - 1 for r in batch])
    orm = F.binary_cross_entropy_with_logits(
        logits[torch.arange(len(batch)), last, 1], torch.tensor([r.outcome for r in batch])
    )
    return prm + orm


def init_from_policy(policy_file: str | Path) -> TinyTransformer:
    policy, _ = load_model(policy_file)
    cfg = ModelConfig(**(asdict(policy.config) | {"head": "reward"}))
    model = TinyTransformer(cfg)
    state = {k: v for k, v in policy.state_dict().items() if not k.startswith("out.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("out.") for k in missing):
        raise ConfigError(
            f"policy weights do not fit the verifier: missing {missing}, unexpected {unexpected}"
        )
    return model


def train_verifier(cfg: VerifierTrainConfig, resume: bool = True, log=print) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    tok = CharTokenizer()
    records = read_labels(cfg.labels)
    if not records:
        raise ConfigError(f"no rollout labels in {cfg.labels}: run the rollout step first")
    data = encode_records(records, tok)
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    model = init_from_policy(cfg.init_from)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    step, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        log(f"verifier: resuming from step {step}")
    log(f"verifier: {model.num_params():,} parameters, {len(data)} labelled samples, {total} steps")
    model.train()
    with progress_bar("train verifier", total, completed=step) as (bar, task):
        while step < total:
            t0 = time.perf_counter()
            epoch, within = divmod(step, steps_per_epoch)
            order = list(range(len(data)))
            random.Random(f"verifier/{cfg.seed}/{epoch}").shuffle(order)
            batch = [data[i] for i in order[within * cfg.batch_size : (within + 1) * cfg.batch_size]]
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, total, cfg.lr, cfg.warmup)
            loss = verifier_loss(model, batch, tok.pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            bar.update(task, advance=1, info=f"loss {loss.item():.4f}")
            if step % cfg.ckpt_every == 0 or step == total:
                save_checkpoint(
                    ckpt_path,
                    model=model.state_dict(),
                    optimizer=opt.state_dict(),
                    step=step,
                    elapsed=elapsed,
                )
                log(f"verifier step {step}/{total}: loss {loss.item():.4f}")
    final = out / "verifier.safetensors"
    save_model(
        model,
        final,
        metadata={
            "train_config": asdict(cfg),
            "train_seconds": round(elapsed, 1),
            "labelled_samples": len(data),
        },
    )
    return final
