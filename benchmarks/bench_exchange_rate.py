"""FLOPs-matched exchange rate: a >= 10x larger policy's greedy answers vs. the small policy with
compute-optimal test-time compute, at equal total FLOPs, per difficulty level.

Total FLOPs follow Snell et al. (2024), section 7: pre-training costs 6 N D_pre and inference
2 N D_inf for a model of N parameters. Both policies saw the same D_pre training tokens (the large
one was trained on the small one's data and schedule, see RESULTS.md). With M = N_large / N_small
and R = D_inf / D_pre (how much inference the deployment does relative to pre-training), the
small model may spend, per question, the large model's greedy FLOPs times

    1 + 3 (M - 1) / (M R)

on inference (its verifier's FLOPs included) and still match the large model's total. R is 0.16,
0.79 and 22 in the paper; small R means few queries, so pre-training savings buy many samples.

One command (resumable: rerun it after an interruption):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_exchange_rate.py \\
        --large-weights runs/large_v2/policy.safetensors --policy-file POLICY.json

1. ``ponder eval`` of the large policy's greedy answers on ``--n-per-level`` test problems;
2. ``ponder eval`` of the small (shipped) policy on the same problems: greedy, majority, weighted
   best-of-N and ``compute_optimal`` (with ``--policy-file`` from ``ponder calibrate``) at
   ``--budgets`` samples;
3. per level and per R: the FLOPs the small model may spend, the largest budget whose measured
   mean FLOPs fits, and compute-optimal's accuracy there against the large model's greedy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

RATIOS = (0.16, 0.79, 22.0)
SMALL_STRATEGIES = ("greedy", "majority", "weighted_best_of_n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large-weights", required=True, help="the larger policy's safetensors file")
    p.add_argument("--policy-file", required=True, help="compute-optimal policy (ponder calibrate)")
    p.add_argument("--n-per-level", type=int, default=40)
    p.add_argument("--budgets", default="1,2,4,8,16,32,64")
    p.add_argument("--ratios", default=",".join(f"{r:g}" for r in RATIOS), help="values of R")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="default runs/bench/exchange-seed<S>")
    return p.parse_args(argv)


def inference_multiplier(m: float, r: float) -> float:
    """How many times the large model's inference FLOPs the small one may spend (see above)."""
    return 1.0 + 3.0 * (m - 1.0) / (m * r)


def per_level_means(results: list[dict[str, Any]]) -> dict[tuple[str, float, int], dict[str, float]]:
    """(strategy label as run, budget, level) -> mean accuracy and mean FLOPs per problem."""
    acc: dict[tuple[str, float, int], list[tuple[float, float]]] = defaultdict(list)
    for r in results:
        if r.get("error"):
            continue
        acc[(r["strategy"], float(r["budget"]), int(r["level"]))].append((float(r["correct"]), r["flops"]))
    return {
        k: {
            "accuracy": sum(c for c, _ in v) / len(v),
            "flops": sum(f for _, f in v) / len(v),
            "n": len(v),
        }
        for k, v in acc.items()
    }


