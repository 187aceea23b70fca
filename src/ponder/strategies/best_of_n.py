"""Best-of-N by verifier: the single highest-scoring sample, or (weighted) the answer whose
samples' scores sum highest."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Candidate, StrategyResult
from ponder.strategies.budget import Budget, BudgetTracker
from ponder.strategies.sampling import (
    check_aggregation,
    check_param,
    require_one_sample,
    sample_within_budget,
)
from ponder.verifiers.base import Verifier


def pick_by_score(candidates: list[Candidate], weighted: bool) -> int | None:
    """The answer of the best-scoring candidate, or (weighted) the answer with the largest summed
    score. Candidates without an answer never win; unscored ones count as 0."""
    answered = [c for c in candidates if c.answer is not None]
    if not answered:
        return None
    if weighted:
        totals: dict[int, float] = defaultdict(float)
        for c in answered:
            totals[c.answer] += c.score or 0.0  # type: ignore[index]
        return max(totals, key=totals.__getitem__)  # first-seen answer wins a tie
    return max(answered, key=lambda c: c.score if c.score is not None else -1.0).answer


@dataclass
class BestOfN:
    temperature: float = 1.0
    # How step scores become one: last / min / prod / mean, or "orm". The weakest step by default:
    # one slip sinks a chain, and on the embedded pair best-of-16 by the min step beats the last
    # step on every level (model card).
    aggregation: str = "min"
    weighted: bool = False
    max_new_tokens: int = 160
    name: str = "best_of_n"

    def __post_init__(self) -> None:
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )
        check_aggregation(self.name, self.aggregation)

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        require_one_sample(tracker, prompt, self.max_new_tokens, scored=True)
        cands = sample_within_budget(
            prompt, tracker, self.temperature, self.max_new_tokens, seed, aggregation=self.aggregation
        )
        return StrategyResult(
            answer=pick_by_score(cands, self.weighted), candidates=cands, compute=tracker.compute
        )
