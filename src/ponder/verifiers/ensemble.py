"""Weak-verifier ensembles: combine imperfect verifiers without labels.

Each member verifier (a PRM, an ORM, the policy's own likelihood, majority agreement, ...) gives
every (prompt, solution) pair a score. A member *votes* "correct" when its score reaches its
threshold (by default the median of its scores over the fitting set). A weak-supervision label
model then estimates, from how the votes agree with each other and nothing else, how reliable each
member is, and combines the votes into P(correct | votes):

- the label model is Dawid & Skene's (1979) two-coin model, as in Snorkel and Weaver: the true
  label y is hidden, member j votes 1 with probability ``sensitivity_j`` when y = 1 and 0 with
  probability ``specificity_j`` when y = 0, independently given y. EM fits the class prior and both
  rates per member, starting from the majority vote of the members (which also fixes which of the
  two mirror-image solutions is meant: on average members are better than chance).
- the combined score is the posterior, i.e. a weighted vote whose weights are each member's
  log-likelihood ratios ``log(sens / (1 - spec))`` for a yes and ``log((1 - sens) / spec)`` for a
  no: a reliable member counts for more, a member at chance for nothing.

The model assumes members err independently given the truth. Members that share a network (a
PRM read with two aggregations, its ORM head) or copy each other violate that: the label model then
mistakes their agreement for reliability and overweights them. Prefer members that fail
differently.

Binary votes leave ties between solutions with the same votes; a tiny tie-break (``1e-6`` times the
members' score ranks weighted by their estimated reliability) orders those without ever overriding
a difference in the posterior.

``fit`` learns thresholds and the label model from unlabelled pairs (e.g. all candidates of a set
of prompts, the test prompts themselves included: no labels are used). An ensemble that was never
fitted fits itself on the pairs of each ``score`` call (transductive; with few pairs the estimates
are rough).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from ponder.errors import ConfigError
from ponder.tasks.answers import extract_answer
from ponder.verifiers.base import Verifier, VerifierScore

_EPS = 1e-4
TIE_BREAK = 1e-6


# --- the label model (pure numpy) --------------------------------------------------------------------


@dataclass
class LabelModel:
    """A fitted two-coin Dawid-Skene model over ``m`` binary voters."""

    prior: float  # P(y = 1)
    sensitivity: np.ndarray  # P(vote 1 | y = 1), per member
    specificity: np.ndarray  # P(vote 0 | y = 0), per member
    iterations: int = 0

    @property
    def accuracy(self) -> np.ndarray:
        """Each member's estimated accuracy, P(vote == y)."""
        return self.prior * self.sensitivity + (1 - self.prior) * self.specificity

    @property
    def weights(self) -> np.ndarray:
        """Log-odds a vote of 1 adds minus what a vote of 0 adds: how much a member's vote moves
        the posterior (0 for a member at chance, negative for one worse than chance)."""
        sens, spec = self.sensitivity, self.specificity
        return np.log(sens / (1 - spec)) - np.log((1 - sens) / spec)

    def log_odds(self, votes: np.ndarray) -> np.ndarray:
        """log P(y=1 | votes) / P(y=0 | votes) per row; a vote of -1 abstains."""
        votes = np.asarray(votes)
        yes = np.log(self.sensitivity / (1 - self.specificity))
        no = np.log((1 - self.sensitivity) / self.specificity)
        contrib = np.where(votes == 1, yes, np.where(votes == 0, no, 0.0))
        return np.log(self.prior / (1 - self.prior)) + contrib.sum(axis=1)

    def posterior(self, votes: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.log_odds(votes)))


