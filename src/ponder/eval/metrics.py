"""Accuracy metrics on the built-in task: greedy accuracy, pass@k (unbiased), per level."""

from __future__ import annotations

from collections import defaultdict
from math import comb

from ponder.backends.base import Generator, SamplingParams
from ponder.tasks.answers import is_correct
from ponder.tasks.arithmetic import Problem


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def per_level(problems: list[Problem], values: list[float]) -> dict[int, float]:
    """Mean of ``values`` for each problem level."""
    sums: dict[int, list[float]] = defaultdict(list)
    for p, v in zip(problems, values):
        sums[p.level].append(v)
    return {lv: sum(vs) / len(vs) for lv, vs in sorted(sums.items())}


def greedy_correct(generator: Generator, problems: list[Problem], batch_size: int = 256) -> list[bool]:
    """Is each problem's greedy (temperature 0) answer right?"""
    out: list[bool] = []
    params = SamplingParams(n=1, temperature=0.0)
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        completions = generator.generate([p.prompt for p in chunk], params)
        out.extend(is_correct(p, c[0].text) for p, c in zip(chunk, completions))
    return out


def sample_correct_counts(
    generator: Generator,
    problems: list[Problem],
    n: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    prompts_per_batch: int = 8,
) -> list[int]:
    """How many of ``n`` sampled answers are right, per problem."""
    counts: list[int] = []
    for i in range(0, len(problems), prompts_per_batch):
        chunk = problems[i : i + prompts_per_batch]
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, seed=seed + i)
        groups = generator.generate([p.prompt for p in chunk], params)
        counts.extend(sum(is_correct(p, c.text) for c in g) for p, g in zip(chunk, groups))
    return counts
