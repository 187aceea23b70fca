"""Prefix reuse in tree search: tokens the policy actually computes vs. unique tokens it emits.

A tree search continues ``prompt + path`` every round. Without reuse each continuation prefills its
whole path again; with the embedded generator's prefix cache (``prefix_cache_mb``) only what the
cache does not hold is computed. For beam search, DVTS, MCTS and lookahead at a few budgets, on a
few test problems, this reports

- **unique** tokens: the question's prompt once plus every token the policy emitted (every prompt a
  search generates from is the question plus emitted text, so this is what an ideal engine computes);
- **computed** tokens: prompt tokens the generator really ran (``GenerationUsage.prompt_tokens``,
  summed in ``Compute.policy_prompt_tokens``) plus emitted tokens, without and with the cache;
- their ratio (goal with the cache: <= 1.1x), the prompt tokens the cache supplied, whether both
  runs produced the same candidates (reused keys/values equal recomputed ones up to rounding),
  and the wall time of each (only indicative on a busy machine);
- the verifier's tokens, for scale: the verifier re-reads each path it scores (not cached).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_prefix_reuse.py [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _common import environment, load_policy, markdown_table, set_threads, write_json

from ponder.backends.embedded import DEFAULT_PREFIX_CACHE_MB, EmbeddedGenerator
from ponder.strategies import Budget, make_strategy
from ponder.tasks.arithmetic import make_split
from ponder.training.model import ModelConfig, TinyTransformer, load_model
from ponder.training.tokenizer import CharTokenizer
from ponder.training.weights import verifier_path
from ponder.verifiers.embedded import EmbeddedVerifier

STRATEGIES = ("beam_search", "dvts", "mcts", "lookahead")
GOAL = 1.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="policy weights (default: the shipped policy)")
    p.add_argument("--random-init", action="store_true", help="untrained models of the shipped shapes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--samples", type=int, nargs="+", default=[8, 16, 32], help="budgets N (samples)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--levels", type=int, nargs="+", default=[2, 3], help="test-split levels")
    p.add_argument("--n-per-level", type=int, default=2, help="problems per level (default 2)")
    p.add_argument("--cache-mb", type=float, default=DEFAULT_PREFIX_CACHE_MB)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.threads < 1 or args.n_per_level < 1 or min(args.samples) < 4:
        p.error("--threads and --n-per-level must be >= 1, every --samples >= 4")
    return args


def load_verifier(random_init: bool, seed: int) -> tuple[EmbeddedVerifier, str]:
    path = verifier_path()
    if not random_init and path.is_file():
        model, _ = load_model(path)
        return EmbeddedVerifier(model), f"weights {path}"
    torch.manual_seed(seed + 1)
    config = ModelConfig(
        vocab_size=CharTokenizer().vocab_size, head="reward", d_model=128, n_layer=4, n_head=4
    )
    return EmbeddedVerifier(TinyTransformer(config).eval()), "random init (d_model=128, n_layer=4)"


def run_one(name: str, n: int, prompt: str, generator: EmbeddedGenerator, verifier, seed: int):
    start = time.perf_counter()
    result = make_strategy(name).run(prompt, generator, verifier, Budget(samples=n), seed)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    source = load_policy(args.weights, args.random_init, args.seed)
    verifier, verifier_desc = load_verifier(args.random_init or source.random_init, args.seed)
    plain = EmbeddedGenerator(source.model)
    cached = EmbeddedGenerator(source.model, prefix_cache_mb=args.cache_mb)
    problems = make_split("test", levels=args.levels, n_per_level=args.n_per_level, seed=0)

    rows: list[dict[str, Any]] = []
    for name in args.strategies:
        for n in args.samples:
            row = dict.fromkeys(
                (
                    "emitted",
                    "unique",
                    "computed_plain",
                    "computed_cached",
                    "reused",
                    "verifier_tokens",
                    "wall_plain",
                    "wall_cached",
                ),
                0.0,
            )
            same = 0
            for i, problem in enumerate(problems):
                seed = args.seed + i
                a, ta = run_one(name, n, problem.prompt, plain, verifier, seed)
                b, tb = run_one(name, n, problem.prompt, cached, verifier, seed)
                same += [c.text for c in a.candidates] == [c.text for c in b.candidates]
                root = cached.count_prompt_tokens(problem.prompt)
                row["emitted"] += b.compute.policy_completion_tokens
                row["unique"] += root + b.compute.policy_completion_tokens
                row["computed_plain"] += a.compute.policy_tokens
                row["computed_cached"] += b.compute.policy_tokens
                row["reused"] += b.compute.policy_cached_tokens
                row["verifier_tokens"] += b.compute.verifier_tokens
                row["wall_plain"] += ta
                row["wall_cached"] += tb
            row.update(strategy=name, samples=n, problems=len(problems), same_candidates=same)
            row["ratio_plain"] = row["computed_plain"] / row["unique"]
            row["ratio_cached"] = row["computed_cached"] / row["unique"]
            rows.append(row)
            print(
                f"  {name} N={n}: ratio {row['ratio_plain']:.2f}x -> {row['ratio_cached']:.3f}x",
                flush=True,
            )

    print("\n## Prefix reuse in tree search (embedded policy)\n")
    if source.fallback_note:
        print(f"**NOTE: {source.fallback_note}**\n")
    print(f"- policy: {source.description}; verifier: {verifier_desc}")
    print(
        f"- {len(problems)} test problems (levels {', '.join(map(str, args.levels))}, "
        f"{args.n_per_level} each), seeds {args.seed}..{args.seed + len(problems) - 1}; each strategy at "
        f"its defaults with Budget(samples=N); prefix cache {args.cache_mb:g} MiB"
    )
    print(f"- torch {environment()['torch']}, {args.threads} thread(s)\n")
    table = []
    for r in rows:
        table.append(
            [
                r["strategy"],
                r["samples"],
                int(r["emitted"]),
                int(r["unique"]),
                int(r["computed_plain"]),
                f"{r['ratio_plain']:.2f}x",
                int(r["computed_cached"]),
                f"**{r['ratio_cached']:.3f}x**",
                int(r["reused"]),
                f"{r['same_candidates']}/{r['problems']}",
                f"{r['wall_plain']:.2f} / {r['wall_cached']:.2f}",
                int(r["verifier_tokens"]),
            ]
        )
    print(
        markdown_table(
            [
                "strategy",
                "N",
                "emitted",
                "unique",
                "computed, no cache",
                "ratio",
                "computed, cache",
                "ratio",
                "prompt tokens reused",
                "same candidates",
                "wall s (no cache / cache)",
                "verifier tokens",
            ],
            table,
        )
    )
    worst = max(r["ratio_cached"] for r in rows)
    verdict = "meets" if worst <= GOAL else "misses"
    print(
        f"\nWith the prefix cache the policy computes at most {worst:.3f}x the unique tokens "
        f"({verdict} the goal of <= {GOAL}x); without it up to "
        f"{max(r['ratio_plain'] for r in rows):.2f}x."
    )
    if args.json:
        write_json(
            args.json,
            {
                "settings": vars(args),
                "policy": source.description,
                "verifier": verifier_desc,
                "environment": environment(),
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
