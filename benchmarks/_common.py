"""Helpers shared by the benchmark scripts (not a benchmark itself).

Imported by ``bench_generation.py`` and ``bench_int8.py`` when they are run as scripts
(``python benchmarks/bench_*.py``), which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.tasks.arithmetic import make_split
from ponder.training.model import ModelConfig, TinyTransformer, load_model
from ponder.training.tokenizer import CharTokenizer
from ponder.training.weights import policy_path

# The policy recipe's architecture (train_policy.PolicyTrainConfig), used when no weights exist.
RANDOM_INIT_SHAPE = {"d_model": 128, "n_layer": 4, "n_head": 4}


@dataclass
class PolicySource:
    """Which weights a benchmark ran on."""

    model: TinyTransformer
    description: str
    random_init: bool
    weights_path: str | None
    fallback_note: str | None = None  # set when trained weights were asked for but missing


def load_policy(weights: str | None, random_init: bool, seed: int = 0) -> PolicySource:
    """The policy at ``weights`` (default: the shipped one); a random-init model when asked for or
    when that file does not exist (said so in ``fallback_note``)."""
    note = None
    if not random_init:
        path = Path(weights) if weights else policy_path()
        if path.is_file():
            model, _ = load_model(path)
            return PolicySource(model.eval(), f"weights {path}", False, str(path))
        note = (
            f"weight file {path} does not exist: falling back to --random-init "
            "(numbers below are for an untrained model of the policy's shape)"
        )
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=CharTokenizer().vocab_size, head="lm", **RANDOM_INIT_SHAPE)
    model = TinyTransformer(config).eval()
    shape = ", ".join(f"{k}={v}" for k, v in RANDOM_INIT_SHAPE.items())
    return PolicySource(model, f"random init ({shape}, seed {seed})", True, None, note)


class FixedLengthTokenizer(CharTokenizer):
    """A tokenizer whose end-of-sequence id matches no token, so every row of a ``generate`` call
    runs for exactly ``max_new_tokens`` (a sampled ``<eos>`` is emitted like any other token).

    Timing only: the generator has no option to ignore EOS, and this keeps the 1-sample and
    64-sample runs (and fp32 vs int8) at identical lengths. Never use it for accuracy."""

    def __init__(self) -> None:
        super().__init__()
        self.eos_id = -1


def make_generator(model: TinyTransformer, fixed_length: bool) -> EmbeddedGenerator:
    return EmbeddedGenerator(model, FixedLengthTokenizer() if fixed_length else None)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def level_prompts(level: int, count: int, seed: int = 0) -> list[str]:
    """``count`` distinct test-split prompts of one level."""
    return [p.prompt for p in make_split("test", levels=[level], n_per_level=count, seed=seed)]


def prompt_tokens(prompt: str) -> int:
    """Tokens the generator feeds for ``prompt`` (BOS included)."""
    return len(CharTokenizer().encode(prompt, bos=True))


def kv_cache_bytes(config: ModelConfig, rows: int, length: int, bytes_per_value: int = 4) -> int:
    """Keys plus values of a :class:`~ponder.training.model.KVCache` of ``rows`` x ``length``."""
    return 2 * config.n_layer * rows * config.n_head * length * config.head_dim * bytes_per_value


@dataclass
class Timing:
    """Repeated timings of one ``generate`` call shape."""

    label: str
    n_prompts: int
    n: int
    walls: list[float] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.n_prompts * self.n

    @property
    def median_wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def tokens_per_s(self) -> float:
        """Median over repeats of completion tokens / wall time."""
        return statistics.median(t / w for t, w in zip(self.completion_tokens, self.walls))

    @property
    def mean_tokens_per_row(self) -> float:
        return statistics.mean(self.completion_tokens) / self.rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "prompts": self.n_prompts,
            "n": self.n,
            "rows": self.rows,
            "walls_s": self.walls,
            "completion_tokens": self.completion_tokens,
            "median_wall_s": self.median_wall,
            "tokens_per_s": self.tokens_per_s,
            "mean_completion_tokens_per_row": self.mean_tokens_per_row,
        }


def time_generation(
    generator: EmbeddedGenerator,
    label: str,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    warmup: int,
    repeats: int,
    seed: int,
) -> Timing:
    """Wall time of ``generator.generate(prompts, n=n)`` after ``warmup`` untimed calls.

    Repeat ``i`` uses sampling seed ``seed + i``, so two models timed with the same arguments see
    the same random streams."""
    timing = Timing(label, len(prompts), n)

    def params(s: int) -> SamplingParams:
        return SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=s)

    for i in range(warmup):
        generator.generate(prompts, params(seed + 10_000 + i))
    for i in range(repeats):
        gc.collect()
        start = time.perf_counter()
        generator.generate(prompts, params(seed + i))
        timing.walls.append(time.perf_counter() - start)
        timing.completion_tokens.append(generator.last_usage.completion_tokens)
    return timing


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "quantized_engine": torch.backends.quantized.engine,
    }


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def write_json(path: str, payload: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}")
