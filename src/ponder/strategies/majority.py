"""Majority vote (self-consistency): the most frequent final answer among N samples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Compute, StrategyResult
from ponder.strategies.sampling import sample_candidates
from ponder.verifiers.base import Verifier


@dataclass
class MajorityVote:
    temperature: float = 1.0
    name: str = "majority"

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, samples: int, seed: int
    ) -> StrategyResult:
        compute = Compute()
        cands = sample_candidates(prompt, generator, samples, self.temperature, seed, compute)
        # Counter keeps first-seen order and most_common is stable: ties go to the answer seen first.
        votes = Counter(c.answer for c in cands if c.answer is not None)
        answer = votes.most_common(1)[0][0] if votes else None
        return StrategyResult(answer=answer, candidates=cands, compute=compute)
