"""Selection accuracy vs. sampling temperature: does a cooler or hotter pool help the vote or the
verifier pick the right answer?

For every problem, ``--samples`` solutions are drawn at each temperature (the same seed per
problem) and scored once by the verifier; from that one pool the script reads greedy's accuracy,
pass@k, the mean accuracy of one sample, majority vote, best-of-N by the verifier (min / last /
product of step scores) and weighted best-of-N. Run it on the dev split to choose a temperature
without touching the test split.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_temperature.py --split dev --n-per-level 60 \\
        --levels 2 3 4 --temperatures 0.5 0.7 1.0 --samples 16
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

from _common import environment, markdown_table, set_threads, write_json

from ponder.api import default_models
from ponder.backends.base import SamplingParams
from ponder.strategies.base import Candidate
from ponder.strategies.best_of_n import pick_by_score
from ponder.strategies.majority import vote
from ponder.tasks.answers import extract_answer
from ponder.tasks.arithmetic import make_split
from ponder.verifiers.base import aggregate_steps
from ponder.verifiers.spec import load_verifier

AGGREGATIONS = ("min", "last", "prod")
COLUMNS = ("pass@k", "one sample", "majority", "bon min", "bon last", "bon prod", "weighted bon min")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="dev", choices=["dev", "test"])
    ap.add_argument("--n-per-level", type=int, default=60)
    ap.add_argument("--levels", type=int, nargs="*", default=[2, 3, 4])
    ap.add_argument("--temperatures", type=float, nargs="*", default=[0.5, 0.7, 1.0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--verifier", default="embedded", help="verifier spec (e.g. embedded:runs/v/verifier.safetensors)"
    )
    ap.add_argument("--json", help="write everything measured here")
    return ap.parse_args(argv)


def select(answers: list[Any], steps: list[list[float]], gold: Any) -> dict[str, bool]:
    """Which selection rules pick the right answer from one scored pool: the strategies' own
    vote and best-of-N picks (same tie-breaking), on each step aggregation."""
    out = {
        "pass@k": gold in answers,
        "one sample": sum(a == gold for a in answers) / len(answers),
        "majority": vote([Candidate("", a) for a in answers]) == gold,
    }
    for how in AGGREGATIONS:
        scored = [Candidate("", a, aggregate_steps(s, how)) for a, s in zip(answers, steps)]
        out[f"bon {how}"] = pick_by_score(scored, weighted=False) == gold
        if how == "min":
            out["weighted bon min"] = pick_by_score(scored, weighted=True) == gold
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    generator, verifier = default_models()
    if args.verifier != "embedded":
        verifier = load_verifier(args.verifier)
    split = make_split(args.split, n_per_level=args.n_per_level, seed=args.seed)
    problems = [p for p in split if p.level in args.levels]
    started = time.perf_counter()
    greedy = generator.generate(
        [p.prompt for p in problems], SamplingParams(n=1, temperature=0.0, max_new_tokens=256)
    )
    cells: dict[tuple[float, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    greedy_acc: dict[int, list[float]] = defaultdict(list)
    for p, g in zip(problems, greedy):
        greedy_acc[p.level].append(float(extract_answer(g[0].text) == p.answer))
    for t in args.temperatures:
        for i, p in enumerate(problems):
            params = SamplingParams(
                n=args.samples, temperature=t, max_new_tokens=256, seed=args.seed * 1_000_003 + i
            )
            texts = [c.text for c in generator.generate([p.prompt], params)[0]]
            scores = verifier.score([p.prompt] * len(texts), texts)
            picked = select([extract_answer(x) for x in texts], [s.step_scores for s in scores], p.answer)
            for k, v in picked.items():
                cells[(t, p.level)][k].append(float(v))
    rows = []
    for (t, level), cols in sorted(cells.items()):
        greedy_pct = 100 * sum(greedy_acc[level]) / len(greedy_acc[level])
        rows.append(
            [f"{t:g}", f"L{level}", f"{greedy_pct:.1f}"]
            + [f"{100 * sum(cols[c]) / len(cols[c]):.1f}" for c in COLUMNS]
        )
    record = {
        "settings": vars(args),
        "environment": environment(),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        write_json(args.json, record)
    print(
        f"{args.split} split, {args.n_per_level} problems per level, {args.samples} samples per "
        f"temperature, seed {args.seed}; {record['seconds']:.0f} s\n"
    )
    print(markdown_table(["T", "level", "greedy", *COLUMNS], rows))
    return record


if __name__ == "__main__":
    main()
