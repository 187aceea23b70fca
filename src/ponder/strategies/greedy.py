"""Greedy decoding: one temperature-0 sample, the baseline every strategy is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Compute, StrategyResult
from ponder.strategies.sampling import sample_candidates
from ponder.verifiers.base import Verifier


@dataclass
class Greedy:
    name: str = "greedy"

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, samples: int, seed: int
    ) -> StrategyResult:
        compute = Compute()
        cands = sample_candidates(prompt, generator, 1, 0.0, seed, compute)
        return StrategyResult(answer=cands[0].answer, candidates=cands, compute=compute)
