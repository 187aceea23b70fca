"""Adaptive best-of-N: sample and score in small batches, stop once the verifier is confident.

After each scored batch, sampling stops when the best candidate's score reaches ``threshold``: the
verifier is confident that this solution is right, and more samples could only tie it. Otherwise it
keeps drawing until the budget is spent, like plain best-of-N, and answers with the best-scoring
candidate. With a verifier that separates right from wrong solutions well, an easy question stops
after its first batch and a hard one keeps sampling: compute follows difficulty within the question,
where a fixed N spends the same on both.

``give_up`` adds a futility stop: once ``patience`` samples are drawn and even the best scores below
``give_up``, sampling stops and the best candidate answers. A question the policy almost never
solves otherwise draws the whole budget for nothing; the stop bounds that waste, at the price of the
rare question whose first right sample would have come later (calibration weighs the two).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Candidate, StrategyResult
from ponder.strategies.best_of_n import pick_by_score
from ponder.strategies.budget import MAX_SAMPLES, Budget, BudgetTracker, derive_seed
from ponder.strategies.sampling import (
    affordable_batch,
    check_aggregation,
    check_param,
    require_one_sample,
    sample_batch,
    score_candidates,
)
from ponder.verifiers.base import Verifier


@dataclass
class AdaptiveBestOfN:
    batch_size: int = 2  # samples per generate call (and per verifier call)
    threshold: float = 0.5  # stop once the best score reaches this
    give_up: float | None = None  # stop once `patience` samples all score below this
    patience: int = 32
    aggregation: str = "min"
    temperature: float = 1.0
    max_new_tokens: int = 160
    name: str = "adaptive_best_of_n"

    def __post_init__(self) -> None:
        check_param(self.batch_size >= 1, self.name, f"batch_size must be >= 1, got {self.batch_size}")
        check_param(
            0.0 < self.threshold <= 1.0, self.name, f"threshold must be in (0, 1], got {self.threshold}"
        )
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )
        check_aggregation(self.name, self.aggregation)
        if self.give_up is not None:
            check_param(
                0.0 < self.give_up < self.threshold,
                self.name,
                f"give_up must be in (0, threshold={self.threshold}), got {self.give_up}",
            )
        check_param(self.patience >= 1, self.name, f"patience must be >= 1, got {self.patience}")

    def confident(self, candidates: list[Candidate]) -> bool:
        """Whether some answered candidate's score reaches the threshold."""
        return any(c.answer is not None and (c.score or 0.0) >= self.threshold for c in candidates)

    def futile(self, candidates: list[Candidate]) -> bool:
        """Whether ``patience`` samples are drawn and none scores ``give_up`` or more."""
        if self.give_up is None or len(candidates) < self.patience:
            return False
        return max((c.score or 0.0 for c in candidates), default=0.0) < self.give_up

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        require_one_sample(tracker, prompt, self.max_new_tokens, scored=True)
        limit = budget.samples if budget.samples is not None else MAX_SAMPLES
        cands: list[Candidate] = []
        trace: list[str] = []
        stop = "budget spent"
        batch = 0
        while len(cands) < limit:
            upper = min(self.batch_size, limit - len(cands))
            k = affordable_batch(tracker, prompt, upper, self.max_new_tokens, scored=True)
            if k == 0:
                break
            drawn = sample_batch(
                prompt,
                tracker,
                k,
                self.temperature,
                self.max_new_tokens,
                seed if batch == 0 else derive_seed(seed, "batch", batch),
            )
            score_candidates(prompt, drawn, tracker, self.aggregation)
            cands.extend(drawn)
            batch += 1
            best = max((c.score or 0.0 for c in cands), default=0.0)
            trace.append(f"batch {batch}: {len(cands)} samples, best score {best:.3f}")
            if self.confident(cands):
                stop = f"best score {best:.3f} >= {self.threshold}"
                break
            if self.futile(cands):
                stop = f"best score {best:.3f} < give_up {self.give_up}"
                break
        trace.append(f"stopped: {stop} after {len(cands)} samples")
        return StrategyResult(
            answer=pick_by_score(cands, weighted=False),
            candidates=cands,
            compute=tracker.compute,
            trace=trace,
        )
