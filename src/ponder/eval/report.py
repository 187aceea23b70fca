"""The report of a run directory: Markdown (or HTML) tables and PNG plots.

Per difficulty level (the dataset's levels, and the oracle bins when the run measured them):
accuracy with 95% intervals over seeds, coverage (any candidate right; pass@k by the unbiased
estimator where a pool of samples allows it), compute per problem (policy tokens, verifier
tokens, FLOPs, wall time); the compute-optimal frontier (the best accuracy any strategy reached at
each compute); for runs with a deadline budget, deadlines met and accuracy per deadline; for runs
with compute_optimal, how its predicted difficulty agrees with the oracle bins, the compute it
needs to match best-of-N's best accuracy, and (with a policy file) global vs uniform allocation.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.eval.metrics import accuracy_ci, compute_to_match, pass_at_k
from ponder.eval.runner import RunDir, bins_from_difficulty

ALL = "all"
BASELINES = ("best_of_n", "weighted_best_of_n")


@dataclass(frozen=True)
class Cell:
    """One strategy at one budget, on one group of problems."""

    strategy: str
    budget: float
    group: str
    n: int  # results (problems x seeds)
    accuracy: float
    lo: float
    hi: float
    coverage: float
    mean_flops: float
    mean_policy_tokens: float
    mean_verifier_tokens: float
    mean_wall: float
    errors: int


def _groups(row: dict[str, Any], by: str) -> list[str]:
    out = [ALL]
    value = row.get(by)
    if value is not None:
        out.append(f"{'L' if by == 'level' else 'bin '}{value}")
    return out


def cells(results: list[dict[str, Any]], by: str = "level") -> list[Cell]:
    """Accuracy and compute per (strategy, budget, group) where group is ``all`` or a level/bin."""
    buckets: dict[tuple[str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        for g in _groups(r, by):
            buckets[(r["strategy"], float(r["budget"]), g)].append(r)
    out = []
    for (strategy, budget, group), rs in buckets.items():
        per_seed: dict[int, list[bool]] = defaultdict(list)
        for r in rs:
            per_seed[int(r["seed"])].append(bool(r["correct"]))
        acc, lo, hi = accuracy_ci([per_seed[s] for s in sorted(per_seed)])
        n = len(rs)
        out.append(
            Cell(
                strategy=strategy,
                budget=budget,
                group=group,
                n=n,
                accuracy=acc,
                lo=lo,
                hi=hi,
                coverage=sum(bool(r.get("any_correct")) for r in rs) / n,
                mean_flops=sum(float(r["flops"]) for r in rs) / n,
                mean_policy_tokens=sum(float(r["policy_tokens"]) for r in rs) / n,
                mean_verifier_tokens=sum(float(r["verifier_tokens"]) for r in rs) / n,
                mean_wall=sum(float(r["wall_s"]) for r in rs) / n,
                errors=sum(r.get("error") is not None for r in rs),
            )
        )
    return sorted(out, key=lambda c: (_group_order(c.group), c.strategy, c.budget))


def _group_order(group: str) -> tuple[int, float]:
    if group == ALL:
        return (0, 0.0)
    m = re.search(r"(\d+)", group)
    return (1, float(m[1]) if m else 0.0)


def frontier(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The compute-optimal frontier: points (compute, accuracy, what) that no cheaper point beats,
    by increasing compute."""
    out: list[tuple[float, float, str]] = []
    for c, a, what in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or a > out[-1][1]:
            out.append((c, a, what))
    return out


def coverage_pass_at_k(results: list[dict[str, Any]], difficulty: dict[str, dict[str, Any]], by: str) -> dict:
    """Unbiased pass@k per group and k: from the oracle samples when the run drew them, else from
    the pools of the shared-sample strategies (one per problem and seed)."""
    per_group: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    budgets = sorted({int(r["budget"]) for r in results if float(r["budget"]).is_integer()})
    if difficulty:
        source = "oracle samples"
        level_of = {r["problem"]: r for r in results}
        for pid, d in difficulty.items():
            row = level_of.get(pid, {"level": d.get("level")})
            for g in _groups({**row, "level": d.get("level", row.get("level"))}, by):
                for k in budgets:
                    if k <= int(d["n"]):
                        per_group[g][k].append(pass_at_k(int(d["n"]), int(d["correct"]), k))
    else:
        source = "shared sample pools"
        seen: set[tuple[str, int]] = set()
        for r in results:
            if not r.get("pooled") or (r["problem"], int(r["seed"])) in seen:
                continue
            seen.add((r["problem"], int(r["seed"])))
            for g in _groups(r, by):
                for k in budgets:
                    if k <= int(r["pool_n"]):
                        per_group[g][k].append(pass_at_k(int(r["pool_n"]), int(r["pool_correct"]), k))
    table = {g: {k: sum(v) / len(v) for k, v in ks.items() if v} for g, ks in per_group.items()}
    return {"source": source, "table": table}


