"""Does sequential revision help? Accuracy of each revision turn, for the shipped policy and the
reviser (the policy fine-tuned on its own wrong attempts, ``ponder train reviser``).

A chain starts with an ordinary attempt at the question; attempt ``j + 1`` is generated from the
revision prompt (the question, then the chain's last attempts, at most ``--context`` of them and
no more than fit the context, each followed by ``R:``, then the question again), exactly as the
``revision`` strategy builds it. No verifier is involved: the
figure for turn ``j`` is the accuracy of the chain's ``j``-th attempt, Snell et al.'s "pass@1 at
each revision step". Two settings:

- greedy chains (temperature 0): one chain per problem; also how many first answers the revisions
  fixed (wrong -> right) and broke (right -> wrong);
- sampled chains (temperature 1): ``--chains`` chains per problem; turn 1 is the accuracy of one
  independent sample, so a later turn above it is revision beating a fresh sample.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_revision.py --split test --n-per-level 100 \\
        --turns 4 --chains 4 --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

from _common import environment, markdown_table, set_threads, write_json

from ponder.backends.base import Generator, SamplingParams
from ponder.backends.spec import load_generator
from ponder.strategies.revision import fitting_prompt
from ponder.tasks.answers import extract_answer
from ponder.tasks.arithmetic import Problem, make_split

MAX_NEW_TOKENS = 160


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--n-per-level", type=int, default=100)
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    ap.add_argument("--turns", type=int, default=4, help="attempts per chain")
    ap.add_argument("--chains", type=int, default=4, help="sampled chains per problem")
    ap.add_argument("--context", type=int, default=1, help="most earlier attempts a revision prompt shows")
    ap.add_argument("--policies", nargs="*", default=["embedded", "embedded+reviser"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write everything measured here")
    return ap.parse_args(argv)


def run_chains(
    generator: Generator,
    problems: list[Problem],
    chains: int,
    turns: int,
    context: int,
    temperature: float,
    seed: int,
) -> list[list[list[bool]]]:
    """``right[problem][chain][turn]``: whether each attempt of each chain answers right."""
    rows = [(p, c) for p in problems for c in range(chains)]
    attempts: list[list[str]] = [[] for _ in rows]

    def fits(text: str) -> bool:  # as the revision strategy trims: a full new attempt must fit
        return generator.count_prompt_tokens(text) + MAX_NEW_TOKENS <= generator.context_length

    for turn in range(turns):
        prompts = [fitting_prompt(p.prompt, attempts[i][-context:], fits) for i, (p, _) in enumerate(rows)]
        # Turn 1's prompt is the same for every chain: chain by chain, each with its own seed, so
        # the chains are independent samples.
        for c in range(chains):
            idx = [i for i, (_, ci) in enumerate(rows) if ci == c]
            params = SamplingParams(
                n=1,
                temperature=temperature,
                max_new_tokens=MAX_NEW_TOKENS,
                seed=seed * 1_000_003 + turn * 7919 + c,
            )
            out = generator.generate([prompts[i] for i in idx], params)
            for i, group in zip(idx, out):
                attempts[i].append(group[0].text)
    right: list[list[list[bool]]] = []
    for k, p in enumerate(problems):
        per_chain = []
        for c in range(chains):
            texts = attempts[k * chains + c]
            per_chain.append([extract_answer(t) == p.answer for t in texts])
        right.append(per_chain)
    return right


def turn_rows(
    name: str, problems: list[Problem], right: list[list[list[bool]]], turns: int
) -> list[list[Any]]:
    """Per level (and all): accuracy of attempt j, averaged over chains and problems."""
    by_level: dict[str, list[list[list[bool]]]] = defaultdict(list)
    for p, r in zip(problems, right):
        by_level[f"L{p.level}"].append(r)
        by_level["all"].append(r)
    rows = []
    for level in sorted(by_level, key=lambda s: (s == "all", s)):
        group = by_level[level]
        cells = []
        for j in range(turns):
            hits = [chain[j] for r in group for chain in r]
            cells.append(f"{100 * sum(hits) / len(hits):.1f}")
        fixed = sum(chain[0] is False and chain[-1] for r in group for chain in r)
        broken = sum(chain[0] and chain[-1] is False for r in group for chain in r)
        rows.append([name, level, *cells, fixed, broken])
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    split = make_split(args.split, n_per_level=args.n_per_level, seed=args.seed)
    problems = [p for p in split if p.level in args.levels]
    started = time.perf_counter()
    tables: dict[str, list[list[Any]]] = {"greedy": [], "sampled": []}
    for spec in args.policies:
        generator = load_generator(spec)
        greedy = run_chains(generator, problems, 1, args.turns, args.context, 0.0, args.seed)
        tables["greedy"] += turn_rows(spec, problems, greedy, args.turns)
        sampled = run_chains(generator, problems, args.chains, args.turns, args.context, 1.0, args.seed)
        tables["sampled"] += turn_rows(spec, problems, sampled, args.turns)
    record = {
        "settings": vars(args),
        "environment": environment(),
        "tables": tables,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        write_json(args.json, record)
    headers = ["policy", "level", *[f"attempt {j + 1}" for j in range(args.turns)], "fixed", "broken"]
    print(
        f"{args.split} split, {args.n_per_level} problems per level, {args.turns} attempts per chain, "
        f"seed {args.seed}; {record['seconds']:.0f} s\n"
    )
    print("Greedy chains (one per problem), accuracy % of each attempt:\n")
    print(markdown_table(headers, tables["greedy"]))
    print(f"\nSampled chains (T=1, {args.chains} per problem), accuracy % of each attempt:\n")
    print(markdown_table(headers, tables["sampled"]))
    return record


if __name__ == "__main__":
    main()