def fit_label_model(
    votes: np.ndarray, iterations: int = 500, tol: float = 1e-7, smoothing: float = 1.0
) -> LabelModel:
    """Fit a :class:`LabelModel` by EM to ``votes`` (``(n_items, n_members)``, entries 1 / 0, or -1 to
    abstain). ``smoothing`` is a Beta(1 + s, 1 + s) prior on every rate, which keeps rates off 0 and 1
    when a member always agrees with the rest on few items."""
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[0] == 0 or votes.shape[1] == 0:
        raise ConfigError(f"the label model needs votes of shape (items, members), got {votes.shape}")
    if not np.isin(votes, (-1, 0, 1)).all():
        raise ConfigError("votes must be 1 (correct), 0 (wrong) or -1 (abstain)")
    seen = votes >= 0
    yes = (votes == 1).astype(float)
    # Initial soft labels: the share of members voting yes (the majority vote, softened).
    counts = seen.sum(1)
    q = np.where(counts > 0, yes.sum(1) / np.maximum(counts, 1), 0.5)
    model = None
    for it in range(1, iterations + 1):
        prior = float(np.clip((q.sum() + smoothing) / (len(q) + 2 * smoothing), _EPS, 1 - _EPS))
        pos = q[:, None] * seen
        neg = (1 - q)[:, None] * seen
        sens = (np.sum(pos * yes, 0) + smoothing) / (pos.sum(0) + 2 * smoothing)
        spec = (np.sum(neg * (1 - yes), 0) + smoothing) / (neg.sum(0) + 2 * smoothing)
        model = LabelModel(prior, np.clip(sens, _EPS, 1 - _EPS), np.clip(spec, _EPS, 1 - _EPS), it)
        new_q = model.posterior(votes)
        done = np.max(np.abs(new_q - q)) < tol
        q = new_q
        if done:
            break
    assert model is not None
    if np.mean(model.sensitivity + model.specificity) < 1.0:
        # EM settled on the mirror image (members "worse than chance" on average): flip it.
        model = LabelModel(1 - model.prior, 1 - model.specificity, 1 - model.sensitivity, model.iterations)
    return model


# --- members ------------------------------------------------------------------------------------------


class AgreementVerifier:
    """Majority agreement as a pseudo-verifier: a solution's score is the share of the solutions to
    the same prompt *in the same call* whose final answer agrees with its own (0 without an answer).
    Free to run; meaningful when a call scores all candidates of a prompt together, as best-of-N does."""

    name = "agreement"
    num_params = 0

    def count_tokens(self, prompt: str, solution: str) -> int:
        return 0

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        answers = [extract_answer(s) for s in solutions]
        groups: dict[str, Counter] = defaultdict(Counter)
        totals: Counter = Counter()
        for p, a in zip(prompts, answers):
            totals[p] += 1
            if a is not None:
                groups[p][a] += 1
        out = []
        for p, a in zip(prompts, answers):
            share = groups[p][a] / totals[p] if a is not None else 0.0
            out.append(VerifierScore(step_scores=[share], outcome=share, tokens=0))
        return out


@dataclass
class Member:
    """One verifier of an ensemble: how its score becomes one number, and where it votes yes."""

    name: str
    verifier: Verifier
    aggregation: str = "last"  # last / min / prod / mean over step scores, or "orm" (outcome head)
    threshold: float | None = None  # votes 1 at or above it; None: learned (median of the fit set)

    def value(self, score: VerifierScore) -> float:
        from ponder.strategies.sampling import score_value

        return score_value(score, self.aggregation)


@dataclass
class EnsembleFit:
    """What fitting learned: per-member thresholds, the label model, each member's sorted fit
    scores (for the rank tie-break)."""

    thresholds: np.ndarray
    label_model: LabelModel
    sorted_scores: list[np.ndarray] = field(default_factory=list)


