"""Greedy decoding: one temperature-0 sample, the baseline every strategy is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import StrategyResult
from ponder.strategies.budget import Budget, BudgetTracker
from ponder.strategies.sampling import check_param, require_one_sample, sample_batch
from ponder.verifiers.base import Verifier


@dataclass
class Greedy:
    max_new_tokens: int = 160
    name: str = "greedy"

    def __post_init__(self) -> None:
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator)
        # One sample whatever the budget; a budget too small for its worst case is refused, not
        # silently truncated (lower max_new_tokens to fit a tight token budget).
        require_one_sample(tracker, prompt, self.max_new_tokens, scored=False)
        cands = sample_batch(prompt, tracker, 1, 0.0, self.max_new_tokens, seed)
        return StrategyResult(answer=cands[0].answer, candidates=cands, compute=tracker.compute)
