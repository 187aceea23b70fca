"""Question difficulty: oracle bins from the policy's pass@1, and a prediction with no ground truth.

- **Oracle**: a question's difficulty is the policy's pass@1 on it, estimated from many samples
  checked against the ground truth; questions are binned by it, bin 1 the easiest. ``quantile``
  bins (the default, five: quintiles) hold equal shares of the questions: ranked by pass@1, ties
  broken by a hash of the id so that the split is stable; ``thresholds`` bins use fixed pass@1 cut
  points (``[0.8, 0.6, 0.4, 0.2]``: bin 1 is pass@1 >= 0.8, ...).
- **Predicted**: a few probe samples are drawn and scored by the verifier; their mean score is the
  feature (higher: easier). The predictor's cut points are fitted on a dev split so that each
  predicted bin holds the share of questions its oracle bin does. The probe's compute is part of
  whatever budget the question runs under (see ``strategies/compute_optimal.py``).
- **Predicted from score and length** (``features="score+length"``): the feature is a linear
  estimate of pass@1 from the probe's mean score and the log of its samples' mean length, fitted by
  least squares to the dev split's oracle pass@1. A probe whose samples all fail says "hard" but not
  how hard: a question one slip away from easy and one no sample will ever solve look alike. How
  long the model's own solutions are tells them apart (longer reasoning, more places to slip), at
  no extra cost and with no ground truth at test time.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field

from ponder.errors import ConfigError
from ponder.eval.metrics import spearman
from ponder.strategies.base import Candidate
from ponder.strategies.budget import BudgetTracker
from ponder.strategies.sampling import affordable_batch, sample_batch, score_value
from ponder.verifiers.base import VerifierScore

BIN_METHODS = ("quantile", "thresholds")
FEATURES = ("score", "score+length")
DEFAULT_THRESHOLDS = (0.8, 0.6, 0.4, 0.2)


def _tiebreak(pid: str) -> str:
    return hashlib.sha1(pid.encode()).hexdigest()


def oracle_bins(
    pass1: dict[str, float],
    n_bins: int = 5,
    method: str = "quantile",
    thresholds: tuple[float, ...] | list[float] | None = None,
) -> dict[str, int]:
    """Problem id -> difficulty bin (1 = easiest) from each problem's pass@1."""
    if method not in BIN_METHODS:
        raise ConfigError(f"unknown difficulty binning {method!r}: choose one of {list(BIN_METHODS)}")
    for pid, p in pass1.items():
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"pass@1 of {pid} is {p}, not in [0, 1]")
    if method == "thresholds":
        cuts = sorted(thresholds if thresholds is not None else DEFAULT_THRESHOLDS, reverse=True)
        return {pid: 1 + sum(p < c for c in cuts) for pid, p in pass1.items()}
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
    order = sorted(pass1, key=lambda pid: (-pass1[pid], _tiebreak(pid)))
    n = len(order)
    return {pid: 1 + (i * n_bins) // n for i, pid in enumerate(order)}


@dataclass(frozen=True)
class Probe:
    """What a probe found: its samples (scored), the raw scores, and the difficulty feature."""

    candidates: list[Candidate]
    scores: list[VerifierScore]
    feature: float | None  # mean verifier score; None when no sample could be drawn
    aggregation: str = "auto"  # how the scores were read (``auto`` resolved)
    length: float | None = None  # mean characters of the scored samples


def resolve_aggregation(aggregation: str, scores: list[VerifierScore]) -> str:
    """``auto``: the outcome head when the verifier has one, else the last step's score."""
    if aggregation != "auto":
        return aggregation
    return "orm" if scores and all(s.outcome is not None for s in scores) else "last"


def run_probe(
    prompt: str,
    tracker: BudgetTracker,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    aggregation: str = "auto",
) -> Probe:
    """Draw up to ``samples`` full solutions in one call (fewer if the budget cannot pay for them),
    score them, and average the scores. Spends through ``tracker``, so it counts in its budget."""
    k = affordable_batch(tracker, prompt, samples, max_new_tokens, scored=True)
    if k == 0:
        return Probe([], [], None, aggregation)
    cands = sample_batch(prompt, tracker, k, temperature, max_new_tokens, seed)
    n_scored = tracker.affordable_prefix(prompt, [c.text for c in cands])
    scores = tracker.score(prompt, [c.text for c in cands[:n_scored]])
    how = resolve_aggregation(aggregation, scores)
    values = [score_value(s, how) for s in scores]
    for cand, value in zip(cands, values):
        cand.score = value
    if not values:
        return Probe(cands, scores, None, how)
    length = sum(len(c.text) for c in cands[: len(values)]) / len(values)
    return Probe(cands, scores, sum(values) / len(values), how, length)


@dataclass(frozen=True)
class DifficultyPredictor:
    """Predicted bin from a probe's feature: ``edges`` are descending cut points (bin 1 above the
    first). The default edges split [0, 1] evenly, for use without calibration. With ``weights``
    (bias, score, log length) the feature is ``bias + score_w * score + length_w * log(length)``
    (``features="score+length"``), else the probe's mean score."""

    edges: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2)
    probe_samples: int = 4
    aggregation: str = "auto"
    temperature: float = 1.0
    max_new_tokens: int = 160
    weights: tuple[float, float, float] | None = None

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    @property
    def features(self) -> str:
        return "score" if self.weights is None else "score+length"

    def feature(self, score: float | None, length: float | None = None) -> float | None:
        """The feature the edges cut, from a probe's mean score and mean sample length."""
        if score is None or self.weights is None:
            return score
        if length is None:
            raise ConfigError("this difficulty predictor reads the probe's sample length, and none was given")
        bias, w_score, w_length = self.weights
        return bias + w_score * score + w_length * math.log(max(length, 1.0))

    def predict(self, feature: float | None) -> int:
        """The bin of a feature; no feature (nothing probed) is taken as the hardest bin."""
        if feature is None:
            return self.n_bins
        return 1 + sum(feature < e for e in self.edges)

    def to_json(self) -> dict:
        data: dict = {
            "edges": list(self.edges),
            "probe_samples": self.probe_samples,
            "aggregation": self.aggregation,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
        }
        if self.weights is not None:
            data["weights"] = dict(zip(("bias", "score", "log_length"), self.weights))
        return data

    @classmethod
    def from_json(cls, data: dict) -> DifficultyPredictor:
        try:
            w = data.get("weights")
            weights = None if w is None else (float(w["bias"]), float(w["score"]), float(w["log_length"]))
            return cls(
                edges=tuple(float(e) for e in data["edges"]),
                probe_samples=int(data["probe_samples"]),
                aggregation=str(data["aggregation"]),
                temperature=float(data["temperature"]),
                max_new_tokens=int(data["max_new_tokens"]),
                weights=weights,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the difficulty predictor of the policy file is malformed ({exc!r})") from None


def fit_length_weights(
    scores: dict[str, float], lengths: dict[str, float], pass1: dict[str, float]
) -> tuple[float, float, float]:
    """(bias, score, log length) weights: least squares of pass@1 on the probe's mean score and the
    log of its mean sample length, over the problems that have all three."""
    import numpy as np

    ids = [p for p in scores if p in lengths and p in pass1]
    if len(ids) < 3:
        raise ConfigError(
            f"fitting difficulty from score and length needs at least 3 probed problems, got {len(ids)}"
        )
    x = np.array([[1.0, scores[p], math.log(max(lengths[p], 1.0))] for p in ids])
    y = np.array([pass1[p] for p in ids])
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(w[0]), float(w[1]), float(w[2])


def fit_predictor(
    features: dict[str, float | None],
    oracle: dict[str, int],
    n_bins: int,
    *,
    lengths: dict[str, float] | None = None,
    pass1: dict[str, float] | None = None,
    **probe: object,
) -> DifficultyPredictor:
    """Cut points on the feature such that predicted bins hold the shares of the oracle bins
    (bins ranked the same way: the highest feature is the easiest). With ``lengths`` and ``pass1``
    the feature combines score and length (weights fitted to ``pass1``, see the module docstring)."""
    common = [pid for pid in oracle if features.get(pid) is not None and (lengths is None or pid in lengths)]
    if len(common) < n_bins:
        raise ConfigError(
            f"fitting the difficulty predictor needs probe scores of at least {n_bins} problems, "
            f"got {len(common)}"
        )
    weights = None
    if lengths is not None:
        if pass1 is None:
            raise ConfigError("fitting difficulty from score and length needs each problem's oracle pass@1")
        scores = {p: float(features[p]) for p in common}  # type: ignore[arg-type]
        weights = fit_length_weights(scores, lengths, pass1)
    shaped = DifficultyPredictor(weights=weights)
    values = sorted(
        (shaped.feature(features[pid], (lengths or {}).get(pid)) for pid in common),  # type: ignore[misc]
        reverse=True,
    )
    counts = Counter(oracle[pid] for pid in common)
    edges: list[float] = []
    seen = 0
    for b in range(1, n_bins):
        seen += counts.get(b, 0)
        i = min(max(seen, 1), len(values) - 1)
        # Between the last value of bin b and the first of bin b+1.
        edge = (values[i - 1] + values[i]) / 2
        edges.append(min(edge, edges[-1]) if edges else edge)
    return DifficultyPredictor(edges=tuple(edges), weights=weights, **probe)  # type: ignore[arg-type]


@dataclass
class Agreement:
    """How well predicted bins agree with oracle bins."""

    n: int
    exact: float
    within_one: float
    spearman: float
    confusion: dict[int, dict[int, int]] = field(default_factory=dict)  # oracle -> predicted -> count


def agreement(predicted: dict[str, int], oracle: dict[str, int]) -> Agreement:
    ids = [pid for pid in oracle if pid in predicted]
    if not ids:
        return Agreement(0, 0.0, 0.0, 0.0)
    confusion: dict[int, dict[int, int]] = {}
    for pid in ids:
        row = confusion.setdefault(oracle[pid], {})
        row[predicted[pid]] = row.get(predicted[pid], 0) + 1
    return Agreement(
        n=len(ids),
        exact=sum(predicted[p] == oracle[p] for p in ids) / len(ids),
        within_one=sum(abs(predicted[p] - oracle[p]) <= 1 for p in ids) / len(ids),
        spearman=spearman([float(oracle[p]) for p in ids], [float(predicted[p]) for p in ids]),
        confusion={k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
    )
