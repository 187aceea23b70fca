"""Compute-optimal test-time scaling vs. best-of-N, and a global budget vs. a uniform split.

One command reproduces the comparisons of benchmarks/RESULTS.md, on the embedded models:

1. **Calibrate** (``ponder calibrate``) on the built-in dev split: the candidate strategies (greedy,
   best-of-N, beam search, DVTS, adaptive best-of-N) at every budget, each run after
   compute_optimal's probe (``--standalone``: alone), oracle difficulty from 32 samples per
   problem, the probe-based difficulty predictor (probe score and sample length), the
   cross-validated choice per predicted bin and budget, at that budget or a smaller one
   (``--spend-all``: at that budget) -> a policy file.
2. **Evaluate** (``ponder eval``) on held-out test problems: best-of-N, weighted best-of-N,
   majority and compute_optimal (with that policy) at budgets 1..64 samples, two seeds, oracle
   difficulty bins for the report.
3. **Report**: the compute compute-optimal needs to reach best-of-N's best accuracy (as a budget in
   samples, and as FLOPs actually spent; goal >= 6x fewer FLOPs), how its predicted difficulty
   agrees with the oracle bins, and the batch accuracy of a global budget allocated by marginal
   gain vs. the same total split evenly.

With ``--draws 0,1,2`` one calibration is evaluated on several draws of test problems, each in its
own directory, and the comparisons are also made on all draws pooled, with the paired difference
between compute-optimal and best-of-N's best (a bootstrap interval over the shared results).

``--baseline-budgets`` gives the baselines their own budgets (e.g. up to 128 while compute_optimal's
caps go to 256): a budget is a cap, and the comparison is on FLOPs actually spent, so
compute_optimal may be given a cap that best-of-N, which spends its whole budget, could not afford.

Both runs are resumable: rerun the same command after an interruption. A different grid needs a
different ``--out``. Everything is deterministic given ``--seed`` (which also draws the problems).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_compute_optimal.py [--seed 0] [--draws 0,1,2] [--quick]

With 1 thread on a 2-core machine shared with another job: ~11 min calibration, ~8 min per test
draw (~10 with ``--accept``). ``--quick`` (a smoke test of the whole pipeline) takes under a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Adaptive best-of-N with a futility stop (give_up) is not among them: on the dev split it ties the
# plain one at every budget and wins on compute, so calibration picks it, but on test problems it
# gives up on the hard questions whose first right sample comes late (RESULTS.md).
CANDIDATES = ("greedy", "best_of_n", "beam_search:beam_width=4", "dvts:branching=4", "adaptive_best_of_n")
BASELINES = ("majority", "best_of_n", "weighted_best_of_n")
GOAL = 6.0
DEFAULT_BUDGETS = "1,2,4,8,16,32,64"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="draws the problems and seeds every run (default 0)")
    p.add_argument(
        "--out", default=None, help="output directory (default runs/bench/compute_optimal-seed<S>)"
    )
    p.add_argument("--dev-per-level", type=int, default=12, help="dev problems per level for calibration")
    p.add_argument("--test-per-level", type=int, default=12, help="held-out test problems per level")
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="generation budgets N (powers of two)")
    p.add_argument(
        "--baseline-budgets",
        default=None,
        help="the baselines' budgets on the test problems (default --budgets). Other budgets run the "
        "baselines and compute_optimal in two run directories of one draw, <draw>/baselines and "
        "<draw>/compute_optimal",
    )
    p.add_argument("--test-seeds", type=int, default=2, help="seeds of the test grid (default 2)")
    p.add_argument("--oracle-samples", type=int, default=32, help="samples per problem for pass@1 bins")
    p.add_argument("--probe-samples", type=int, default=4, help="compute_optimal's probe samples")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the calibration")
    p.add_argument("--candidates", default=";".join(CANDIDATES), help="calibration candidates, ; separated")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument(
        "--test-seed",
        type=int,
        default=None,
        help="draws the test problems (default --seed): a fresh draw checks a change made after a run",
    )
    p.add_argument(
        "--draws",
        default=None,
        help="several test draws, comma-separated seeds (e.g. 0,1,2): one calibration, each draw "
        "evaluated in its own directory, the comparisons per draw and pooled over all of them",
    )
    p.add_argument(
        "--accept",
        type=float,
        default=None,
        help="also run compute_optimal with accept=X (a probe sample scoring >= X answers at once)",
    )
    p.add_argument(
        "--difficulty-features",
        default="score+length",
        choices=["score", "score+length"],
        help="what predicts difficulty: the probe's mean score, or score and sample length",
    )
    p.add_argument(
        "--selection",
        default="best",
        choices=["best", "one-se"],
        help="calibration's rule: the most accurate candidate, or the cheapest within one standard error",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="calibrate each candidate run alone, not after compute_optimal's probe (the default)",
    )
    p.add_argument(
        "--spend-all",
        action="store_true",
        help="every bin spends its whole budget (default: it may stop at a smaller budget that did as well)",
    )
    p.add_argument(
        "--backend",
        default="embedded",
        help="the policy (a backend spec, e.g. embedded+reviser to calibrate revision too)",
    )
    p.add_argument(
        "--verifier",
        default="embedded",
        help="the verifier (a verifier spec, e.g. embedded+orders with --backend embedded+orders)",
    )
    p.add_argument(
        "--calibrate-only", action="store_true", help="stop after the calibration (its policy file is kept)"
    )
    p.add_argument("--quick", action="store_true", help="a tiny grid: checks the pipeline in under a minute")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.quick:
        args.dev_per_level, args.test_per_level, args.budgets = 2, 2, "1,2,4,8"
        args.test_seeds, args.oracle_samples, args.folds = 1, 8, 2
    import torch

    torch.set_num_threads(args.threads)
    from ponder.allocation.calibrate import calibrate
    from ponder.allocation.policy import load_policy
    from ponder.api import default_models
    from ponder.eval.datasets import load_dataset
    from ponder.eval.identity import models_identity
    from ponder.eval.report import cells, compute_optimal_vs, write_report
    from ponder.eval.runner import EvalConfig, RunDir, dataset_config, parse_strategy, policy_hashes, run_eval
    from ponder.training.weights import policy_path

    out = Path(args.out or f"runs/bench/compute_optimal-seed{args.seed}" + ("-quick" if args.quick else ""))
    budgets = parse_budgets(args.budgets)
    generator, verifier = default_models()
    if args.backend != "embedded":
        from ponder.backends.spec import load_generator

        generator = load_generator(args.backend)
    if args.verifier != "embedded":
        from ponder.verifiers.spec import load_verifier

        verifier = load_verifier(args.verifier)
    started = time.perf_counter()

    # 1. Calibration on dev problems.
    dev = load_dataset("builtin", "dev", n_per_level=args.dev_per_level, seed=args.seed)
    candidates = [parse_strategy(s) for s in args.candidates.split(";") if s.strip()]
    t0 = time.perf_counter()
    cal_dir = out / "calibrate"
    policy = calibrate(
        cal_dir,
        dev,
        generator,
        verifier,
        candidates,
        budgets,
        [args.seed],
        n_bins=5,
        oracle_samples=args.oracle_samples,
        probe_samples=args.probe_samples,
        folds=args.folds,
        features=args.difficulty_features,
        selection=args.selection,
        pipeline=not args.standalone,
        spend_less=not args.spend_all,
        resume=True,
        log=log,
    )
    policy_file = cal_dir / "policy.json"
    calibrate_s = time.perf_counter() - t0
    if args.calibrate_only:
        log(f"calibration done in {calibrate_s / 60:.1f} min: {policy_file}")
        return {"policy": str(policy_file), "seconds": {"calibrate": calibrate_s}}

    # 2. Held-out test problems: one draw, or several evaluated one after another.
    contenders = [f"compute_optimal:policy={policy_file}"]
    if args.accept is not None:
        contenders.append(f"compute_optimal:policy={policy_file},accept={args.accept:g}")
    strategies = [parse_strategy(s) for s in (*BASELINES, *contenders)]
    baseline_budgets = budgets if args.baseline_budgets is None else parse_budgets(args.baseline_budgets)
    # One run directory per draw; two when the baselines' budgets differ from compute_optimal's.
    if baseline_budgets == budgets:
        grids = [("", strategies, budgets)]
    else:
        grids = [
            ("baselines", strategies[: len(BASELINES)], baseline_budgets),
            ("compute_optimal", strategies[len(BASELINES) :], budgets),
        ]
    t0 = time.perf_counter()
    draws = []
    for i, test_seed in enumerate(test_draws(args)):
        test = load_dataset("builtin", "test", n_per_level=args.test_per_level, seed=test_seed)
        # The first draw keeps the directory a single-draw run uses, so either can resume the other.
        draw_dir = out / ("test" if i == 0 else f"test-draw{test_seed}")
        runs = []
        for sub, grid_strategies, grid_budgets in grids:
            config = EvalConfig(
                dataset=dataset_config(
                    test, options={"source": "builtin", "split": "test", "seed": test_seed}
                ),
                strategies=grid_strategies,
                budgets=grid_budgets,
                seeds=[args.seed + j for j in range(args.test_seeds)],
                models=models_identity(generator, verifier),
                oracle_samples=args.oracle_samples,
                extra={"policies": policy_hashes(grid_strategies)},
            )
            run_dir = draw_dir / sub if sub else draw_dir
            log(f"test draw {test_seed}: {run_dir}")
            run = run_eval(config, run_dir, test, generator, verifier, resume=True, log=log)
            write_report(run.path, policy=str(policy_file))
            runs.append(run)
        draws.append((test_seed, runs))
    eval_s = time.perf_counter() - t0

    # 3. The comparisons, per draw and (with several draws) pooled.
    label = strategies[-1].label
    loaded = load_policy(policy_file)
    per_draw = [comparisons(runs, label, loaded, budgets) | {"test_seed": s} for s, runs in draws]
    pooled = None
    if len(draws) > 1:
        # Problem ids are made unique per draw: two draws may hold the same problem, and each of
        # its results counts once per draw, as in the draws' own tables.
        results = [
            {**r, "problem": f"draw{s}/{r['problem']}"}
            for s, runs in draws
            for run in runs
            for r in RunDir(run.path).results()
        ]
        pooled = {
            "test_seeds": [s for s, _ in draws],
            "compute_optimal_vs_best_of_n": compute_optimal_vs(results, cells(results)),
            "accuracy_by_budget": accuracy_by_budget(results),
            "paired": paired_at_best(results),
        }
    total_s = time.perf_counter() - started
    record = {
        "settings": vars(args),
        "model": {
            "policy_weights": str(policy_path()) if args.backend == "embedded" else args.backend,
            **models_identity(generator, verifier),
        },
        "policy": {
            str(b): {f"{k:g}": e.label for k, e in sorted(row.items())}
            for b, row in sorted(policy.table.items())
        },
        "calibration": policy.calibration,
        **{k: v for k, v in per_draw[0].items() if k != "test_seed"},
        "draws": per_draw,
        "pooled": pooled,
        "seconds": {"calibrate": calibrate_s, "eval": eval_s, "total": total_s},
    }
    (out / "bench.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(markdown(record, args))
    return record


def test_draws(args: argparse.Namespace) -> list[int]:
    """The test draws' seeds: ``--draws``, else ``--test-seed``, else ``--seed``."""
    from ponder.errors import ConfigError

    if args.draws is None:
        return [args.seed if args.test_seed is None else args.test_seed]
    if args.test_seed is not None:
        raise ConfigError("give --draws or --test-seed, not both")
    try:
        seeds = [int(s) for s in args.draws.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--draws takes comma-separated integer seeds, got {args.draws!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--draws needs distinct seeds, got {args.draws!r}")
    return seeds


def parse_budgets(text: str) -> list[int]:
    """Comma-separated sample budgets."""
    from ponder.errors import ConfigError

    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"budgets are comma-separated integers, got {text!r}") from None
    if not budgets or min(budgets) < 1:
        raise ConfigError(f"budgets must be positive integers, got {text!r}")
    return budgets


def comparisons(runs: list[Any], label: str, policy: Any, budgets: list[int]) -> dict[str, Any]:
    """One draw's comparisons (its run directories' results together): compute to match
    best-of-N, global vs. uniform, predicted bins."""
    from ponder.allocation.global_budget import global_vs_uniform
    from ponder.eval.report import cells, compute_optimal_vs
    from ponder.eval.runner import RunDir

    results = [r for run in runs for r in RunDir(run.path).results()]
    return {
        "compute_optimal_vs_best_of_n": compute_optimal_vs(results, cells(results)),
        # The allocator on the coverage model (when the policy records oracle counts) and on the
        # raw calibrated curves, side by side.
        "global_vs_uniform": global_vs_uniform(results, policy, label, budgets),
        "global_vs_uniform_calibrated": (
            global_vs_uniform(results, policy, label, budgets, curves="calibrated")
            if policy.has_coverage_model
            else None
        ),
        "predicted_vs_oracle": _agreement(results, runs[-1]),
        "reports": [str(run.path / "report.md") for run in runs],
    }


def accuracy_by_budget(results: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per strategy and budget, over all results: [accuracy, mean FLOPs per problem]."""
    from ponder.eval.report import ALL, cells

    out: dict[str, dict[str, list[float]]] = {}
    for c in cells(results):
        if c.group == ALL:
            out.setdefault(c.strategy, {})[f"{c.budget:g}"] = [c.accuracy, c.mean_flops]
    return out


def paired_at_best(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each compute_optimal run at its largest budget minus each best-of-N baseline at its most
    accurate budget, paired over the same (problem, seed) results, with a 95% bootstrap interval:
    whether a gap of a result or two between them is more than noise."""
    from ponder.eval.metrics import paired_difference

    correct: dict[str, dict[float, dict[str, bool]]] = {}
    for r in results:
        by_budget = correct.setdefault(r["strategy"], {})
        by_budget.setdefault(float(r["budget"]), {})[f"{r['problem']}@{r['seed']}"] = bool(r["correct"])
    out = []
    for label in sorted(s for s in correct if s.startswith("compute_optimal")):
        top = max(correct[label])
        for baseline in (b for b in BASELINES if b in correct and b != "majority"):
            curve = correct[baseline]
            best = max(sorted(curve), key=lambda b: sum(curve[b].values()))  # ties: the smaller budget
            diff, lo, hi, n = paired_difference(correct[label][top], curve[best])
            out.append(
                {
                    "contender": label,
                    "contender_budget": top,
                    "baseline": baseline,
                    "baseline_budget": best,
                    "difference": diff,
                    "lo": lo,
                    "hi": hi,
                    "n": n,
                }
            )
    return out


def _agreement(results: list[dict[str, Any]], run: Any) -> dict[str, Any] | None:
    from ponder.eval.report import predicted_vs_oracle
    from ponder.eval.runner import bins_from_difficulty

    agree = predicted_vs_oracle(results, bins_from_difficulty(run.difficulty()))
    if agree is None:
        return None
    return {"n": agree.n, "exact": agree.exact, "within_one": agree.within_one, "spearman": agree.spearman}


def match_rows(matches: list[dict[str, Any]], first: str = "") -> list[str]:
    """Table rows: the compute compute-optimal needs to reach each baseline's best accuracy."""
    rows = []
    for m in matches:
        b, f = m["budget"], m["flops"]
        reached = f"{b['contender_compute']:g}" if b["contender_compute"] else "not reached"
        by_samples = f"{b['ratio']:.2f}x" if b["ratio"] else "-"
        by_flops = f"{f['ratio']:.2f}x" if f["ratio"] else "-"
        # The goal is on compute spent: a budget is a cap, and compute-optimal spends far less than
        # its cap where the probe says more samples would not pay (best-of-N always spends it all).
        goal = "met" if f["ratio"] and f["ratio"] >= GOAL else "not met"
        accept = [p for p in m["contender"].split(":", 1)[1].split(",") if p.startswith("accept=")]
        contender = accept[0] if accept else "policy only"
        rows.append(
            f"| {first}{contender} | {m['baseline']} | {100 * b['target']:.1f} | {b['baseline_compute']:g} | "
            f"{reached} | {by_samples} | {by_flops} | {goal} |"
        )
    return rows


def markdown(record: dict[str, Any], args: argparse.Namespace) -> str:
    several = len(record["draws"]) > 1
    lines = [
        f"- command: `PYTHONPATH=src .venv/bin/python benchmarks/bench_compute_optimal.py --seed {args.seed}"
        + ("" if args.test_seed is None else f" --test-seed {args.test_seed}")
        + ("" if args.draws is None else f" --draws {args.draws}")
        + ("" if args.accept is None else f" --accept {args.accept:g}")
        + ("" if args.budgets == DEFAULT_BUDGETS else f" --budgets {args.budgets}")
        + ("" if args.baseline_budgets is None else f" --baseline-budgets {args.baseline_budgets}")
        + f" --dev-per-level {args.dev_per_level} --candidates {args.candidates!r}"
        + f" --difficulty-features {args.difficulty_features}"
        + ("" if args.selection == "best" else f" --selection {args.selection}")
        + (" --standalone" if args.standalone else "")
        + (" --spend-all" if args.spend_all else "")
        + ("" if args.backend == "embedded" else f" --backend {args.backend}")
        + ("" if args.verifier == "embedded" else f" --verifier {args.verifier}")
        + (" --quick" if args.quick else "")
        + "`",
        f"- models: policy {record['model']['policy']}, verifier {record['model']['verifier']}",
        f"- calibration: {args.dev_per_level} dev problems per level, budgets {args.budgets}, "
        f"{args.oracle_samples} oracle samples, {args.folds}-fold CV; test: {args.test_per_level} problems "
        f"per level x {args.test_seeds} seed(s)"
        + (f" x {len(record['draws'])} draws" if several else "")
        + ("" if args.baseline_budgets is None else f"; baselines at budgets {args.baseline_budgets}"),
        f"- time: calibrate {record['seconds']['calibrate'] / 60:.1f} min, evaluate "
        f"{record['seconds']['eval'] / 60:.1f} min, {args.threads} thread(s)",
        "",
        f"| {'draw: ' if several else ''}compute-optimal | vs | best accuracy % | its budget "
        "| compute-optimal's budget | smaller budget (samples) | less compute (FLOPs spent) "
        "| goal >= 6x less compute |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for draw in record["draws"]:
        lines += match_rows(draw["compute_optimal_vs_best_of_n"], f"{draw['test_seed']}: " if several else "")
    pooled = record["pooled"]
    if pooled is not None:
        lines += match_rows(pooled["compute_optimal_vs_best_of_n"], "**pooled**: ")
        by = pooled["accuracy_by_budget"]
        names = sorted(by, key=lambda n: (n.startswith("compute_optimal"), n))
        budgets = sorted({b for n in names for b in by[n]}, key=float)
        lines += [
            "",
            f"Pooled over draws {', '.join(map(str, pooled['test_seeds']))}: accuracy % (GFLOPs per problem)",
            "",
            "| budget | " + " | ".join(_short(n) for n in names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for b in budgets:
            cells = [
                f"{100 * by[n][b][0]:.1f} ({by[n][b][1] / 1e9:.2f})" if b in by[n] else "-" for n in names
            ]
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        lines += ["", "Paired over the same results (problem, seed), 95% bootstrap interval:", ""]
        for d in pooled["paired"]:
            lines.append(
                f"- {_short(d['contender'])} at {d['contender_budget']:g} minus {d['baseline']} at "
                f"{d['baseline_budget']:g}: {100 * d['difference']:+.1f} points "
                f"[{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] over {d['n']} results"
            )
    lines += global_rows(record["draws"], several)
    for draw in record["draws"]:
        agree = draw["predicted_vs_oracle"]
        if agree:
            lines += [
                "",
                (f"Draw {draw['test_seed']}: p" if several else "P")
                + f"redicted difficulty (probe of {args.probe_samples} samples, counted in the budget) vs. "
                f"oracle bins on {agree['n']} test problems: exact {100 * agree['exact']:.0f}%, within one "
                f"bin {100 * agree['within_one']:.0f}%, Spearman {agree['spearman']:.2f}.",
            ]
    lines.append("\nFull reports: " + ", ".join(f"`{r}`" for d in record["draws"] for r in d["reports"]))
    return "\n".join(lines)


def global_rows(draws: list[dict[str, Any]], several: bool) -> list[str]:
    """Global allocation vs. a uniform split, per draw and mean budget (and, with several draws, the
    mean over draws), on the curves the allocator used; with a coverage model, the raw calibrated
    curves' allocation beside it."""
    both = all(d.get("global_vs_uniform_calibrated") for d in draws)
    model = draws[0]["global_vs_uniform"][0]["curves"] if draws and draws[0]["global_vs_uniform"] else "-"
    head = f"| {'draw | ' if several else ''}mean budget (samples) | uniform split acc % "
    head += f"| global ({model}) acc % | gain"
    head += " | global (calibrated) acc % | gain |" if both else " |"
    lines = ["", head, "|---" * (head.count("|") - 1) + "|"]

    def row(draw_label: str, m: float, uni: float, glob: float, cal: float | None) -> str:
        text = f"{draw_label}| {m:g} | {100 * uni:.1f} | {100 * glob:.1f} | {100 * (glob - uni):+.1f} |"
        return text + (f" {100 * cal:.1f} | {100 * (cal - uni):+.1f} |" if cal is not None else "")

    sums: dict[float, list[float]] = {}
    for draw in draws:
        cal = {a["mean_budget"]: a["global"] for a in draw.get("global_vs_uniform_calibrated") or []}
        for a in draw["global_vs_uniform"]:
            m = a["mean_budget"]
            c = cal.get(m) if both else None
            lines.append(row(f"| {draw['test_seed']} " if several else "", m, a["uniform"], a["global"], c))
            acc = sums.setdefault(m, [0.0, 0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += a["uniform"]
            acc[2] += a["global"]
            acc[3] += c or 0.0
    if several:
        for m, (n, uni, glob, cal) in sorted(sums.items()):
            lines.append(row("| **mean** ", m, uni / n, glob / n, cal / n if both else None))
    return lines


def _short(label: str) -> str:
    """A column name: compute_optimal's policy path dropped."""
    if not label.startswith("compute_optimal"):
        return label
    params = [p for p in label.partition(":")[2].split(",") if p and not p.startswith("policy=")]
    return "compute_optimal" + (f" ({', '.join(params)})" if params else "")


if __name__ == "__main__":
    from ponder.errors import PonderError

    try:
        main()
    except PonderError as exc:  # bad options or a run directory of another grid: one clear line
        sys.exit(f"error: {exc}")
