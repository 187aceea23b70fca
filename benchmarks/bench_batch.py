"""One total budget over a batch, run for real: ``solve_batch`` vs. the same total split evenly.

For each draw of held-out test problems (the built-in task, ``--per-level`` per level) and each
mean budget ``m`` (``--mean-budgets``), the batch of all the draw's problems gets a total of
``m`` x problems samples:

  uniform      every question runs ``compute_optimal`` capped at ``m``
  coverage     ``solve_batch``: probe all, allocate on the policy's coverage-model curves, answer
  calibrated   the same on the raw calibrated curves

Reported: accuracy, samples spent (always <= the total), GFLOPs per question. The policy file must
come from a calibration of the embedded models that records oracle counts (``ponder calibrate`` or
``bench_compute_optimal.py``; e.g. ``runs/bench/co256p/calibrate/policy.json``). Each (draw, mean
budget, arm) is one line of ``--out``/results.jsonl, written when done: rerun to resume.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_batch.py --policy runs/bench/co256p/calibrate/policy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("uniform", "coverage", "calibrated")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, help="policy file with oracle counts")
    p.add_argument("--draws", default="18,19,20", help="test draws (dataset seeds), comma-separated")
    p.add_argument("--per-level", type=int, default=12, help="test problems per level in a draw")
    p.add_argument("--mean-budgets", default="8,16,32,64", help="mean samples per question")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench/batch", help="output directory")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_arm(
    arm: str, problems: list[Any], total: int, mean: int, args: argparse.Namespace, models: Any
) -> dict:
    from ponder.allocation.batch import solve_batch
    from ponder.eval.datasets import answer_format
    from ponder.strategies.budget import Budget
    from ponder.strategies.compute_optimal import ComputeOptimal

    generator, verifier = models
    prompts = [p.prompt for p in problems]
    started = time.perf_counter()
    if arm == "uniform":
        strategy = ComputeOptimal(policy=args.policy)
        results = [strategy.run(q, generator, verifier, Budget(samples=mean), args.seed) for q in prompts]
        answers = [r.answer for r in results]
        computes = [r.compute for r in results]
        caps = [mean] * len(prompts)
    else:
        plan, done = solve_batch(prompts, generator, verifier, args.policy, total, seed=args.seed, curves=arm)
        answers = [a.answer for a in done]
        computes = [a.compute for a in done]
        caps = plan.caps
    fmt = answer_format("arithmetic")
    correct = [fmt.is_correct(a, p.answer) for a, p in zip(answers, problems)]
    return {
        "accuracy": sum(correct) / len(correct),
        "correct": correct,
        "levels": [p.level for p in problems],
        "caps": caps,
        "spent_samples": sum(c.samples for c in computes),
        "gflops_per_question": sum(c.total_flops for c in computes) / len(computes) / 1e9,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from ponder.allocation.policy import load_policy
    from ponder.api import default_models
    from ponder.errors import ConfigError
    from ponder.eval.datasets import load_dataset

    policy = load_policy(args.policy)
    if not policy.has_coverage_model:
        raise ConfigError(f"{args.policy} records no oracle counts: recalibrate it with this ponder")
    models = default_models()
    policy.check_models(*models, args.policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["draw"], r["mean_budget"], r["arm"]) for r in rows}
    draws = [int(d) for d in args.draws.split(",") if d.strip()]
    means = [int(m) for m in args.mean_budgets.split(",") if m.strip()]
    with path.open("a") as f:
        for draw in draws:
            problems = list(load_dataset("builtin", "test", n_per_level=args.per_level, seed=draw).problems)
            for mean in means:
                for arm in ARMS:
                    if (draw, mean, arm) in done:
                        continue
                    total = mean * len(problems)
                    row = {"draw": draw, "mean_budget": mean, "arm": arm, "total": total}
                    row |= run_arm(arm, problems, total, mean, args, models)
                    log(
                        f"draw {draw} mean {mean} {arm}: {100 * row['accuracy']:.1f}%, "
                        f"{row['spent_samples']}/{total} samples, {row['seconds']:.0f} s"
                    )
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    rows.append(row)
    print(markdown(rows, draws, means, args))
    return rows


def markdown(rows: list[dict], draws: list[int], means: list[int], args: argparse.Namespace) -> str:
    lines = [
        f"- command: `PYTHONPATH=src .venv/bin/python benchmarks/bench_batch.py --policy {args.policy} "
        f"--draws {args.draws} --per-level {args.per_level} --mean-budgets {args.mean_budgets} "
        f"--seed {args.seed}`",
        "",
        "| mean budget | arm | accuracy % (all draws) | per draw | samples spent / total "
        "| GFLOPs per question |",
        "|---|---|---|---|---|---|",
    ]
    for mean in means:
        for arm in ARMS:
            sel = [r for r in rows if r["mean_budget"] == mean and r["arm"] == arm and r["draw"] in draws]
            if not sel:
                continue
            n = sum(len(r["correct"]) for r in sel)
            acc = sum(sum(r["correct"]) for r in sel) / n
            per = " / ".join(f"{100 * r['accuracy']:.1f}" for r in sel)
            spent = sum(r["spent_samples"] for r in sel)
            total = sum(r["total"] for r in sel)
            gflops = sum(r["gflops_per_question"] * len(r["correct"]) for r in sel) / n
            lines.append(f"| {mean} | {arm} | {100 * acc:.1f} | {per} | {spent} / {total} | {gflops:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from ponder.errors import PonderError

    try:
        main()
    except PonderError as exc:
        sys.exit(f"error: {exc}")