class EnsembleVerifier:
    """A :class:`Verifier` that combines member verifiers by a label model fitted without labels.

    Its score of a solution is P(correct | the members' votes): ``step_scores`` holds that one number
    and ``outcome`` repeats it, so every aggregation (and ``"orm"``) reads the combined score.
    ``tokens`` counts every member's tokens; FLOPs are charged at the largest member's size (an
    upper bound).
    """

    def __init__(self, members: list[Member], quantile: float = 0.5) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member verifier")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ConfigError(f"ensemble member names must be unique, got {names}")
        if not 0 < quantile < 1:
            raise ConfigError(f"quantile must be in (0, 1), got {quantile}")
        self.members = members
        self.quantile = quantile
        self.fitted: EnsembleFit | None = None
        self.name = "ensemble(" + ",".join(names) + ")"

    @property
    def num_params(self) -> int:
        return max(int(m.verifier.num_params) for m in self.members)

    def count_tokens(self, prompt: str, solution: str) -> int:
        total = 0
        for m in self.members:
            count = getattr(m.verifier, "count_tokens", None)
            total += (
                int(count(prompt, solution)) if callable(count) else len((prompt + solution).encode()) + 1
            )
        return total

    def member_scores(self, prompts: list[str], solutions: list[str]) -> tuple[np.ndarray, int]:
        """``(n_pairs, n_members)`` member values, and the tokens the members ran."""
        columns, tokens = [], 0
        for m in self.members:
            scores = m.verifier.score(prompts, solutions)
            tokens += sum(s.tokens for s in scores)
            columns.append([m.value(s) for s in scores])
        return np.asarray(columns, dtype=np.float64).T.reshape(len(solutions), len(self.members)), tokens

    def fit_scores(self, scores: np.ndarray) -> EnsembleFit:
        """Learn thresholds and the label model from member values ``(n_pairs, n_members)``."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != len(self.members) or scores.shape[0] == 0:
            raise ConfigError(
                f"expected member scores of shape (pairs, {len(self.members)}), got {scores.shape}"
            )
        thresholds = np.array(
            [
                m.threshold if m.threshold is not None else float(np.quantile(scores[:, j], self.quantile))
                for j, m in enumerate(self.members)
            ]
        )
        votes = self.votes(scores, thresholds)
        self.fitted = EnsembleFit(thresholds, fit_label_model(votes), [np.sort(c) for c in scores.T])
        return self.fitted

    def fit(self, prompts: list[str], solutions: list[str]) -> EnsembleFit:
        """Run every member on the pairs and fit on their scores (no labels)."""
        if len(prompts) != len(solutions) or not solutions:
            raise ConfigError(
                f"fit needs matching, non-empty prompts and solutions ({len(prompts)}, {len(solutions)})"
            )
        return self.fit_scores(self.member_scores(prompts, solutions)[0])

    @staticmethod
    def votes(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        return (np.asarray(scores) >= thresholds).astype(int)

    def combine(self, scores: np.ndarray, fit: EnsembleFit | None = None) -> np.ndarray:
        """Combined scores of member values ``(n_pairs, n_members)`` under a fit."""
        fit = fit or self.fitted
        if fit is None:
            raise ConfigError("the ensemble is not fitted: call fit() or fit_scores() first")
        scores = np.asarray(scores, dtype=np.float64)
        posterior = fit.label_model.posterior(self.votes(scores, fit.thresholds))
        ranks = np.stack(
            [
                np.searchsorted(col, scores[:, j], side="right") / max(len(col), 1)
                for j, col in enumerate(fit.sorted_scores)
            ],
            axis=1,
        )
        weights = np.clip(fit.label_model.weights, 0.0, None)
        tie = (ranks * weights).sum(1) / max(weights.sum(), 1e-12)
        return np.clip(posterior + TIE_BREAK * tie, 0.0, 1.0)

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        if not solutions:
            return []
        scores, tokens = self.member_scores(prompts, solutions)
        fit = self.fitted
        if fit is None:  # transductive: fit on this call's pairs, keep the ensemble unfitted
            fit = self.fit_scores(scores)
            self.fitted = None
        combined = self.combine(scores, fit)
        per_pair = [tokens // len(solutions)] * len(solutions)
        per_pair[0] += tokens - sum(per_pair)
        return [
            VerifierScore(step_scores=[float(c)], outcome=float(c), tokens=t)
            for c, t in zip(combined, per_pair)
        ]
