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
from ponder.verifiers.embedded import encode_for_scoring


@dataclass
class VerifierTrainConfig:
    labels: str = "runs/verifier/labels.jsonl"
    init_from: str = "runs/policy/policy.safetensors"
    out_dir: str = "runs/verifier"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 0.05
    seed: int = 0
    ckpt_every: int = 100
    threads: int = 0
    # Fresh transformer blocks stacked on the policy's trunk. At a result digit the trunk's last
    # layer holds the policy's own prediction for that digit; only layers above it can compare
    # the prediction with the digit actually written, which is what checking a step needs.
    extra_layers: int = 2
    # Feed the fresh blocks the policy's surprise at each token (see ModelConfig.surprise_after).
    surprise_features: bool = True
    # Learning rate of the pretrained trunk relative to the fresh blocks and heads; 0 freezes it
    # (needed for surprise features to keep meaning the policy's own probabilities).
    trunk_lr_scale: float = 0.0
    # Learning rate of the direct feature-to-reward path relative to the rest: it is a handful
    # of weights that must grow from near zero to order one, which Adam's step size makes slow.
    skip_lr_scale: float = 20.0


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


def init_from_policy(
    policy_file: str | Path, extra_layers: int = 0, surprise_features: bool = False
) -> TinyTransformer:
    """A reward model whose first blocks and embedding are the policy's; the rest is fresh."""
    if extra_layers < 0:
        raise ConfigError(f"extra_layers must be >= 0, got {extra_layers}")
    if surprise_features and not extra_layers:
        raise ConfigError("surprise features need extra_layers > 0 to feed them into")
    policy, _ = load_model(policy_file)
    trunk_layers = policy.config.n_layer
    cfg = ModelConfig(
        **(
            asdict(policy.config)
            | {
                "head": "reward",
                "n_layer": trunk_layers + extra_layers,
                "surprise_after": trunk_layers if surprise_features else 0,
            }
        )
    )
    model = TinyTransformer(cfg)
    state = {k: v for k, v in policy.state_dict().items() if not k.startswith("out.")}
    if extra_layers:
        # The policy's final norm belongs after its last block: it reads the trunk out for the
        # surprise features, and the norm over the fresh blocks starts fresh.
        norm = {k.replace("ln_f.", "trunk_norm."): state.pop(k) for k in list(state) if k.startswith("ln_f.")}
        if surprise_features:
            state |= norm
    missing, unexpected = model.load_state_dict(state, strict=False)
    trunk = [k for k in missing if k.startswith("blocks.") and int(k.split(".")[1]) < trunk_layers]
    if unexpected or trunk or "tok_emb.weight" in missing:
        raise ConfigError(
            f"policy weights do not fit the verifier: missing {missing}, unexpected {unexpected}"
        )
    return model


def trunk_and_fresh_params(model: TinyTransformer, trunk_layers: int) -> tuple[list, list]:
    trunk, fresh = [], []
    for name, p in model.named_parameters():
        is_trunk = name.startswith(("tok_emb.", "trunk_norm.")) or (
            name.startswith("blocks.") and int(name.split(".")[1]) < trunk_layers
        )
        (trunk if is_trunk else fresh).append((name, p))
    return trunk, fresh


def make_verifier_optimizer(
    model: TinyTransformer, trunk_layers: int, cfg: VerifierTrainConfig
) -> torch.optim.Optimizer:
    groups = []
    trunk, fresh = trunk_and_fresh_params(model, trunk_layers)
    if cfg.trunk_lr_scale == 0:
        for _, p in trunk:  # frozen: no gradients through the trunk at all (and faster steps)
            p.requires_grad_(False)
        trunk = []
    skip = [(n, p) for n, p in fresh if n.startswith("surprise_out.")]
    fresh = [(n, p) for n, p in fresh if not n.startswith("surprise_out.")]
    for params, scale in zip((trunk, fresh, skip), (cfg.trunk_lr_scale, 1.0, cfg.skip_lr_scale)):
        decay = [p for n, p in params if p.dim() >= 2 and "emb" not in n]
        no_decay = [p for n, p in params if p.dim() < 2 or "emb" in n]
        groups.append({"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": scale})
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": scale})
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.98))


def train_verifier(cfg: VerifierTrainConfig, resume: bool = True, log=print) -> Path:
    if cfg.surprise_features and cfg.trunk_lr_scale > 0:
        raise ConfigError(
            "surprise features read the policy's own probabilities, so they need a frozen trunk "
            "(trunk_lr_scale 0); turn them off to fine-tune the trunk"
        )
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
    model = init_from_policy(cfg.init_from, cfg.extra_layers, cfg.surprise_features)
    opt = make_verifier_optimizer(model, model.config.n_layer - cfg.extra_layers, cfg)
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
                group["lr"] = cosine_lr(step, total, cfg.lr, cfg.warmup) * group["lr_scale"]
            loss = verifier_loss(model, batch, tok.pad_id)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
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
