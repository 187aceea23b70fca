"""What ``ponder eval`` and ``ponder calibrate`` do (the CLI in ``ponder.cli`` only parses options)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.eval.datasets import DEFAULT_TEMPLATE, Dataset, load_dataset
from ponder.eval.identity import models_identity
from ponder.eval.runner import (
    EvalConfig,
    GridStrategy,
    RunDir,
    dataset_config,
    parse_strategy,
    policy_hashes,
    run_eval,
)

DEFAULT_STRATEGIES = ("greedy", "majority", "best_of_n", "weighted_best_of_n")


def parse_numbers(text: str, what: str, kind: type = float) -> list[Any]:
    """``"1,2,4"`` -> [1, 2, 4]; a clear error naming ``what`` otherwise."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            value = kind(part)
        except ValueError:
            raise ConfigError(f"{what}: {part!r} is not a {kind.__name__}") from None
        out.append(int(value) if kind is float and float(value).is_integer() else value)
    if not out:
        raise ConfigError(f"{what} is empty")
    return out


DATASET_DEFAULTS: dict[str, Any] = {
    "source": "builtin",
    "split": None,
    "answer_format": "auto",
    "n_per_level": 20,
    "levels": None,
    "limit": None,
    "seed": 0,
    "question_field": None,
    "answer_field": None,
    "prompt_template": DEFAULT_TEMPLATE,
}


def dataset_options(
    dataset: str | None = None,
    split: str | None = None,
    answer_format: str | None = None,
    n_per_level: int | None = None,
    levels: str | None = None,
    limit: int | None = None,
    dataset_seed: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    prompt_template: str | None = None,
) -> dict[str, Any]:
    """The dataset options given on the command line (those left out are not in the dict)."""
    given = {
        "source": dataset,
        "split": split,
        "answer_format": answer_format,
        "n_per_level": n_per_level,
        "levels": parse_numbers(levels, "levels", int) if levels else None,
        "limit": limit,
        "seed": dataset_seed,
        "question_field": question_field,
        "answer_field": answer_field,
        "prompt_template": prompt_template,
    }
    return {k: v for k, v in given.items() if v is not None}


def open_dataset(options: dict[str, Any]) -> Dataset:
    return load_dataset(**{**DATASET_DEFAULTS, **options})


def load_models(backend: str, verifier: str | None) -> tuple[Any, Any]:
    from ponder.api import resolve_generator, resolve_verifier

    return resolve_generator(backend), (resolve_verifier(verifier) if verifier != "none" else None)


