"""PNG plots of a run (matplotlib, Agg backend: no display needed).

- accuracy vs. compute: one panel per difficulty level (and one for all problems), one line per
  strategy, x = mean FLOPs per problem on a log2 axis, 95% intervals as error bars;
- the compute-optimal frontier: per panel, the best accuracy any strategy reached at each compute
  (a step line), with the compute_optimal strategy's own curve when the run has one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402

from ponder.eval.report import Cell, _by_group, frontier  # noqa: E402


def _panels(n: int) -> tuple[plt.Figure, list]:
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _xaxis(ax: plt.Axes) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("FLOPs per problem (log2)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)


def _save(fig: plt.Figure, axes: list[plt.Axes], path: Path) -> Path:
    if axes:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_compute(cells: list[Cell], path: Path) -> Path:
    groups = _by_group(cells)
    fig, axes = _panels(len(groups))
    for ax, (group, cs) in zip(axes, groups.items()):
        lines: dict[str, list[Cell]] = defaultdict(list)
        for c in cs:
            if c.errors < c.n and c.mean_flops > 0:
                lines[c.strategy].append(c)
        for strategy, pts in sorted(lines.items()):
            pts.sort(key=lambda c: c.mean_flops)
            ax.errorbar(
                [c.mean_flops for c in pts],
                [c.accuracy for c in pts],
                yerr=[[max(0.0, c.accuracy - c.lo) for c in pts], [max(0.0, c.hi - c.accuracy) for c in pts]],
                marker="o",
                markersize=3,
                capsize=2,
                label=strategy,
            )
        ax.set_title(group)
        _xaxis(ax)
    return _save(fig, axes, path)


def plot_frontier(cells: list[Cell], path: Path) -> Path:
    groups = _by_group(cells)
    fig, axes = _panels(len(groups))
    for ax, (group, cs) in zip(axes, groups.items()):
        live = [c for c in cs if c.errors < c.n and c.mean_flops > 0]
        front = frontier([(c.mean_flops, c.accuracy, c.strategy) for c in live])
        if front:
            ax.step(
                [f[0] for f in front], [f[1] for f in front], where="post", label="frontier", color="black"
            )
            ax.scatter([f[0] for f in front], [f[1] for f in front], s=12, color="black")
        co = sorted((c for c in live if c.strategy.startswith("compute_optimal")), key=lambda c: c.mean_flops)
        if co:
            ax.plot(
                [c.mean_flops for c in co],
                [c.accuracy for c in co],
                "o--",
                label="compute_optimal",
                markersize=3,
            )
        ax.set_title(f"frontier: {group}")
        _xaxis(ax)
    return _save(fig, axes, path)