def matched(
    small: dict[tuple[str, float, int], dict[str, float]], label: str, level: int, flops: float
) -> tuple[float | None, dict[str, float] | None]:
    """The largest budget of ``label`` whose mean FLOPs per problem on ``level`` fits ``flops``."""
    fits = [
        (b, cell)
        for (name, b, lv), cell in small.items()
        if name == label and lv == level and cell["flops"] <= flops
    ]
    if not fits:
        return None, None
    return max(fits, key=lambda bc: bc[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from ponder.api import default_models
    from ponder.backends.embedded import EmbeddedGenerator
    from ponder.eval.datasets import load_dataset
    from ponder.eval.identity import models_identity
    from ponder.eval.runner import EvalConfig, RunDir, dataset_config, parse_strategy, policy_hashes, run_eval

    out = Path(args.out or f"runs/bench/exchange-seed{args.seed}")
    budgets = [int(b) for b in args.budgets.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    small_gen, verifier = default_models()
    large_gen = EmbeddedGenerator.load(args.large_weights)
    m = large_gen.num_params / small_gen.num_params
    if m <= 1:
        from ponder.errors import ConfigError

        raise ConfigError(
            f"--large-weights has {large_gen.num_params:,} parameters, not more than the small "
            f"policy's {small_gen.num_params:,}"
        )
    test = load_dataset("builtin", "test", n_per_level=args.n_per_level, seed=args.seed)
    dataset = dataset_config(test, options={"source": "builtin", "split": "test", "seed": args.seed})
    started = time.perf_counter()

    large_cfg = EvalConfig(
        dataset=dataset,
        strategies=[parse_strategy("greedy")],
        budgets=[1],
        seeds=[args.seed],
        models=models_identity(large_gen, None),
    )
    run_eval(large_cfg, out / "large", test, large_gen, None, resume=True, log=log)
    strategies = [parse_strategy(s) for s in SMALL_STRATEGIES] + [
        parse_strategy(f"compute_optimal:policy={args.policy_file}")
    ]
    small_cfg = EvalConfig(
        dataset=dataset,
        strategies=strategies,
        budgets=budgets,
        seeds=[args.seed],
        models=models_identity(small_gen, verifier),
        extra={"policies": policy_hashes(strategies)},
    )
    run_eval(small_cfg, out / "small", test, small_gen, verifier, resume=True, log=log)

    large = per_level_means(RunDir(out / "large").results())
    small = per_level_means(RunDir(out / "small").results())
    co_label = strategies[-1].label
    levels = sorted({lv for (_, _, lv) in large})
    rows = []
    for level in levels:
        big = large[("greedy", 1.0, level)]
        small_greedy = small[("greedy", float(budgets[0]), level)]
        row: dict[str, Any] = {
            "level": level,
            "large_greedy": big["accuracy"],
            "large_greedy_flops": big["flops"],
            "small_greedy": small_greedy["accuracy"],
            "by_ratio": {},
        }
        for r in ratios:
            allowed = big["flops"] * inference_multiplier(m, r)
            entry: dict[str, Any] = {"allowed_flops": allowed}
            for label in [s.label for s in strategies[1:]]:
                budget, cell = matched(small, label, level, allowed)
                entry[label] = None if cell is None else {"budget": budget, **cell}
            row["by_ratio"][f"{r:g}"] = entry
        rows.append(row)
    record = {
        "settings": vars(args),
        "params": {"small": small_gen.num_params, "large": large_gen.num_params, "ratio": m},
        "compute_optimal": co_label,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    (out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(record))
    return record


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(record: dict[str, Any]) -> str:
    p = record["params"]
    co = record["compute_optimal"]
    lines = [
        f"Policies: small {p['small']:,} parameters, large {p['large']:,} ({p['ratio']:.1f}x); "
        f"{record['settings']['n_per_level']} test problems per level, seed {record['settings']['seed']}.",
        "",
        "| level | large greedy % | small greedy % | R | small may spend (x large greedy) "
        "| compute-optimal budget | compute-optimal % | best other strategy % | winner |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        for r, entry in row["by_ratio"].items():
            cell = entry.get(co)
            others = [
                (label, v)
                for label, v in entry.items()
                if label not in ("allowed_flops", co) and v is not None
            ]
            best = max(others, key=lambda lv: lv[1]["accuracy"], default=None)
            co_acc = None if cell is None else cell["accuracy"]
            if co_acc is None:
                winner = "pre-training (no budget fits)"
            elif abs(co_acc - row["large_greedy"]) < 1e-9:
                winner = "tie"
            else:
                winner = "test-time compute" if co_acc > row["large_greedy"] else "pre-training"
            best_text = (
                "-" if best is None else f"{_pct(best[1]['accuracy'])} ({best[0]} @{int(best[1]['budget'])})"
            )
            lines.append(
                f"| L{row['level']} | {_pct(row['large_greedy'])} | {_pct(row['small_greedy'])} | {r} "
                f"| {entry['allowed_flops'] / row['large_greedy_flops']:.2f} "
                f"| {'-' if cell is None else int(cell['budget'])} | {_pct(co_acc)} "
                f"| {best_text} | {winner} |"
            )
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    from ponder.errors import PonderError

    try:
        main()
    except PonderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