def _fmt_acc(c: Cell) -> str:
    if c.errors == c.n:
        return "n/a"
    text = f"{100 * c.accuracy:.1f} [{100 * c.lo:.0f}-{100 * c.hi:.0f}]"
    return text + (f" ({c.errors} refused)" if c.errors else "")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _bkey(b: float) -> str:
    return f"{int(b)}" if float(b).is_integer() else f"{b:g}"


def _by_group(all_cells: list[Cell]) -> dict[str, list[Cell]]:
    out: dict[str, list[Cell]] = defaultdict(list)
    for c in all_cells:
        out[c.group].append(c)
    return dict(sorted(out.items(), key=lambda kv: _group_order(kv[0])))


def compute_optimal_vs(results: list[dict[str, Any]], all_cells: list[Cell]) -> list[dict[str, Any]]:
    """For every compute_optimal strategy and best-of-N baseline in the run (group ``all``): the
    compute each needs to reach the baseline's best accuracy, in budget units and in FLOPs."""
    names = {r["strategy"]: r["name"] for r in results}
    overall = [c for c in all_cells if c.group == ALL and c.errors < c.n]
    out = []
    for contender in sorted(s for s, n in names.items() if n == "compute_optimal"):
        for baseline in sorted(s for s, n in names.items() if n in BASELINES):
            base = [c for c in overall if c.strategy == baseline]
            cont = [c for c in overall if c.strategy == contender]
            by_budget = compute_to_match(
                [(c.budget, c.accuracy) for c in base], [(c.budget, c.accuracy) for c in cont]
            )
            by_flops = compute_to_match(
                [(c.mean_flops, c.accuracy) for c in base], [(c.mean_flops, c.accuracy) for c in cont]
            )
            out.append({"contender": contender, "baseline": baseline, "budget": by_budget, "flops": by_flops})
    return out


def predicted_vs_oracle(results: list[dict[str, Any]], bins: dict[str, int]) -> Any:
    """Agreement of compute_optimal's predicted bins (at its largest budget) with the oracle bins."""
    from ponder.allocation.difficulty import agreement

    predicted: dict[str, tuple[float, int]] = {}
    for r in results:
        if r.get("predicted_bin") is None:
            continue
        b = float(r["budget"])
        if r["problem"] not in predicted or b > predicted[r["problem"]][0]:
            predicted[r["problem"]] = (b, int(r["predicted_bin"]))
    if not predicted or not bins:
        return None
    return agreement({p: v for p, (_, v) in predicted.items()}, bins)


