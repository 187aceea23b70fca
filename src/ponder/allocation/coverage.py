"""Accuracy curves from a coverage model: smooth where a calibrated curve goes flat.

A difficulty bin's calibrated curve (the held-out accuracy of its choice at each grid budget) is
read on a small dev split, where every candidate saturates after 16-32 samples: the curve goes
flat, and an allocator that trusts it moves samples off questions that still gain from them.

Calibration's oracle samples carry more: for each dev question, ``k`` right answers of ``n``
samples. The model (as in Brown et al., "Large Language Monkeys", arXiv 2407.21787, where coverage
grows as a power law in the samples): a question's per-sample success rate ``p`` follows a
Beta(a, b) distribution over the questions, fitted to all dev questions by maximum marginal
likelihood (beta-binomial). A question's posterior is Beta(a + k, b + n - k), and its expected
coverage with ``N`` samples is

    E[1 - (1 - p)^N] = 1 - B(a + k, b + n - k + N) / B(a + k, b + n - k).

A bin's coverage curve is the mean over its dev questions: it keeps rising while the bin holds
questions that are rarely but not never solved, and stays flat on ones always or never solved.
Coverage bounds what a verifier can pick, so the bin's expected accuracy is ``eta * coverage``, with
``eta`` in [0, 1] fitted by least squares to the bin's calibrated curve.

Pure functions: no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ponder.errors import ConfigError

Counts = Sequence[tuple[int, int]]  # (right, samples) per question


def _lbeta(x: float, y: float) -> float:
    return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)


def _check_counts(counts: Counts) -> None:
    for k, n in counts:
        if not (isinstance(k, int) and isinstance(n, int)) or n < 1 or not 0 <= k <= n:
            raise ConfigError(
                f"oracle counts must be (right, samples) with 0 <= right <= samples >= 1, got {(k, n)}"
            )


def log_likelihood(counts: Counts, a: float, b: float) -> float:
    """Beta-binomial log marginal likelihood of ``counts`` (without the binomial coefficients,
    which do not depend on ``a`` and ``b``)."""
    base = _lbeta(a, b)
    return sum(_lbeta(a + k, b + n - k) - base for k, n in counts)


def fit_beta_prior(counts: Counts, lo: float = 1e-2, hi: float = 1e2) -> tuple[float, float]:
    """Maximum-likelihood Beta(a, b) over per-question success rates, on a log grid in [lo, hi]
    refined twice around the best point (the likelihood is smooth; bounds keep a split whose
    questions are all solved, or all unsolved, from running off to 0)."""
    _check_counts(counts)
    if not counts:
        raise ConfigError("fitting a coverage model needs at least one question's oracle counts")
    log_lo, log_hi = math.log(lo), math.log(hi)
    centre, half = ((log_lo + log_hi) / 2,) * 2, (log_hi - log_lo) / 2
    best = (0.0, 0.0)
    for _ in range(3):
        steps = 24
        grid = [
            (
                min(log_hi, max(log_lo, centre[0] - half + 2 * half * i / steps)),
                min(log_hi, max(log_lo, centre[1] - half + 2 * half * j / steps)),
            )
            for i in range(steps + 1)
            for j in range(steps + 1)
        ]
        best = max(grid, key=lambda g: log_likelihood(counts, math.exp(g[0]), math.exp(g[1])))
        centre, half = best, half * 2 / steps * 2
    return math.exp(best[0]), math.exp(best[1])


def expected_coverage(k: int, n: int, samples: float, a: float, b: float) -> float:
    """P(at least one right answer in ``samples`` draws) for a question with ``k`` of ``n`` right,
    under the Beta(a, b) prior."""
    if samples <= 0:
        return 0.0
    pa, pb = a + k, b + n - k
    return 1.0 - math.exp(_lbeta(pa, pb + samples) - _lbeta(pa, pb))


def coverage_curve(
    counts: Counts, budgets: Sequence[float], prior: tuple[float, float]
) -> list[tuple[float, float]]:
    """(budget, mean expected coverage over the questions) at each budget."""
    _check_counts(counts)
    if not counts:
        raise ConfigError("a coverage curve needs at least one question's oracle counts")
    a, b = prior
    return [
        (float(n_samples), sum(expected_coverage(k, n, n_samples, a, b) for k, n in counts) / len(counts))
        for n_samples in budgets
    ]


def scaled_coverage_curve(
    calibrated: Sequence[tuple[float, float]], counts: Counts, prior: tuple[float, float]
) -> list[tuple[float, float]]:
    """The bin's expected accuracy at the calibrated curve's budgets: ``eta * coverage``, with
    ``eta`` the least-squares scale of coverage onto the calibrated accuracies, in [0, 1]."""
    if not calibrated:
        return []
    cov = coverage_curve(counts, [b for b, _ in calibrated], prior)
    dot = sum(acc * c for (_, acc), (_, c) in zip(calibrated, cov))
    norm = sum(c * c for _, c in cov)
    eta = 0.0 if norm == 0 else min(1.0, max(0.0, dot / norm))
    return [(b, eta * c) for b, c in cov]