def eval_command(
    run_dir: Path,
    *,
    options: dict[str, Any],
    strategies: list[str] | None,
    budgets: str | None,
    unit: str | None,
    seeds: str | None,
    oracle_samples: int | None,
    policy: str | None,
    resume: bool,
    share_samples: bool,
    report: str,
    group_by: str,
    backend: str,
    verifier: str,
    report_only: bool,
    log: Callable[[str], None],
    difficulty_bins: str | None = None,
    ray: str | None = None,
) -> Path | None:
    """Run (or resume) an evaluation grid and write its report. ``ray``: run it on Ray, started in
    this process (``"local"``) or the cluster at an address (``HOST:PORT``)."""
    from ponder.eval.report import write_report

    run = RunDir(run_dir)
    report_policy = policy
    if report_only:
        if report == "none":
            raise ConfigError("--report-only needs a report format (md or html)")
        return write_report(run_dir, report, group_by, policy=report_policy, difficulty_bins=difficulty_bins)
    stored: EvalConfig | None = run.load_config() if resume and run.config_path.is_file() else None
    # Options not given again are those of the run being resumed; options given must match it.
    options = {**DATASET_DEFAULTS, **(stored.dataset.get("options", {}) if stored else {}), **options}
    grid = [parse_strategy(s) for s in strategies] if strategies else None
    if grid is None:
        grid = stored.strategies if stored is not None else [GridStrategy(s) for s in DEFAULT_STRATEGIES]
    if policy is not None:
        with_policy = []
        for s in grid:
            if s.name == "compute_optimal" and "policy" not in s.params:
                s = GridStrategy(s.name, {**s.params, "policy": policy})
            with_policy.append(s)
        if not any(s.name == "compute_optimal" for s in with_policy):
            with_policy.append(GridStrategy("compute_optimal", {"policy": policy}))
        grid = with_policy
    if report_policy is None:
        report_policy = next(
            (s.params["policy"] for s in grid if s.name == "compute_optimal" and s.params.get("policy")), None
        )
    budget_list = (
        parse_numbers(budgets, "budgets") if budgets else (stored.budgets if stored else [1, 2, 4, 8, 16])
    )
    seed_list = parse_numbers(seeds, "seeds", int) if seeds else (stored.seeds if stored else [0])
    unit_name = unit or (stored.budget_unit if stored else "samples")
    oracle = oracle_samples if oracle_samples is not None else (stored.oracle_samples if stored else 0)
    dataset = open_dataset(options)
    config = EvalConfig(  # checked before any model is loaded or Ray started; models filled in below
        dataset=dataset_config(dataset, options=options),
        strategies=grid,
        budgets=budget_list,
        seeds=seed_list,
        models={},
        budget_unit=unit_name,
        oracle_samples=oracle,
        extra={"policies": policy_hashes(grid)},
    )
    if ray is None:
        generator, scorer = load_models(backend, verifier)
        config.models = models_identity(generator, scorer)
        run_eval(
            config, run_dir, dataset, generator, scorer, resume=resume, share_samples=share_samples, log=log
        )
    else:
        from ponder.eval.distributed import ray_session, remote_models_identity, run_eval_ray

        address = None if ray == "local" else ray
        with ray_session(address):  # the workers load the models; this process needs none
            config.models = remote_models_identity(backend, verifier)
            run_eval_ray(
                config, run_dir, dataset, backend, verifier,
                address=address, resume=resume, share_samples=share_samples, log=log,
            )  # fmt: skip
    if report == "none":
        return None
    return write_report(run_dir, report, group_by, policy=report_policy, difficulty_bins=difficulty_bins)


def calibrate_command(
    run_dir: Path,
    *,
    options: dict[str, Any],
    strategies: list[str] | None,
    budgets: str,
    seeds: str,
    out: Path | None,
    bins: int,
    oracle_samples: int,
    probe_samples: int,
    folds: int,
    bins_from: str,
    resume: bool,
    backend: str,
    verifier: str,
    log: Callable[[str], None],
    features: str = "score+length",
    selection: str = "best",
    pipeline: bool = True,
    spend_less: bool = True,
) -> Path:
    from ponder.allocation.calibrate import DEFAULT_CANDIDATES, calibrate

    candidates = [parse_strategy(s) for s in (strategies or DEFAULT_CANDIDATES)]
    dataset = open_dataset({"split": "dev", **options})
    generator, scorer = load_models(backend, verifier)
    if scorer is None:
        raise ConfigError("calibration needs a verifier (its probe is scored)")
    target = out if out is not None else run_dir / "policy.json"
    policy = calibrate(
        run_dir,
        dataset,
        generator,
        scorer,
        candidates,
        [int(b) for b in parse_numbers(budgets, "budgets")],
        parse_numbers(seeds, "seeds", int),
        out=target,
        n_bins=bins,
        oracle_samples=oracle_samples,
        probe_samples=probe_samples,
        folds=folds,
        bins_from=bins_from,
        features=features,
        selection=selection,
        pipeline=pipeline,
        spend_less=spend_less,
        resume=resume,
        log=log,
    )
    for b, row in sorted(policy.table.items()):
        choices = ", ".join(f"{k:g}: {e.label} ({100 * e.cv_accuracy:.0f}%)" for k, e in sorted(row.items()))
        log(f"bin {b}: {choices}")
    agree = policy.calibration.get("predicted_vs_oracle", {})
    if agree:
        log(
            f"predicted vs oracle bins on {agree['n']} problems: exact {100 * agree['exact']:.0f}%, "
            f"within one {100 * agree['within_one']:.0f}%, Spearman {agree['spearman']:.2f}"
        )
    return target


