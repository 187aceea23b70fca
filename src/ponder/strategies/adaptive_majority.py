"""Adaptive majority vote: sample in small batches and stop once the vote is settled.

After each batch, with ``a`` votes for the leading answer and ``b`` for all other answers (samples
without an answer do not vote), sampling stops when either rule holds:

- **margin** (exact): ``a - c`` is larger than the most samples the remaining budget could still
  buy, where ``c`` is the runner-up's votes; then no outcome of further sampling can change the
  winner. With a samples limit that bound is the samples left; with only token / FLOPs limits, it is
  the batches the remainder could pay the prompt prefill for, times the batch size.
- **posterior**: under a uniform prior, the leader's share ``p`` of the answer distribution has
  posterior Beta(1 + a, 1 + b); stop when P(p > 1/2) >= ``confidence``. An answer with more than
  half the probability mass is the distribution's most likely answer, which is what a vote with
  unlimited samples would return. (All of the first 4 samples agreeing gives 1 - 2^-5 = 0.969.)

Otherwise it keeps drawing until the budget is spent, like plain majority.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import Candidate, StrategyResult
from ponder.strategies.budget import MAX_SAMPLES, Budget, BudgetTracker, derive_seed
from ponder.strategies.majority import vote
from ponder.strategies.sampling import affordable_batch, check_param, require_one_sample, sample_batch
from ponder.verifiers.base import Verifier


def prob_share_above_half(a: int, b: int) -> float:
    """P(p > 1/2) for p ~ Beta(1 + a, 1 + b), exactly: for whole-number parameters the Beta CDF is a
    binomial tail, P(p <= 1/2) = P(Binomial(a + b + 1, 1/2) >= a + 1)."""
    n = a + b + 1
    return sum(math.comb(n, j) for j in range(a + 1)) / 2**n


@dataclass
class AdaptiveMajority:
    batch_size: int = 4  # samples per generate call; also the fewest drawn before stopping
    confidence: float = 0.95  # posterior rule threshold on P(leader's share > 1/2)
    temperature: float = 1.0
    max_new_tokens: int = 160
    name: str = "adaptive_majority"

    def __post_init__(self) -> None:
        check_param(self.batch_size >= 1, self.name, f"batch_size must be >= 1, got {self.batch_size}")
        check_param(
            0.5 < self.confidence <= 1.0, self.name, f"confidence must be in (0.5, 1], got {self.confidence}"
        )
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )

    def _max_more_samples(self, tracker: BudgetTracker, prompt: str) -> float:
        """An upper bound on the samples the rest of the budget could still buy."""
        budget, spent = tracker.budget, tracker.spent
        bound = float(MAX_SAMPLES - spent.samples)
        if budget.samples is not None:
            bound = min(bound, budget.samples - spent.samples)
        # Every further batch pays at least its prompt's prefill.
        prefill = tracker.policy_cost(tracker.prompt_tokens(prompt))
        if budget.tokens is not None and prefill.tokens > 0:
            bound = min(bound, (budget.tokens - spent.tokens) // prefill.tokens * self.batch_size)
        if budget.flops is not None and prefill.flops > 0:
            bound = min(bound, (budget.flops - spent.flops) // prefill.flops * self.batch_size)
        return max(bound, 0.0)

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator)
        require_one_sample(tracker, prompt, self.max_new_tokens, scored=False)
        limit = budget.samples if budget.samples is not None else MAX_SAMPLES
        cands: list[Candidate] = []
        trace: list[str] = []
        stop = "budget spent"
        batch = 0
        while len(cands) < limit:
            upper = min(self.batch_size, limit - len(cands))
            k = affordable_batch(tracker, prompt, upper, self.max_new_tokens, scored=False)
            if k == 0:
                break
            cands.extend(
                sample_batch(
                    prompt,
                    tracker,
                    k,
                    self.temperature,
                    self.max_new_tokens,
                    seed if batch == 0 else derive_seed(seed, "batch", batch),
                )
            )
            batch += 1
            counts = Counter(c.answer for c in cands if c.answer is not None).most_common()
            if not counts:
                trace.append(f"batch {batch}: {len(cands)} samples, no answer yet")
                continue
            lead = counts[0][1]
            runner_up = counts[1][1] if len(counts) > 1 else 0
            others = sum(c for _, c in counts[1:])
            posterior = prob_share_above_half(lead, others)
            more = self._max_more_samples(tracker, prompt)
            trace.append(
                f"batch {batch}: {len(cands)} samples; leader {counts[0][0]} with {lead} votes, "
                f"runner-up {runner_up}; P(share > 1/2) = {posterior:.3f}; at most {more:.0f} more samples"
            )
            if len(cands) < self.batch_size:
                continue  # a batch cut short by the budget is too few samples to stop on
            if lead - runner_up > more:
                stop = "the leader cannot be overtaken"
                break
            if posterior >= self.confidence:
                stop = f"posterior confidence {posterior:.3f} >= {self.confidence}"
                break
        trace.append(f"stopped: {stop} after {len(cands)} samples")
        return StrategyResult(answer=vote(cands), candidates=cands, compute=tracker.compute, trace=trace)
