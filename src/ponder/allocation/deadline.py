"""Deadlines: budgets in wall-clock seconds per question, for real-time use.

:func:`measure_throughput` times a few generate() and score() calls of different shapes on this
machine and fits the :class:`~ponder.strategies.budget.Throughput` model a deadline budget predicts
its calls from (per call, per decoding step, per token). Under ``Budget(seconds=d,
throughput=...)`` every strategy sizes its next batch of samples or search round so that it is
predicted to end before the deadline, and stops (answering with what it has) when not even the
smallest one is; the prediction is corrected as the run's calls are timed.

:func:`deadline_table` reports, per strategy and deadline, how often the deadline was met and the
accuracy reached.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ponder.backends.base import Generator, SamplingParams
from ponder.strategies.budget import Throughput
from ponder.verifiers.base import Verifier

CALIBRATION_PROMPT = "Q:8261+3403-7122+5005\n"


def _fit_nonnegative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (drop a negative one and refit: few columns)."""
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            return coef
        active.pop(int(np.argmin(sol)))
    return coef


def measure_throughput(
    generator: Generator,
    verifier: Verifier | None = None,
    prompt: str = CALIBRATION_PROMPT,
    repeats: int = 2,
    seed: int = 0,
) -> Throughput:
    """Fit a throughput model from timed calls (about a second on the embedded models)."""
    rows, times = [], []
    generator.generate([prompt], SamplingParams(n=1, max_new_tokens=4, seed=seed))  # warm-up
    texts: list[str] = []
    for r in range(repeats):
        for n, max_new in ((1, 16), (1, 64), (8, 32), (32, 32), (16, 64)):
            start = time.perf_counter()
            groups = generator.generate([prompt], SamplingParams(n=n, max_new_tokens=max_new, seed=seed + r))
            took = time.perf_counter() - start
            completions = groups[0]
            steps = max(c.completion_tokens for c in completions)
            tokens = completions[0].prompt_tokens + sum(c.completion_tokens for c in completions)
            rows.append([1.0, float(steps), float(tokens)])
            times.append(took)
            texts.extend(c.text for c in completions)
    call_s, step_s, token_s = _fit_nonnegative(np.array(rows), np.array(times))
    v_call = v_token = 0.0
    if verifier is not None and texts:
        v_rows, v_times = [], []
        verifier.score([prompt], texts[:1])  # warm-up
        for r in range(repeats):
            for k in (1, 8, 32):
                batch = texts[r * 7 : r * 7 + k] or texts[:k]
                start = time.perf_counter()
                scores = verifier.score([prompt] * len(batch), batch)
                v_times.append(time.perf_counter() - start)
                v_rows.append([1.0, float(sum(s.tokens for s in scores))])
        v_call, v_token = _fit_nonnegative(np.array(v_rows), np.array(v_times))
    return Throughput(
        policy_token_s=float(token_s),
        verifier_token_s=float(v_token),
        policy_step_s=float(step_s),
        policy_call_s=float(call_s),
        verifier_call_s=float(v_call),
    )


@lru_cache(maxsize=4)
def cached_throughput(generator: Generator, verifier: Verifier | None) -> Throughput:
    """:func:`measure_throughput`, once per process and pair of models."""
    return measure_throughput(generator, verifier)


@dataclass(frozen=True)
class DeadlineRow:
    strategy: str
    deadline: float
    n: int
    met: float  # share of questions answered within the deadline
    accuracy: float
    mean_wall: float
    p95_wall: float


def deadline_table(results: list[dict]) -> list[DeadlineRow]:
    """Per strategy and deadline (the results' budgets, in seconds): deadlines met, accuracy,
    wall time (mean and 95th percentile)."""
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["strategy"], float(r["budget"]))].append(r)
    rows = []
    for (strategy, deadline), rs in sorted(groups.items()):
        walls = sorted(float(r["wall_s"]) for r in rs)
        rows.append(
            DeadlineRow(
                strategy=strategy,
                deadline=deadline,
                n=len(rs),
                met=sum(w <= deadline for w in walls) / len(walls),
                accuracy=sum(bool(r["correct"]) for r in rs) / len(rs),
                mean_wall=sum(walls) / len(walls),
                p95_wall=walls[min(len(walls) - 1, int(0.95 * len(walls)))],
            )
        )
    return rows
