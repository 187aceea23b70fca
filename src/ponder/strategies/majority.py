"""Majority vote (self-consistency): the most frequent final answer among the samples the budget buys."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Candidate, StrategyResult
from ponder.strategies.budget import Budget, BudgetTracker
from ponder.strategies.sampling import check_param, require_one_sample, sample_within_budget
from ponder.verifiers.base import Verifier


def vote(candidates: list[Candidate]) -> int | None:
    """The most common answer. Counter keeps first-seen order and most_common is stable: ties go to
    the answer seen first. Samples without an answer do not vote."""
    votes = Counter(c.answer for c in candidates if c.answer is not None)
    return votes.most_common(1)[0][0] if votes else None


@dataclass
class MajorityVote:
    temperature: float = 1.0
    max_new_tokens: int = 160
    name: str = "majority"

    def __post_init__(self) -> None:
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator)
        require_one_sample(tracker, prompt, self.max_new_tokens, scored=False)
        cands = sample_within_budget(prompt, tracker, self.temperature, self.max_new_tokens, seed)
        return StrategyResult(answer=vote(cands), candidates=cands, compute=tracker.compute)
