"""Accuracy metrics on the built-in task: greedy accuracy, pass@k (unbiased), per level."""

from __future__ import annotations

import random
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


# --- statistics for evaluation runs -----------------------------------------------------------------

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    # At p = 0 or 1 the bound equals p exactly; rounding must not put p outside its own interval.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def accuracy_ci(per_seed: list[list[bool]]) -> tuple[float, float, float]:
    """Mean accuracy and a 95% interval: over seeds (Student's t on the per-seed accuracies) when
    there are two or more, else a Wilson interval over the problems of the one seed."""
    seeds = [s for s in per_seed if s]
    if not seeds:
        return 0.0, 0.0, 0.0
    if len(seeds) == 1:
        c, n = sum(seeds[0]), len(seeds[0])
        lo, hi = wilson_interval(c, n)
        return c / n, lo, hi
    accs = [sum(s) / len(s) for s in seeds]
    mean = sum(accs) / len(accs)
    var = sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)
    half = t975(len(accs) - 1) * (var / len(accs)) ** 0.5
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    if len(x) != len(y) or len(x) < 2:
        return 0.0
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx > 0 and vy > 0 else 0.0


def compute_to_match(
    baseline: list[tuple[float, float]], contender: list[tuple[float, float]]
) -> dict[str, float | None]:
    """How much less compute ``contender`` needs to reach ``baseline``'s best accuracy.

    Both are (compute, accuracy) points, e.g. one per budget. The target is the baseline's best
    accuracy, reached at its cheapest point with that accuracy; the contender's compute is that of
    its cheapest point at or above the target. ``ratio`` is baseline compute / contender compute
    (None when the contender never reaches the target on the points given).
    """
    if not baseline:
        return {"target": None, "baseline_compute": None, "contender_compute": None, "ratio": None}
    target = max(a for _, a in baseline)
    base_c = min(c for c, a in baseline if a >= target)
    reaching = [c for c, a in contender if a >= target]
    cont_c = min(reaching) if reaching else None
    ratio = base_c / cont_c if cont_c else None
    return {"target": target, "baseline_compute": base_c, "contender_compute": cont_c, "ratio": ratio}


def paired_difference(
    a: dict[str, bool], b: dict[str, bool], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, int]:
    """Accuracy of ``a`` minus that of ``b`` on the results both have (keys: problem and seed), with
    a 95% paired bootstrap interval over those results: (difference, lo, hi, n). Pairing removes
    the problems' own difficulty from the noise, so two strategies run on the same questions are
    compared far more tightly than their two accuracies' intervals suggest."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return 0.0, 0.0, 0.0, 0
    diffs = [int(a[k]) - int(b[k]) for k in keys]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    lo = means[int(0.025 * (resamples - 1))]
    hi = means[int(0.975 * (resamples - 1))]
    return sum(diffs) / n, lo, hi, n