def batch_command(
    out: Path,
    *,
    options: dict[str, Any],
    policy: str,
    total_samples: int,
    seed: int,
    curves: str | None,
    resume: bool,
    backend: str,
    verifier: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``ponder batch``: answer a dataset's questions under one total sample budget
    (:mod:`ponder.allocation.batch`), one JSONL line per answer written as it is made.

    The file's first line is the run's settings and allocation; ``--resume`` continues a file cut
    short (the same settings, or a clear error), answering only what it lacks."""
    import json

    from ponder.allocation.batch import BatchAnswer, BatchPlan, solve_batch, uniform_expected
    from ponder.allocation.policy import load_policy
    from ponder.eval.datasets import answer_format
    from ponder.eval.runner import JsonlWriter, read_jsonl

    if curves not in (None, "coverage", "calibrated"):
        raise ConfigError(f"--curves is coverage or calibrated, got {curves!r}")
    dataset = open_dataset(options)
    generator, scorer = load_models(backend, verifier)
    if scorer is None:
        raise ConfigError("a batch needs a verifier (compute_optimal's probe is scored)")
    loaded = load_policy(policy)
    settings = {
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "policy": policy_hashes([parse_strategy(f"compute_optimal:policy={policy}")]),
        "models": models_identity(generator, scorer),
        "total_samples": total_samples,
        "seed": seed,
        "curves": curves or ("coverage" if loaded.has_coverage_model else "calibrated"),
    }
    rows = read_jsonl(out) if out.exists() else []
    if rows and not resume:
        raise ConfigError(f"{out} already holds answers: pass --resume to continue it, or choose a new file")
    if rows and rows[0].get("settings") != settings:
        recorded = rows[0].get("settings")
        raise ConfigError(
            f"{out} was written by another batch (recorded settings {json.dumps(recorded)[:200]}): "
            "use a new file for a different batch"
        )
    done = {int(r["index"]): r for r in rows[1:] if "index" in r}
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = JsonlWriter(out)
    fmt = answer_format(dataset.answer_format)
    problems = dataset.problems
    started = len(done)

    recorded_plan = None
    if rows and all(k in rows[0] for k in ("caps", "bins", "expected")):
        recorded_plan = BatchPlan(
            caps=[int(c) for c in rows[0]["caps"]],
            bins=[int(b) for b in rows[0]["bins"]],
            expected=[float(e) for e in rows[0]["expected"]],
            total=total_samples,
            probe_samples=loaded.predictor.probe_samples,
            curves=settings["curves"],
        )

    def on_plan(plan: BatchPlan) -> None:
        if recorded_plan is None:
            header = {"settings": settings, "caps": plan.caps, "bins": plan.bins}
            writer.write(header | {"expected": plan.expected})
        log(
            f"allocated {plan.allocated} of {plan.total} samples over {len(plan.caps)} questions "
            f"({plan.curves} curves); answering {len(plan.caps) - started}"
        )

    def on_answer(a: BatchAnswer) -> None:
        p = problems[a.index]
        row = {
            "index": a.index,
            "problem": p.id,
            "question": p.question,
            "answer": None if a.answer is None else str(a.answer),
            "gold": p.answer,
            "correct": fmt.is_correct(a.answer, p.answer),
            "level": p.level,
            "predicted_bin": a.predicted_bin,
            "cap": a.cap,
            "expected_accuracy": a.expected_accuracy,
            "chosen": a.chosen,
            "samples": a.compute.samples,
            "tokens": a.compute.policy_tokens + a.compute.verifier_tokens,
            "flops": a.compute.total_flops,
            "seconds": a.compute.wall_seconds,
        }
        done[a.index] = row
        writer.write(row)
        log(f"answered {len(done)}/{len(problems)}: {p.id} (cap {a.cap}, spent {a.compute.samples})")

    try:
        with fmt.strategy_context():
            plan, _ = solve_batch(
                [p.prompt for p in problems],
                generator,
                scorer,
                policy,
                total_samples,
                seed=seed,
                curves=curves,
                on_plan=on_plan,
                on_answer=on_answer,
                skip=set(done),
                plan=recorded_plan,
            )
    finally:
        writer.close()
    answered = [done[i] for i in sorted(done)]
    return {
        "file": str(out),
        "questions": len(problems),
        "total_samples": total_samples,
        "allocated": plan.allocated,
        "spent_samples": sum(int(r["samples"]) for r in answered),
        "accuracy": sum(bool(r["correct"]) for r in answered) / len(answered),
        "expected_accuracy": sum(plan.expected) / len(plan.expected),
        "expected_uniform": uniform_expected(plan, loaded),
        "gflops": sum(float(r["flops"]) for r in answered) / 1e9,
        "curves": plan.curves,
    }
