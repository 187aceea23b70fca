"""Calibrating the compute-optimal policy on a dev split (``ponder calibrate``).

1. Run the candidate grid (strategies x hyper-parameters x budgets x seeds) on the dev problems
   with the evaluation harness, in ``<run_dir>/grid`` (resumable; oracle pass@1 measured too).
   By default (``pipeline=True``) each candidate runs as ``compute_optimal`` would run it: probe
   first (paid from the budget), then the candidate on what is left, reusing the probe's samples
   where it can (``compute_optimal:choice=...``). So a candidate is measured by what it adds after
   the probe: adaptive best-of-N, which answers from a confident probe sample for nothing more,
   is not charged for samples it would never draw, and greedy decoding is charged for the probe it
   cannot use. ``pipeline=False`` measures each candidate run alone, from scratch.
2. Probe every dev problem as the ``compute_optimal`` strategy would (``probes.jsonl``), fit the
   difficulty predictor (``features``: the probe's mean score, or score and sample length) to the
   oracle bins, and bin the problems: by their predicted
   bin (the default: the policy is then chosen for the bins it will see at test time, prediction
   errors included) or by their oracle bin.
3. For each bin and budget, choose a candidate by k-fold cross-validation over problems: in each
   fold the candidate with the best accuracy on the other folds is chosen (ties: less compute) and
   scored on the held-out fold; with ``selection="one-se"``, the cheapest candidate whose accuracy
   there is within one standard error of the best (the one-standard-error rule: a more expensive
   choice must win by more than the noise of a few dev problems). The policy keeps the candidate
   chosen in most folds (ties: best accuracy on all the bin's problems, then less compute), and
   records the held-out accuracy of the selection rule (``cv_accuracy``), an honest estimate of
   what the choice is worth: choosing by accuracy on the same problems would be fit to their noise.
   With ``spend_less`` (the default) the candidates at a budget are every candidate at that budget
   *or any smaller one*: a budget is a cap, and where a bin gains nothing from more samples (a
   question no sample solves, an easy one solved at once) the cheaper run wins the tie. The entry
   then records the budget to spend (``budget``), and compute_optimal stops there.
4. Save the policy file with the models' weight hashes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.allocation.difficulty import (
    FEATURES,
    DifficultyPredictor,
    fit_predictor,
    oracle_bins,
    run_probe,
)
from ponder.allocation.policy import Policy, PolicyEntry
from ponder.backends.base import Generator
from ponder.errors import ConfigError
from ponder.eval.datasets import Dataset
from ponder.eval.identity import models_identity
from ponder.eval.runner import (
    EvalConfig,
    GridStrategy,
    JsonlWriter,
    dataset_config,
    read_jsonl,
    run_eval,
    run_seed,
)
from ponder.strategies.budget import Budget, BudgetTracker, derive_seed
from ponder.strategies.registry import format_label
from ponder.verifiers.base import Verifier

DEFAULT_CANDIDATES = (
    "majority",
    "best_of_n",
    "weighted_best_of_n",
    "beam_search:beam_width=4",
    "dvts:branching=4",
)


@dataclass(frozen=True)
class CandidateStats:
    """One candidate at one budget: per-problem accuracy (mean over seeds) and mean compute."""

    accuracy: dict[str, float]
    samples: dict[str, float]
    tokens: dict[str, float]
    flops: dict[str, float]
    seconds: dict[str, float]


def _folds(ids: list[str], k: int) -> list[list[str]]:
    order = sorted(ids, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    return [order[i::k] for i in range(k)]


def _mean(values: dict[str, float], ids: list[str]) -> float:
    return sum(values[p] for p in ids) / len(ids) if ids else 0.0


SELECTIONS = ("best", "one-se")


def _standard_error(values: dict[str, float], ids: list[str]) -> float:
    if len(ids) < 2:
        return 0.0
    mean = _mean(values, ids)
    variance = sum((values[p] - mean) ** 2 for p in ids) / (len(ids) - 1)
    return (variance / len(ids)) ** 0.5


def choose(
    stats: dict[str, CandidateStats], ids: list[str], folds: int, selection: str = "best"
) -> tuple[str, float, float, dict[str, int]]:
    """The candidate for one (bin, budget): (label, accuracy on ``ids``, cross-validated accuracy of
    the selection rule, folds that chose each candidate)."""
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    usable = {c: s for c, s in stats.items() if all(p in s.accuracy for p in ids)}
    if not usable:
        raise ConfigError("no candidate has results for every problem of a bin")

    def best(train: list[str]) -> str:
        top = max(
            sorted(usable), key=lambda c: (_mean(usable[c].accuracy, train), -_mean(usable[c].flops, train))
        )
        if selection == "best":
            return top
        floor = _mean(usable[top].accuracy, train) - _standard_error(usable[top].accuracy, train)
        near = [c for c in sorted(usable) if _mean(usable[c].accuracy, train) >= floor - 1e-12]
        return min(near, key=lambda c: (_mean(usable[c].flops, train), -_mean(usable[c].accuracy, train)))

    k = min(folds, len(ids))
    chosen: dict[str, int] = defaultdict(int)
    if k < 2:
        pick = best(ids)
        acc = _mean(usable[pick].accuracy, ids)
        return pick, acc, acc, {pick: 1}
    held_out = 0.0
    for fold in _folds(ids, k):
        train = [p for p in ids if p not in set(fold)]
        pick = best(train)
        chosen[pick] += 1
        held_out += sum(usable[pick].accuracy[p] for p in fold)
    final = max(
        sorted(chosen),
        key=lambda c: (chosen[c], _mean(usable[c].accuracy, ids), -_mean(usable[c].flops, ids)),
    )
    return final, _mean(usable[final].accuracy, ids), held_out / len(ids), dict(chosen)


def choose_at_budget(
    stats: dict[tuple[str, float], CandidateStats],
    ids: list[str],
    budget: float,
    folds: int,
    selection: str = "best",
    spend_less: bool = True,
    floor: float = 1.0,
) -> tuple[str, float, float, float, int] | None:
    """The choice for one (bin, budget) among the grid's (candidate, budget) runs: at ``budget``
    only, or with ``spend_less`` at it or any smaller budget down to ``floor`` (compute_optimal's
    probe size: below it the probe itself is smaller than at test time, where it must be whole to
    predict the bin). Returns (candidate label, the budget it ran at, accuracy, cross-validated
    accuracy, folds that chose it), or None when no run has results for every problem."""
    lowest = min(budget, floor) if spend_less else budget
    runs = {
        key: s for key, s in stats.items() if lowest <= key[1] <= budget and all(p in s.accuracy for p in ids)
    }
    # A candidate that did exactly the same at a smaller budget (the cap never bound) keeps only
    # its largest budget: there is no evidence for a cap, and a test question may need more.
    for label, b in sorted(runs, key=lambda k: (k[0], -k[1])):
        larger = [k for k in runs if k[0] == label and k[1] > b]
        if any(_same_run(runs[k], runs[(label, b)], ids) for k in larger):
            del runs[(label, b)]
    if not runs:
        return None
    keys = {f"{label}@{b:g}": (label, b) for label, b in runs}
    key, acc, cv, chosen = choose({k: runs[keys[k]] for k in keys}, ids, folds, selection)
    label, spend = keys[key]
    return label, spend, acc, cv, chosen.get(key, 0)


def _same_run(a: CandidateStats, b: CandidateStats, ids: list[str]) -> bool:
    return all(a.accuracy[p] == b.accuracy[p] and a.flops[p] == b.flops[p] for p in ids)


def _stats(results: list[dict[str, Any]]) -> dict[tuple[str, float], CandidateStats]:
    """Per (strategy label, budget): per-problem means over seeds. Refused runs (a budget below the
    strategy's minimum) make the candidate unavailable at that budget for that problem."""
    acc: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    cost: dict[tuple[str, float], dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    refused: set[tuple[str, float, str]] = set()
    for r in results:
        key = (r["strategy"], float(r["budget"]))
        if r.get("error") is not None:
            refused.add((*key, r["problem"]))
            continue
        acc[key][r["problem"]].append(float(bool(r["correct"])))
        c = cost[key][r["problem"]]
        c["samples"].append(float(r["samples"]))
        c["tokens"].append(float(r["policy_tokens"]) + float(r["verifier_tokens"]))
        c["flops"].append(float(r["flops"]))
        c["seconds"].append(float(r["wall_s"]))
    out = {}
    for key, per_problem in acc.items():
        ids = [p for p in per_problem if (*key, p) not in refused]

        def m(field: str, ids: list[str] = ids, key: tuple[str, float] = key) -> dict[str, float]:
            return {p: sum(cost[key][p][field]) / len(cost[key][p][field]) for p in ids}

        out[key] = CandidateStats(
            accuracy={p: sum(per_problem[p]) / len(per_problem[p]) for p in ids},
            samples=m("samples"),
            tokens=m("tokens"),
            flops=m("flops"),
            seconds=m("seconds"),
        )
    return out


def after_probe(candidate: GridStrategy, probe_samples: int, aggregation: str) -> GridStrategy:
    """``candidate`` as compute_optimal runs it: the probe, then the candidate on the rest."""
    return GridStrategy(
        "compute_optimal",
        {
            "choice": format_label(candidate.name, candidate.params),
            "probe_samples": probe_samples,
            "aggregation": aggregation,
        },
        label=f"probe+{candidate.label}",
    )


def probe_features(
    run_dir: Path,
    dataset: Dataset,
    generator: Generator,
    verifier: Verifier,
    predictor: DifficultyPredictor,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, float | None], dict[str, float], str]:
    """Each problem's probe feature (mean score) and mean sample length, as compute_optimal would
    measure them (resumable file), and the score aggregation the probes used (``auto`` resolved).
    A problem probed before lengths were recorded is probed again."""
    path = run_dir / "probes.jsonl"
    rows = [r for r in read_jsonl(path) if "problem" in r and ("length" in r or r.get("feature") is None)]
    known = {r["problem"]: r.get("feature") for r in rows}
    lengths = {r["problem"]: float(r["length"]) for r in rows if r.get("length") is not None}
    used = {r.get("aggregation") for r in rows}
    todo = [p for p in dataset.problems if p.id not in known]
    if todo:
        from ponder.eval.datasets import AnswerFormat

        writer = JsonlWriter(path)
        try:
            with AnswerFormat(dataset.answer_format).strategy_context():
                for i, p in enumerate(todo):
                    tracker = BudgetTracker(
                        Budget(samples=predictor.probe_samples), "probe", generator, verifier
                    )
                    probe = run_probe(
                        p.prompt,
                        tracker,
                        predictor.probe_samples,
                        predictor.temperature,
                        predictor.max_new_tokens,
                        derive_seed(run_seed(seed, p.id), "probe"),
                        predictor.aggregation,
                    )
                    writer.write(
                        {
                            "problem": p.id,
                            "feature": probe.feature,
                            "n": len(probe.candidates),
                            "aggregation": probe.aggregation,
                            "length": probe.length,
                        }
                    )
                    known[p.id] = probe.feature
                    if probe.length is not None:
                        lengths[p.id] = probe.length
                    used.add(probe.aggregation)
                    if log and (i + 1) % 50 == 0:
                        log(f"probes {i + 1}/{len(todo)}")
        finally:
            writer.close()
    used.discard(None)
    if len(used) > 1:
        raise ConfigError(f"{path} mixes probe score aggregations {sorted(used)}: delete it to re-probe")
    return known, lengths, (used.pop() if used else predictor.aggregation)


def calibrate(
    run_dir: str | Path,
    dataset: Dataset,
    generator: Generator,
    verifier: Verifier,
    candidates: list[GridStrategy],
    budgets: list[int],
    seeds: list[int],
    *,
    out: str | Path | None = None,
    n_bins: int = 5,
    oracle_samples: int = 32,
    probe_samples: int = 4,
    aggregation: str = "auto",
    folds: int = 5,
    bins_from: str = "predicted",
    features: str = "score+length",
    selection: str = "best",
    pipeline: bool = True,
    spend_less: bool = True,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> Policy:
    """Run the calibration grid on ``dataset`` (a dev split) and write the policy file."""
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    if bins_from not in ("predicted", "oracle"):
        raise ConfigError(f"bins_from must be predicted or oracle, got {bins_from!r}")
    if features not in FEATURES:
        raise ConfigError(f"difficulty features must be one of {list(FEATURES)}, got {features!r}")
    if oracle_samples < 1:
        raise ConfigError(
            "calibration needs oracle_samples >= 1 (the oracle bins the predictor is fitted to)"
        )
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    if any(c.name == "compute_optimal" for c in candidates):
        raise ConfigError("compute_optimal cannot be a candidate of its own policy")
    run_dir = Path(run_dir)
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"calibration directory {run_dir} is not empty: pass --resume to continue it")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    grid_strategies = (
        [after_probe(c, probe_samples, aggregation) for c in candidates] if pipeline else list(candidates)
    )
    candidate_of = {g.label: c for g, c in zip(grid_strategies, candidates)}
    config = EvalConfig(
        dataset=dataset_config(dataset),
        strategies=grid_strategies,
        budgets=budgets,
        seeds=seeds,
        models=models_identity(generator, verifier),
        budget_unit="samples",
        oracle_samples=oracle_samples,
    )
    grid = run_eval(
        config, run_dir / "grid", dataset, generator, verifier, resume=resume, log=log, n_bins=n_bins
    )
    if log:
        log("grid done; probing the problems' difficulty")
    difficulty = grid.difficulty()
    pass1 = {p: float(r["pass1"]) for p, r in difficulty.items()}
    oracle = oracle_bins(pass1, n_bins=n_bins)
    probe_settings = DifficultyPredictor(probe_samples=probe_samples, aggregation=aggregation)
    scores, lengths, aggregation = probe_features(
        run_dir, dataset, generator, verifier, probe_settings, seeds[0], log
    )
    predictor = fit_predictor(
        scores,
        oracle,
        n_bins,
        lengths=lengths if features == "score+length" else None,
        pass1=pass1,
        probe_samples=probe_samples,
        aggregation=aggregation,
    )

    def predicted(pid: str) -> int:
        return predictor.predict(predictor.feature(scores.get(pid), lengths.get(pid)))

    bins = {p.id: predicted(p.id) for p in dataset.problems}
    if bins_from == "oracle":
        bins = dict(oracle)
    stats = _stats(grid.results())
    table: dict[int, dict[float, PolicyEntry]] = {}
    all_ids = [p.id for p in dataset.problems]
    for b in range(1, n_bins + 1):
        ids = [p for p in all_ids if bins.get(p) == b] or all_ids  # an empty bin borrows all problems
        table[b] = {}
        for budget in config.budgets:
            picked = choose_at_budget(
                stats, ids, float(budget), folds, selection, spend_less, floor=float(probe_samples)
            )
            if picked is None:
                continue
            label, spend, acc, cv, folds_chosen = picked
            spec = candidate_of[label]
            s = stats[(label, spend)]
            table[b][float(budget)] = PolicyEntry(
                strategy=spec.name,
                params=dict(spec.params),
                accuracy=acc,
                cv_accuracy=cv,
                folds_chosen=folds_chosen,
                mean_samples=_mean(s.samples, ids),
                mean_tokens=_mean(s.tokens, ids),
                mean_flops=_mean(s.flops, ids),
                mean_seconds=_mean(s.seconds, ids),
                budget=spend if spend < float(budget) else None,
            )
        if not table[b]:
            raise ConfigError(f"no candidate ran at any budget for bin {b}: widen the budgets")
    from ponder.allocation.difficulty import agreement

    agree = agreement({p: predicted(p) for p in all_ids}, oracle)
    policy = Policy(
        models=config.models,
        budgets=[float(b) for b in config.budgets],
        predictor=predictor,
        table=table,
        budget_unit="samples",
        bins_from=bins_from,
        calibration={
            "dataset": config.dataset,
            "candidates": [c.label for c in candidates],
            "seeds": seeds,
            "folds": folds,
            "oracle_samples": oracle_samples,
            "difficulty_features": features,
            "selection": selection,
            "pipeline": pipeline,
            "spend_less": spend_less,
            "predicted_vs_oracle": {
                "n": agree.n,
                "exact": agree.exact,
                "within_one": agree.within_one,
                "spearman": agree.spearman,
            },
            "bin_sizes": {str(b): sum(1 for p in all_ids if bins.get(p) == b) for b in range(1, n_bins + 1)},
            # What the coverage model of the global allocator is fitted to (policy.curve).
            "oracle_counts": {
                str(b): [
                    [int(difficulty[p]["correct"]), int(difficulty[p]["n"])]
                    for p in all_ids
                    if bins.get(p) == b and p in difficulty
                ]
                for b in range(1, n_bins + 1)
            },
            "seconds": round(time.time() - started, 1),
        },
    )
    policy.save(Path(out) if out is not None else run_dir / "policy.json")
    (run_dir / "calibration.json").write_text(json.dumps(policy.calibration, indent=1) + "\n")
    return policy
