"""Best-of-N by verifier: the single highest-scoring sample, or (weighted) the answer whose
samples' scores sum highest."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Compute, StrategyResult
from ponder.strategies.sampling import sample_candidates, score_candidates
from ponder.verifiers.base import Verifier


@dataclass
class BestOfN:
    temperature: float = 1.0
    aggregation: str = "last"  # how step scores become one: last / min / prod / mean, or "orm"
    weighted: bool = False
    name: str = "best_of_n"

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, samples: int, seed: int
    ) -> StrategyResult:
        compute = Compute()
        cands = sample_candidates(prompt, generator, samples, self.temperature, seed, compute)
        score_candidates(prompt, cands, verifier, self.aggregation, compute)
        if self.weighted:
            totals: dict[int, float] = defaultdict(float)
            for c in cands:
                if c.answer is not None:
                    totals[c.answer] += c.score or 0.0
            answer = max(totals, key=totals.__getitem__) if totals else None
        else:
            best = max(cands, key=lambda c: c.score if c.answer is not None else -1.0)
            answer = best.answer
        return StrategyResult(answer=answer, candidates=cands, compute=compute)