def write_report(
    run_dir: str | Path,
    fmt: str = "md",
    by: str = "auto",
    plots: bool = True,
    policy: str | None = None,
    difficulty_bins: str | None = None,
) -> Path:
    """Write ``report.md`` (or ``report.html``) and PNG plots into the run directory.

    ``difficulty_bins`` re-bins the oracle difficulty (default: the run's quintiles): ``quantile:N``
    or ``thresholds:0.8,0.6,0.4,0.2`` (see :func:`ponder.eval.runner.bins_from_difficulty`)."""
    if fmt not in ("md", "html"):
        raise ConfigError(f"unknown report format {fmt!r}: choose md or html")
    run = RunDir(Path(run_dir))
    config = run.load_config()
    results = run.results()
    if not results:
        raise ConfigError(f"run directory {run.path} has no results yet")
    difficulty = run.difficulty()
    bins = bins_from_difficulty(difficulty, spec=difficulty_bins) if difficulty else {}
    if difficulty_bins is not None:
        results = [{**r, "oracle_bin": bins.get(r["problem"])} for r in results]
    if by == "auto":
        by = "level" if any(r.get("level") is not None for r in results) else "oracle_bin"
    if by not in ("level", "oracle_bin"):
        raise ConfigError(f"unknown grouping {by!r}: choose level or oracle_bin")
    all_cells = cells(results, by)
    unit = config.budget_unit
    strategies = [s.label for s in config.strategies]
    budgets = config.budgets
    parts = [
        "# ponder evaluation report",
        "",
        f"- dataset: {config.dataset.get('name')} ({config.dataset.get('n_problems')} problems, "
        f"answer format {config.dataset.get('answer_format')})",
        f"- strategies: {', '.join(strategies)}",
        f"- budgets ({unit}): {', '.join(_bkey(b) for b in budgets)}; seeds: {config.seeds}",
        f"- models: policy {config.models.get('policy')}, verifier {config.models.get('verifier')}",
        f"- results: {len(results)} lines"
        + (
            f"; oracle difficulty from {config.oracle_samples} samples per problem"
            if config.oracle_samples
            else ""
        ),
        "",
        "Accuracy in % with a 95% interval (over seeds; over problems when there is one seed).",
    ]
    grouped = _by_group(all_cells)
    for group, cs in grouped.items():
        parts += ["", f"## Accuracy: {group}", ""]
        index = {(c.strategy, c.budget): c for c in cs}
        rows = [
            [s] + [_fmt_acc(index[(s, b)]) if (s, b) in index else "" for b in budgets] for s in strategies
        ]
        parts.append(_md_table(["strategy"] + [f"{_bkey(b)}" for b in budgets], rows))
    overall = {(c.strategy, c.budget): c for c in grouped.get(ALL, [])}
    parts += ["", "## Compute per problem (all problems)", ""]
    rows = []
    for s in strategies:
        for b in budgets:
            c = overall.get((s, b))
            if c is None:
                continue
            rows.append(
                [
                    s,
                    _bkey(b),
                    f"{c.mean_policy_tokens:.0f}",
                    f"{c.mean_verifier_tokens:.0f}",
                    f"{c.mean_flops:.3g}",
                    f"{c.mean_wall:.3f}",
                    f"{100 * c.coverage:.1f}",
                ]
            )
    parts.append(
        _md_table(
            ["strategy", "budget", "policy tokens", "verifier tokens", "FLOPs", "wall s", "coverage %"],
            rows,
        )
    )
    parts.append("\nCoverage: share of results where any of the strategy's answers was right.")
    if unit == "samples":
        cov = coverage_pass_at_k(results, difficulty, by)
        if cov["table"]:
            ks = sorted({k for t in cov["table"].values() for k in t})
            parts += ["", f"## Coverage: pass@k (unbiased estimator, from the {cov['source']})", ""]
            rows = [
                [g] + [f"{100 * t[k]:.1f}" if k in t else "" for k in ks]
                for g, t in sorted(cov["table"].items(), key=lambda kv: _group_order(kv[0]))
            ]
            parts.append(_md_table(["group"] + [f"pass@{k}" for k in ks], rows))
    if unit == "seconds":
        from ponder.allocation.deadline import deadline_table

        parts += ["", "## Deadlines", ""]
        rows = [
            [
                d.strategy,
                f"{d.deadline:g}",
                f"{100 * d.met:.1f}",
                f"{100 * d.accuracy:.1f}",
                f"{d.mean_wall:.3f}",
                f"{d.p95_wall:.3f}",
            ]
            for d in deadline_table(results)
        ]
        parts.append(
            _md_table(["strategy", "deadline s", "met %", "accuracy %", "mean wall s", "p95 wall s"], rows)
        )
    front = frontier(
        [
            (c.mean_flops, c.accuracy, f"{c.strategy} @ {_bkey(c.budget)}")
            for c in overall.values()
            if c.errors < c.n
        ]
    )
    parts += ["", "## Compute-optimal frontier (all problems)", ""]
    parts.append("The cheapest way found to each accuracy: no point left of a row reaches its accuracy.\n")
    parts.append(
        _md_table(
            ["FLOPs per problem", "accuracy %", "strategy @ budget"],
            [[f"{c:.3g}", f"{100 * a:.1f}", w] for c, a, w in front],
        )
    )
    if bins:
        counts: dict[int, list[float]] = defaultdict(list)
        for pid, b in bins.items():
            counts[b].append(float(difficulty[pid]["pass1"]))
        parts += ["", "## Oracle difficulty bins", ""]
        parts.append(
            _md_table(
                ["bin", "problems", "mean pass@1", "pass@1 range"],
                [
                    [str(b), str(len(v)), f"{sum(v) / len(v):.3f}", f"{min(v):.3f}-{max(v):.3f}"]
                    for b, v in sorted(counts.items())
                ],
            )
        )
        agree = predicted_vs_oracle(results, bins)
        if agree is not None:
            parts += [
                "",
                "### Predicted difficulty (compute_optimal's probe) vs. oracle bins",
                "",
                f"{agree.n} problems: exact bin {100 * agree.exact:.1f}%, within one bin "
                f"{100 * agree.within_one:.1f}%, Spearman {agree.spearman:.3f}.",
                "",
            ]
            preds = sorted({p for row in agree.confusion.values() for p in row})
            parts.append(
                _md_table(
                    ["oracle \\ predicted"] + [str(p) for p in preds],
                    [[str(o)] + [str(row.get(p, 0)) for p in preds] for o, row in agree.confusion.items()],
                )
            )
    matches = compute_optimal_vs(results, all_cells)
    if matches:
        parts += ["", "## Compute-optimal vs. best-of-N (all problems)", ""]
        rows = []
        for m in matches:
            bb, bf = m["budget"], m["flops"]
            rows.append(
                [
                    m["contender"],
                    m["baseline"],
                    f"{100 * bb['target']:.1f}" if bb["target"] is not None else "",
                    _bkey(bb["baseline_compute"]) if bb["baseline_compute"] is not None else "",
                    _bkey(bb["contender_compute"]) if bb["contender_compute"] is not None else "not reached",
                    f"{bb['ratio']:.2f}x" if bb["ratio"] else "-",
                    f"{bf['ratio']:.2f}x" if bf["ratio"] else "-",
                ]
            )
        parts.append(
            _md_table(
                [
                    "compute-optimal",
                    "baseline",
                    "baseline best acc %",
                    "baseline budget",
                    "compute-optimal budget",
                    "less compute (budget)",
                    "less compute (FLOPs)",
                ],
                rows,
            )
        )
    if policy is not None and unit == "samples":
        from ponder.allocation.global_budget import global_vs_uniform
        from ponder.allocation.policy import load_policy

        pol = load_policy(policy)
        co_labels = [s.label for s in config.strategies if s.name == "compute_optimal"]
        if co_labels:
            comparison = global_vs_uniform(results, pol, co_labels[0], budgets)
            if comparison:
                parts += ["", f"## Global budget vs. uniform split ({co_labels[0]}, all problems)", ""]
                parts.append(
                    _md_table(
                        [
                            "mean budget",
                            "total",
                            "uniform acc %",
                            "global acc %",
                            "gain (points)",
                            "global spent",
                        ],
                        [
                            [
                                _bkey(c["mean_budget"]),
                                _bkey(c["total"]),
                                f"{100 * c['uniform']:.1f}",
                                f"{100 * c['global']:.1f}",
                                f"{100 * (c['global'] - c['uniform']):+.1f}",
                                f"{c['global_spent']:.0f}",
                            ]
                            for c in comparison
                        ],
                    )
                )
    if plots:
        from ponder.eval.plots import plot_accuracy_vs_compute, plot_frontier

        a = plot_accuracy_vs_compute(all_cells, run.path / "accuracy_vs_compute.png")
        f = plot_frontier(all_cells, run.path / "frontier.png")
        parts += ["", "## Plots", "", f"![accuracy vs compute]({a.name})", "", f"![frontier]({f.name})"]
    text = "\n".join(parts) + "\n"
    summary = {
        "cells": [c.__dict__ for c in all_cells],
        "compute_optimal_vs_best_of_n": matches,
    }
    (run.path / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if fmt == "md":
        out = run.path / "report.md"
        out.write_text(text)
    else:
        out = run.path / "report.html"
        out.write_text(markdown_to_html(text))
    return out


def markdown_to_html(text: str) -> str:
    """The small Markdown subset the report uses (headings, lists, tables, images, paragraphs)."""
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
    )
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>ponder report</title>"]
    out.append(f"<style>{style}</style></head><body>")
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("| "):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not lines[i].startswith("|---"):
                    rows.append([html.escape(c.strip()) for c in lines[i].strip("|").split(" | ")])
                i += 1
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{c}</th>" for c in rows[0]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:]]
            out.append("</table>")
            continue
        elif line.startswith("- "):
            out.append(f"<ul><li>{html.escape(line[2:])}</li></ul>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip()):
            out.append(f"<img alt='{html.escape(m[1])}' src='{html.escape(m[2])}'>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out) + "\n"
