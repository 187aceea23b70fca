"""One total budget for a batch of questions: per-question budgets that maximise expected accuracy.

Each question has a curve of options (cost, expected accuracy), e.g. the calibrated accuracy of
its predicted difficulty bin at each grid budget. :func:`allocate` picks one option per question
(or none) with total cost never above the total:

0. Every question is answered: when the total can pay for every question's cheapest option, each
   gets it first, and the rest is allocated on top (``answer_all``; otherwise some get nothing).
1. Per question, the upper concave hull of its options, starting from where it stands (its
   cheapest option after step 0, else "nothing": cost 0, accuracy 0). Moving up a hull segment
   buys accuracy at a falling rate per unit compute.
2. Greedy over all questions: always take the segment with the highest marginal gain per unit
   compute that still fits (a heap). For concave curves this is the classic optimal rule of the
   fractional multiple-choice knapsack; with whole options it is within one option per question.
3. Spend what is left: repeatedly take the single upgrade (any option, hull or not) with the best
   gain per unit compute that fits; upgrades of no expected gain come last (they cost nothing in
   expectation, and calibrated curves are noisy), ones that lose expected accuracy never.
4. Never worse than uniform: the best uniform allocation (every question the same option index
   that all can pay) is computed too, and the better of the two (in expected accuracy) returned.

The function is pure: no model, no I/O.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from fractions import Fraction

from ponder.errors import ConfigError


@dataclass(frozen=True)
class Option:
    cost: float
    value: float  # expected accuracy (or any gain to maximise)


def _check(curves: list[list[Option]], total: float) -> None:
    if not isinstance(total, int | float) or isinstance(total, bool) or not math.isfinite(total) or total < 0:
        raise ConfigError(f"the total budget must be a finite number >= 0, got {total!r}")
    for i, curve in enumerate(curves):
        for o in curve:
            if not (math.isfinite(o.cost) and o.cost >= 0 and math.isfinite(o.value)):
                raise ConfigError(f"question {i}: option {o} needs a finite cost >= 0 and a finite value")


def _hull(curve: list[Option], origin: Option) -> list[int]:
    """Indices of the options on the upper concave hull from ``origin`` (the question's current
    option, or "nothing" at (0, 0)), by increasing cost."""
    order = sorted(range(len(curve)), key=lambda i: (curve[i].cost, -curve[i].value))
    pareto: list[int] = []
    best = origin.value
    for i in order:
        # Anything else costs as much or more for no more (or costs less than where we are).
        if curve[i].cost >= origin.cost and curve[i].value > best:
            pareto.append(i)
            best = curve[i].value
    hull: list[int] = []
    for i in pareto:
        c, v = curve[i].cost, curve[i].value
        while hull:
            prev = curve[hull[-2]] if len(hull) >= 2 else origin
            mid = curve[hull[-1]]
            # Drop the middle point when it lies on or below the chord from prev to this one.
            if (mid.value - prev.value) * (c - prev.cost) <= (v - prev.value) * (mid.cost - prev.cost):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def expected_value(curves: list[list[Option]], choice: list[int | None]) -> float:
    return sum(curves[q][i].value for q, i in enumerate(choice) if i is not None)


def total_cost(curves: list[list[Option]], choice: list[int | None]) -> float:
    return float(
        sum((Fraction(curves[q][i].cost) for q, i in enumerate(choice) if i is not None), Fraction(0))
    )


def _greedy(curves: list[list[Option]], total: float, start: list[int | None]) -> list[int | None]:
    """Steps 1-3 from ``start`` (an option per question, or None). Costs are added up exactly
    (as fractions), so the total is never exceeded by rounding."""
    choice = list(start)
    cost = [[Fraction(o.cost) for o in c] for c in curves]

    def current(q: int) -> Option:
        return curves[q][choice[q]] if choice[q] is not None else Option(0.0, 0.0)

    def current_cost(q: int) -> Fraction:
        return cost[q][choice[q]] if choice[q] is not None else Fraction(0)

    left = Fraction(total) - sum((current_cost(q) for q in range(len(curves))), Fraction(0))
    if left < 0:
        raise ConfigError("the starting allocation already costs more than the total")
    hulls = [_hull(c, current(q)) for q, c in enumerate(curves)]
    pos = [0] * len(curves)  # next hull point each question may move to
    heap: list[tuple[float, int, int]] = []

    def push(q: int) -> None:
        if pos[q] >= len(hulls[q]):
            return
        nxt, cur = curves[q][hulls[q][pos[q]]], current(q)
        dc, dv = nxt.cost - cur.cost, nxt.value - cur.value
        heapq.heappush(heap, (-(math.inf if dc <= 0 else dv / dc), q, pos[q]))

    for q in range(len(curves)):
        push(q)
    while heap:
        _, q, p = heapq.heappop(heap)
        if p != pos[q]:
            continue
        step = cost[q][hulls[q][p]] - current_cost(q)
        if step <= left:
            left -= step
            choice[q] = hulls[q][p]
            pos[q] += 1
            push(q)
        # else: this question's next hull step does not fit; step 3 may still find a smaller one.

    # Step 3: fill what is left with the best single upgrade that fits, until none does.
    while True:
        best: tuple[float, int, int] | None = None
        for q, curve in enumerate(curves):
            cur = current(q)
            for i, o in enumerate(curve):
                dc, dv = o.cost - cur.cost, o.value - cur.value
                if dv < 0 or dc <= 0 and (dv == 0 or choice[q] is not None):
                    continue
                if cost[q][i] - current_cost(q) > left:
                    continue
                rate = math.inf if dc <= 0 else dv / dc
                if best is None or rate > best[0]:
                    best = (rate, q, i)
        if best is None:
            break
        _, q, i = best
        left -= cost[q][i] - current_cost(q)
        choice[q] = i
    return choice


def uniform(curves: list[list[Option]], total: float) -> list[int | None]:
    """The best allocation giving every question the same option index (curves sorted by cost
    share their grid), or nothing when not even the cheapest fits for all."""
    if not curves:
        return []
    n_opts = min(len(c) for c in curves)
    best: list[int | None] = [None] * len(curves)
    best_value = -math.inf
    for i in range(n_opts):
        order = [sorted(range(len(c)), key=lambda j, c=c: c[j].cost)[i] for c in curves]
        choice: list[int | None] = list(order)
        fits = sum((Fraction(curves[q][j].cost) for q, j in enumerate(order)), Fraction(0)) <= Fraction(total)
        if fits and expected_value(curves, choice) > best_value:
            best, best_value = choice, expected_value(curves, choice)
    return best


def allocate(curves: list[list[Option]], total: float, answer_all: bool = True) -> list[int | None]:
    """One option index per question (None: the question gets nothing), total cost <= ``total``."""
    _check(curves, total)
    cheapest: list[int | None] = [
        min(range(len(c)), key=lambda i, c=c: (c[i].cost, -c[i].value)) if c else None for c in curves
    ]
    floor = sum((Fraction(curves[q][i].cost) for q, i in enumerate(cheapest) if i is not None), Fraction(0))
    start = cheapest if answer_all and floor <= Fraction(total) else [None] * len(curves)
    greedy = _greedy(curves, total, start)
    flat = uniform(curves, total)
    if expected_value(curves, flat) > expected_value(curves, greedy):
        return flat
    return greedy


def global_vs_uniform(
    results: list[dict], policy: object, label: str, budgets: list[float], curves: str | None = None
) -> list[dict[str, float]]:
    """Global allocation vs. a uniform split of the same total, from a run's compute_optimal results.

    For each mean budget ``m`` of the grid, the batch (every problem with results at every budget,
    per seed) gets a total of ``m`` x questions. Uniform: each question runs at ``m``. Global: the
    allocator gives each question a grid budget from the calibrated curve of its predicted bin
    (read from its probe). Budgets below the probe's size are not offered, so every question's
    budget pays for its own probe (the probe at any budget >= its size is the same samples, so the
    bin read there is the bin the question runs with). Accuracies are looked up in the results:
    the run measured every question at every budget. Averaged over seeds.

    ``curves`` is the policy's accuracy model the allocator works from (``Policy.curve``):
    ``coverage`` when the policy records its oracle counts, else ``calibrated`` (the default, None).
    """
    if curves is None:
        curves = "coverage" if getattr(policy, "has_coverage_model", False) else "calibrated"
    probe = policy.predictor.probe_samples  # type: ignore[attr-defined]
    grid = [b for b in sorted(budgets) if b >= probe]
    by: dict[tuple[int, str], dict[float, dict]] = {}
    for r in results:
        if r["strategy"] == label:
            by.setdefault((int(r["seed"]), r["problem"]), {})[float(r["budget"])] = r
    seeds = sorted({s for s, _ in by})
    out = []
    for m in grid:
        uni, glob, spent = [], [], []
        for seed in seeds:
            rows = {p: v for (s, p), v in by.items() if s == seed and all(b in v for b in grid)}
            if not rows:
                continue
            problems = sorted(rows)
            options = []
            for p in problems:
                bin_ = rows[p][grid[-1]].get("predicted_bin") or policy.n_bins  # type: ignore[attr-defined]
                expected = dict(policy.curve(int(bin_), curves))  # type: ignore[attr-defined]
                options.append([Option(float(b), float(expected.get(b, 0.0))) for b in grid])
            total = m * len(problems)
            choice = allocate(options, total)
            uni.append(sum(bool(rows[p][m]["correct"]) for p in problems) / len(problems))
            glob.append(
                sum(bool(rows[p][grid[i]]["correct"]) for p, i in zip(problems, choice) if i is not None)
                / len(problems)
            )
            spent.append(sum(rows[p][grid[i]]["samples"] for p, i in zip(problems, choice) if i is not None))
        if uni:
            out.append(
                {
                    "mean_budget": m,
                    "total": m * len(rows),
                    "uniform": sum(uni) / len(uni),
                    "global": sum(glob) / len(glob),
                    "global_spent": sum(spent) / len(spent),
                    "curves": curves,
                }
            )
    return out
