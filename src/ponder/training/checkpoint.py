"""Resumable training: checkpoints written atomically, a cosine schedule, a progress bar."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ponder.errors import ConfigError, WeightsError


def save_checkpoint(path: Path, **state: object) -> None:
    """Write to a temporary file, then rename: a kill mid-write never leaves a broken checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:
        raise WeightsError(f"checkpoint {path} cannot be read ({exc}); delete it to start over") from exc


def resume_fine_tune(
    ckpt_path: Path, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, what: str, log
) -> tuple[int, float]:
    """(step, elapsed) to continue a fine-tune from ``ckpt_path``, its model and optimizer restored;
    (0, 0.0) without one. A checkpoint written by another configuration (threads aside) is refused."""
    if not ckpt_path.exists():
        return 0, 0.0
    state = load_checkpoint(ckpt_path)
    if _without_threads(state.get("config", {})) != _without_threads(config):
        raise ConfigError(f"{ckpt_path} was written by another {what} configuration; use a new out_dir")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log(f"{what}: resuming from step {state['step']}")
    return state["step"], state["elapsed"]


def _without_threads(config: dict) -> dict:
    # Where and on how many threads a run computes does not change what it learns.
    return {k: v for k, v in config.items() if k not in ("threads", "device")}


def cosine_lr(step: int, total: int, peak: float, warmup: int, floor_frac: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0) -> Iterator[tuple[Progress, int]]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # Without a terminal (a background run, a log file) the bar is off and callers log lines.
    with Progress(*columns, refresh_per_second=2, disable=not Console().is_terminal) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield progress, task


def eta_line(label: str, done: int, total: int, elapsed: float) -> str:
    """A progress line for logs: ``label 300/5000 (6%), 2.0 min elapsed, ~31.3 min left``."""
    left = elapsed / max(done, 1) * (total - done)
    return (
        f"{label} {done}/{total} ({done / total:.0%}), "
        f"{elapsed / 60:.1f} min elapsed, ~{left / 60:.1f} min left"
    )
