"""The compute-optimal policy file: for each difficulty bin and budget, the strategy to run.

Written by ``ponder calibrate`` (:mod:`ponder.allocation.calibrate`), read by the
``compute_optimal`` strategy and the global-budget allocator. JSON::

    {"format": "ponder-compute-optimal-policy", "version": 1,
     "models": {"policy": "sha256:...", "verifier": "sha256:...", ...},
     "budget_unit": "samples", "budgets": [1, 2, 4, ...], "n_bins": 5, "bins_from": "predicted",
     "predictor": {"edges": [...], "probe_samples": 4, "aggregation": "orm", ...},
     "table": {"<bin>": {"<budget>": {"strategy": "beam_search", "params": {...},
                                      "accuracy": 0.61, "cv_accuracy": 0.58, "folds_chosen": 4,
                                      "mean_samples": ..., "mean_tokens": ..., "mean_flops": ...,
                                      "mean_seconds": ...}}},
     "calibration": {...}}

The models' weight hashes are recorded: a policy calibrated for other weights is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.allocation.difficulty import DifficultyPredictor
from ponder.errors import ConfigError
from ponder.eval.identity import describe_mismatch, models_identity
from ponder.strategies.budget import Budget

FORMAT = "ponder-compute-optimal-policy"
VERSION = 1


@dataclass(frozen=True)
class PolicyEntry:
    """The choice for one (bin, budget): a registered strategy with its parameters, and what
    calibration measured for it."""

    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    accuracy: float = 0.0  # on all calibration problems of the bin
    cv_accuracy: float = 0.0  # of the selection rule, held out (k-fold)
    folds_chosen: int = 0
    mean_samples: float = 0.0
    mean_tokens: float = 0.0
    mean_flops: float = 0.0
    mean_seconds: float = 0.0
    # The samples (probe included) the choice may spend, when calibration found that a smaller
    # budget than the grid's does as well for this bin: None spends what the grid budget allows.
    budget: float | None = None

    @property
    def label(self) -> str:
        if not self.params:
            return self.strategy
        return self.strategy + ":" + ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": dict(self.params),
            "accuracy": self.accuracy,
            "cv_accuracy": self.cv_accuracy,
            "folds_chosen": self.folds_chosen,
            "mean_samples": self.mean_samples,
            "mean_tokens": self.mean_tokens,
            "mean_flops": self.mean_flops,
            "mean_seconds": self.mean_seconds,
        } | ({} if self.budget is None else {"budget": self.budget})


@dataclass
class Policy:
    models: dict[str, Any]
    budgets: list[float]
    predictor: DifficultyPredictor
    table: dict[int, dict[float, PolicyEntry]]
    budget_unit: str = "samples"
    bins_from: str = "predicted"
    calibration: dict[str, Any] = field(default_factory=dict)
    _prior: tuple[float, float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_bins(self) -> int:
        return self.predictor.n_bins

    def entry(self, bin_: int, budget: Budget) -> tuple[float, PolicyEntry]:
        """The grid budget and entry to use for a question of ``bin_`` under ``budget``.

        With the policy's own unit (samples), the largest grid budget not above the budget's; with
        other limits, the largest grid budget whose calibrated mean cost fits every limit set (a
        deadline is compared with the mean wall time measured in calibration). The smallest grid
        budget when none fits.
        """
        row = self.table.get(bin_) or self.table[min(self.table, key=lambda b: abs(b - bin_))]
        budgets = sorted(row)
        fitting = [b for b in budgets if self._fits(row[b], b, budget)]
        chosen = fitting[-1] if fitting else budgets[0]
        return chosen, row[chosen]

    def _fits(self, entry: PolicyEntry, grid_budget: float, budget: Budget) -> bool:
        if budget.samples is not None:
            limit_ok = (
                grid_budget <= budget.samples
                if self.budget_unit == "samples"
                else entry.mean_samples <= budget.samples
            )
            if not limit_ok:
                return False
        if budget.tokens is not None and entry.mean_tokens > budget.tokens:
            return False
        if budget.flops is not None and entry.mean_flops > budget.flops:
            return False
        return budget.seconds is None or entry.mean_seconds <= budget.seconds

    def curve(self, bin_: int, model: str = "calibrated") -> list[tuple[float, float]]:
        """(grid budget, expected accuracy) for a bin.

        ``calibrated``: the held-out accuracy of the choice at each budget. ``coverage``: that curve
        smoothed by a coverage model of the bin's dev questions (:mod:`ponder.allocation.coverage`),
        which keeps rising where the small dev split saw every candidate saturate; it needs the
        oracle counts a calibration records (``has_coverage_model``).
        """
        row = self.table.get(bin_, {})
        calibrated = [(b, row[b].cv_accuracy) for b in sorted(row)]
        if model == "calibrated":
            return calibrated
        if model != "coverage":
            raise ConfigError(f"an accuracy curve is 'calibrated' or 'coverage', got {model!r}")
        from ponder.allocation.coverage import fit_beta_prior, scaled_coverage_curve

        counts = self.oracle_counts()
        if not counts:
            raise ConfigError(
                "this policy file records no oracle counts, so it has no coverage model: "
                "recalibrate it with this ponder, or use the calibrated curves"
            )
        if self._prior is None:
            self._prior = fit_beta_prior([c for per_bin in counts.values() for c in per_bin])
        mine = counts.get(bin_) or [c for per_bin in counts.values() for c in per_bin]
        return scaled_coverage_curve(calibrated, mine, self._prior)

    def oracle_counts(self) -> dict[int, list[tuple[int, int]]]:
        """Per bin, (right, samples) of the oracle samples of each dev question calibration put in it."""
        raw = self.calibration.get("oracle_counts") or {}
        try:
            return {int(b): [(int(k), int(n)) for k, n in rows] for b, rows in raw.items()}
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(f"the policy's oracle counts are malformed: {str(raw)[:80]}") from None

    @property
    def has_coverage_model(self) -> bool:
        return bool(self.oracle_counts())

    def check_models(self, generator: object, verifier: object | None, where: str) -> None:
        """Refuse to apply a policy calibrated for other weights."""
        problems = describe_mismatch(self.models, models_identity(generator, verifier))
        if problems:
            raise ConfigError(
                f"policy file {where} was calibrated for other models ({'; '.join(problems)}): "
                "recalibrate it with `ponder calibrate` for these models"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "models": self.models,
            "budget_unit": self.budget_unit,
            "budgets": self.budgets,
            "n_bins": self.n_bins,
            "bins_from": self.bins_from,
            "predictor": self.predictor.to_json(),
            "table": {
                str(b): {_key(k): e.to_json() for k, e in sorted(row.items())}
                for b, row in sorted(self.table.items())
            },
            "calibration": self.calibration,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)
        return path


def _key(budget: float) -> str:
    return str(int(budget)) if float(budget).is_integer() else repr(float(budget))


def policy_from_json(data: Any, where: str) -> Policy:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{where} is not a ponder compute-optimal policy file (no format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ConfigError(
            f"{where} is policy file version {data.get('version')!r}; this ponder reads version {VERSION}"
        )
    try:
        table = {
            int(b): {
                float(k): PolicyEntry(
                    strategy=str(e["strategy"]),
                    params=dict(e.get("params", {})),
                    accuracy=float(e.get("accuracy", 0.0)),
                    cv_accuracy=float(e.get("cv_accuracy", 0.0)),
                    folds_chosen=int(e.get("folds_chosen", 0)),
                    mean_samples=float(e.get("mean_samples", 0.0)),
                    mean_tokens=float(e.get("mean_tokens", 0.0)),
                    mean_flops=float(e.get("mean_flops", 0.0)),
                    mean_seconds=float(e.get("mean_seconds", 0.0)),
                    budget=None if e.get("budget") is None else float(e["budget"]),
                )
                for k, e in row.items()
            }
            for b, row in data["table"].items()
        }
        policy = Policy(
            models=dict(data["models"]),
            budgets=[float(b) for b in data["budgets"]],
            predictor=DifficultyPredictor.from_json(data["predictor"]),
            table=table,
            budget_unit=str(data.get("budget_unit", "samples")),
            bins_from=str(data.get("bins_from", "predicted")),
            calibration=dict(data.get("calibration", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"policy file {where} is malformed ({exc!r})") from None
    if not policy.table or any(not row for row in policy.table.values()):
        raise ConfigError(f"policy file {where} has an empty table")
    from ponder.strategies.registry import make_strategy

    for row in policy.table.values():
        for entry in row.values():
            if entry.strategy == "compute_optimal":
                raise ConfigError(f"policy file {where} chooses compute_optimal itself")
            try:
                make_strategy(entry.strategy, **entry.params)
            except ConfigError as exc:
                raise ConfigError(f"policy file {where}: {exc}") from None
    return policy


_LOADED: dict[tuple[str, float], Policy] = {}


def load_policy(path: str | Path) -> Policy:
    """A policy file, read once per process (re-read when the file changes)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"policy file {p} does not exist (make one with `ponder calibrate`)")
    key = (str(p.resolve()), p.stat().st_mtime)
    if key not in _LOADED:
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"policy file {p} is not valid JSON ({exc})") from None
        _LOADED[key] = policy_from_json(data, str(p))
    return _LOADED[key]
