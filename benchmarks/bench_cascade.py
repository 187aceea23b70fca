"""Cascades on the built-in task: accuracy vs cost against always-small and always-large.

The small backend is the embedded policy (``--small-weights``, default the shipped one); the large
backend, standing in for a remote, dearer model, is a second embedded policy
(``--large-weights``; without it the small policy is used again, so only the strategy escalates,
and the output says so). Each backend has a price per policy token (``--small-cost``, default 1;
``--large-cost``, default the ratio of the two models' parameter counts).

For every test problem (``--n-per-level`` per level):

  always-small    ``--small-strategy`` with ``--small-samples`` samples on the small backend
  always-large    ``--large-strategy`` with ``--large-samples`` samples on the large backend
  cascade         the ``cascade`` strategy: the small run first, escalating to the large run when
                  its answer agreement is below each of ``--thresholds`` (and once with the
                  verifier's confidence, ``--verifier-threshold``)

Reported per level: accuracy, mean cost per problem, the share escalated, and mean GFLOPs.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_cascade.py --large-weights runs/large/policy.safetensors
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from _common import environment, load_policy, markdown_table, set_threads, write_json

from ponder.backends.embedded import EmbeddedGenerator
from ponder.strategies.budget import Budget, derive_seed
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
from ponder.tasks.arithmetic import LEVELS, make_split
from ponder.training.model import load_model
from ponder.verifiers.embedded import EmbeddedVerifier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small-weights", help="small policy (default: the shipped policy)")
    ap.add_argument("--large-weights", help="large policy (default: the small one again)")
    ap.add_argument(
        "--verifier-weights", help="verifier for the verifier-confidence cascade (default: shipped)"
    )
    ap.add_argument("--n-per-level", type=int, default=30)
    ap.add_argument("--levels", type=int, nargs="*", default=None)
    ap.add_argument("--small-strategy", default="majority")
    ap.add_argument("--small-samples", type=int, default=4)
    ap.add_argument("--large-strategy", default="majority")
    ap.add_argument("--large-samples", type=int, default=16)
    ap.add_argument("--thresholds", type=float, nargs="*", default=[0.5, 0.75, 1.0])
    ap.add_argument("--verifier-threshold", type=float, default=0.5, help="negative: skip that cascade")
    ap.add_argument("--small-cost", type=float, default=1.0, help="price per small-model token")
    ap.add_argument("--large-cost", type=float, default=None, help="price per large-model token")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write everything measured here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    small_src = load_policy(args.small_weights, random_init=False, seed=args.seed)
    if small_src.fallback_note:
        print(f"> note: {small_src.fallback_note}\n")
    small = EmbeddedGenerator(small_src.model)
    small.name = "embedded-small"
    note = None
    if args.large_weights:
        if not Path(args.large_weights).is_file():
            raise SystemExit(f"--large-weights {args.large_weights} does not exist")
        large = EmbeddedGenerator(load_model(args.large_weights)[0])
    else:
        note = "no --large-weights: the large backend is the small policy again (only the strategy escalates)"
        large = EmbeddedGenerator(small_src.model)
    large.name = "embedded-large"
    large_cost = args.large_cost if args.large_cost is not None else large.num_params / small.num_params
    verifier = EmbeddedVerifier.load(args.verifier_weights)
    levels = tuple(args.levels) if args.levels else tuple(sorted(LEVELS))
    problems = make_split("test", levels=levels, n_per_level=args.n_per_level, seed=args.seed)

    def uses_verifier(name: str) -> bool:
        return name in NEEDS_VERIFIER

    small_run = make_strategy(args.small_strategy)
    large_run = make_strategy(args.large_strategy)
    common = dict(
        small_strategy=args.small_strategy,
        small_samples=args.small_samples,
        large_strategy=args.large_strategy,
        large=large,
        small_cost_per_token=args.small_cost,
        large_cost_per_token=large_cost,
    )
    cascades = [
        (f"cascade agreement<{t:g}", make_strategy("cascade", threshold=t, **common)) for t in args.thresholds
    ]
    if args.verifier_threshold >= 0:
        cascades.append(
            (
                f"cascade verifier<{args.verifier_threshold:g}",
                make_strategy("cascade", confidence="verifier", threshold=args.verifier_threshold, **common),
            )
        )
    results: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    start = time.perf_counter()
    for i, p in enumerate(problems):
        seed = args.seed + i
        r = small_run.run(
            p.prompt,
            small,
            verifier if uses_verifier(args.small_strategy) else None,
            Budget(samples=args.small_samples),
            seed,
        )
        results["always-small"][p.level].append(
            {
                "correct": r.answer == p.answer,
                "cost": r.compute.policy_tokens * args.small_cost,
                "flops": r.compute.total_flops,
                "escalated": False,
            }
        )
        # The seed the cascade gives its large stage: an escalated problem gets exactly this answer.
        r = large_run.run(
            p.prompt,
            large,
            verifier if uses_verifier(args.large_strategy) else None,
            Budget(samples=args.large_samples),
            derive_seed(seed, "cascade", "large"),
        )
        results["always-large"][p.level].append(
            {
                "correct": r.answer == p.answer,
                "cost": r.compute.policy_tokens * large_cost,
                "flops": r.compute.total_flops,
                "escalated": True,
            }
        )
        for label, cascade in cascades:
            r = cascade.run(
                p.prompt, small, verifier, Budget(samples=args.small_samples + args.large_samples), seed
            )
            results[label][p.level].append(
                {
                    "correct": r.answer == p.answer,
                    "cost": r.cost,
                    "flops": r.compute.total_flops,
                    "escalated": r.escalated,
                    "confidence": r.confidence,
                }
            )
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(problems)} problems, {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    headers = ["method"] + [f"L{lv}" for lv in levels] + ["all"]
    tables: dict[str, list[list[str]]] = {"acc": [], "cost": [], "esc": [], "flops": []}
    for label, per in results.items():
        rows = [r for lv in levels for r in per[lv]]
        for key, field, fmt in (
            ("acc", "correct", lambda v: f"{100 * v:.1f}%"),
            ("cost", "cost", lambda v: f"{v:,.0f}"),
            ("esc", "escalated", lambda v: f"{100 * v:.0f}%"),
            ("flops", "flops", lambda v: f"{v / 1e9:.3f}"),
        ):
            tables[key].append(
                [label]
                + [fmt(mean([r[field] for r in per[lv]])) for lv in levels]
                + [fmt(mean([r[field] for r in rows]))]
            )

    print(f"- small: {small_src.description} ({small.num_params:,} params), price {args.small_cost:g}/token")
    print(
        f"- large: {args.large_weights or 'the small policy'} ({large.num_params:,} params), "
        f"price {large_cost:g}/token"
    )
    if note:
        print(f"- note: {note}")
    print(
        f"- small run: {args.small_strategy}@{args.small_samples}; large run: {args.large_strategy}@"
        f"{args.large_samples}; cascade budget {args.small_samples + args.large_samples} samples"
    )
    print(
        f"- test split, {args.n_per_level} problems per level, seed {args.seed}; torch {torch.__version__}, "
        f"{args.threads} thread(s); wall {wall:.0f} s\n"
    )
    for key, title in (
        ("acc", "Accuracy"),
        ("cost", "Mean cost per problem (policy tokens x price)"),
        ("esc", "Escalated"),
        ("flops", "Mean GFLOPs per problem"),
    ):
        print(f"### {title}\n")
        print(markdown_table(headers, tables[key]))
        print()
    if args.json:
        write_json(
            args.json,
            {
                "settings": vars(args) | {"large_cost_resolved": large_cost},
                "note": note,
                "environment": environment(),
                "wall_s": wall,
                "results": {k: {lv: v[lv] for lv in levels} for k, v in results.items()},
            },
        )


if __name__ == "__main__":
    main()
