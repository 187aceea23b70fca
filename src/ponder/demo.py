"""The main job on the embedded default: a few test problems, several strategies, accuracy and compute."""

from __future__ import annotations

import time
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from ponder.backends.embedded import EmbeddedGenerator
from ponder.strategies.base import Compute
from ponder.strategies.budget import Budget
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
from ponder.tasks.arithmetic import LEVELS, make_split
from ponder.verifiers.embedded import load_embedded_verifier

DEMO_STRATEGIES = ("greedy", "majority", "best_of_n", "weighted_best_of_n")


def run_demo(n_per_level: int = 6, samples: int = 16, seed: int = 0, console: Console | None = None) -> dict:
    """Run each demo strategy on ``n_per_level`` test problems of every level; return the figures."""
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a log or pipe: keep the table whole
    budget = Budget(samples=samples)  # refuse a bad budget before loading the models
    generator = EmbeddedGenerator.load()
    verifier = load_embedded_verifier()
    problems = make_split("test", n_per_level=n_per_level, seed=seed)
    console.print(
        f"embedded policy: {generator.num_params:,} parameters; verifier: {verifier.num_params:,}; "
        f"{len(problems)} test problems, {samples} samples per problem for the sampling strategies"
    )
    example = problems[-1]
    console.print(f"\nexample (level {example.level}): [bold]{example.question}[/bold] = {example.answer}")

    figures: dict[str, dict] = {}
    for name in DEMO_STRATEGIES:
        strategy = make_strategy(name)
        correct: dict[int, list[bool]] = defaultdict(list)
        total = Compute()
        start = time.perf_counter()
        for i, problem in enumerate(problems):
            result = strategy.run(
                problem.prompt, generator, verifier if name in NEEDS_VERIFIER else None, budget, seed + i
            )
            correct[problem.level].append(result.answer == problem.answer)
            total.merge(result.compute)
            if problem is example:
                console.print(f"  {name:>20}: answer {result.answer}")
        figures[name] = {
            "accuracy": {lv: sum(v) / len(v) for lv, v in sorted(correct.items())},
            "overall": sum(sum(v) for v in correct.values()) / len(problems),
            "tokens_per_problem": (total.policy_tokens + total.verifier_tokens) / len(problems),
            "gflops_per_problem": total.total_flops / len(problems) / 1e9,
            "seconds": time.perf_counter() - start,
        }

    table = Table(
        title=f"accuracy on the test split ({n_per_level} problems per level, seed {seed}); "
        "compute per problem"
    )
    table.add_column("strategy", no_wrap=True)
    for lv in sorted(LEVELS):
        table.add_column(f"L{lv}", justify="right", no_wrap=True)
    for col in ("all", "tokens", "GFLOPs", "wall s"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, f in figures.items():
        table.add_row(
            name,
            *[f"{f['accuracy'].get(lv, 0):.0%}" for lv in sorted(LEVELS)],
            f"{f['overall']:.0%}",
            f"{f['tokens_per_problem']:.0f}",
            f"{f['gflops_per_problem']:.3f}",
            f"{f['seconds']:.1f}",
        )
    console.print(table)
    return figures
