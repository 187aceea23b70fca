"""Cascade: answer cheaply first, and escalate only when the answer looks doubtful.

Stage 1 runs ``small_strategy`` (e.g. majority of 4) on the run's generator. Its answer's
*confidence* is

- ``agreement``: the share of stage 1's answered samples that agree with its answer (needs more
  than one sample to mean anything);
- ``verifier``: the verifier's mean score (``aggregation``) of the samples with that answer (the
  embedded PRM mostly measures how hard the problem is, so this is a predicted-difficulty rule);
- ``min``: the lower of the two.

No answer at all is confidence 0. Below ``threshold`` the cascade escalates: stage 2 runs
``large_strategy`` with what is left of the budget, on ``large``, a second (larger, dearer)
generator, or on the same one when ``large`` is None (a stronger strategy only). ``large`` is a
Generator instance or a backend spec string (resolved by :func:`ponder.backends.spec.load_generator`,
e.g. an OpenAI-compatible server). Stage 2's answer replaces stage 1's when it has one.

Stage 1 gets at most ``small_samples`` samples; stage 2 gets the rest of every limit. Each backend
has a price per token (``small_cost_per_token``, ``large_cost_per_token``, for the policy tokens it
ran; ``verifier_cost_per_token`` for verifier tokens); :class:`CascadeResult` reports tokens and
cost per stage and in total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ponder.backends.base import Generator
from ponder.errors import ConfigError
from ponder.strategies.base import Compute, StrategyResult
from ponder.strategies.budget import Budget, BudgetExhausted, BudgetTracker, derive_seed
from ponder.strategies.sampling import check_aggregation, check_param, require_one_sample, score_value
from ponder.verifiers.base import Verifier


@dataclass
class StageReport:
    """What one stage ran, on which backend, and what it cost."""

    stage: str  # "small" or "large"
    backend: str
    strategy: str
    policy_tokens: int
    verifier_tokens: int
    flops: float
    cost: float
    answer: int | None


@dataclass
class CascadeResult(StrategyResult):
    escalated: bool = False
    confidence: float = 0.0
    stages: list[StageReport] = field(default_factory=list)

    @property
    def cost(self) -> float:
        return sum(s.cost for s in self.stages)


def _backend_name(generator: Generator, fallback: str) -> str:
    return str(getattr(generator, "name", fallback))


@dataclass
class Cascade:
    small_strategy: str = "majority"
    small_samples: int = 4
    large_strategy: str = "majority"
    large: Generator | str | None = None  # None: the same generator (a stronger strategy only)
    confidence: Literal["agreement", "verifier", "min"] = "agreement"
    threshold: float = 0.75  # escalate when the confidence is below this
    aggregation: str = "last"  # verifier score -> one number, for confidence "verifier" / "min"
    small_cost_per_token: float = 1.0
    large_cost_per_token: float = 10.0
    verifier_cost_per_token: float = 0.0
    name: str = "cascade"

    def __post_init__(self) -> None:
        from ponder.strategies.registry import make_strategy

        for field_name in ("small_strategy", "large_strategy"):
            value = getattr(self, field_name)
            check_param(value != self.name, self.name, f"{field_name} cannot be {self.name!r} itself")
        check_param(
            self.small_samples >= 1, self.name, f"small_samples must be >= 1, got {self.small_samples}"
        )
        check_param(
            self.confidence in ("agreement", "verifier", "min"),
            self.name,
            f"confidence must be 'agreement', 'verifier' or 'min', got {self.confidence!r}",
        )
        check_param(
            0.0 <= self.threshold <= 1.0, self.name, f"threshold must be in [0, 1], got {self.threshold}"
        )
        for field_name in ("small_cost_per_token", "large_cost_per_token", "verifier_cost_per_token"):
            value = getattr(self, field_name)
            check_param(value >= 0, self.name, f"{field_name} must be >= 0, got {value}")
        check_aggregation(self.name, self.aggregation)
        # Build both stages now, so an unknown strategy name is refused before any work.
        self._small = make_strategy(self.small_strategy)
        self._large = make_strategy(self.large_strategy)
        self._large_generator: Generator | None = None
        if isinstance(self.large, str):
            from ponder.backends.spec import load_generator

            self._large_generator = load_generator(self.large)
        elif self.large is not None:
            self._large_generator = self.large

    def _needs_verifier(self, strategy: str) -> bool:
        from ponder.strategies.registry import NEEDS_VERIFIER

        return strategy in NEEDS_VERIFIER

    def _confidence(self, prompt: str, result: StrategyResult, tracker: BudgetTracker) -> float:
        answered = [c for c in result.candidates if c.answer is not None and not c.partial]
        if result.answer is None or not answered:
            return 0.0
        backing = [c for c in answered if c.answer == result.answer]
        agreement = len(backing) / len(answered)
        if self.confidence == "agreement":
            return agreement
        if all(c.score is not None for c in backing):
            scores = [float(c.score) for c in backing]  # type: ignore[arg-type]
        else:  # stage 1 did not score them: score the answer's samples now (counted in the budget)
            k = tracker.affordable_prefix(prompt, [c.text for c in backing])
            if k == 0:
                return 0.0
            scores = [
                score_value(s, self.aggregation) for s in tracker.score(prompt, [c.text for c in backing[:k]])
            ]
        verified = sum(scores) / len(scores)
        return verified if self.confidence == "verifier" else min(agreement, verified)

    def _report(
        self, stage: str, generator: Generator, strategy: str, c: Compute, price: float, answer: int | None
    ) -> StageReport:
        cost = c.policy_tokens * price + c.verifier_tokens * self.verifier_cost_per_token
        return StageReport(
            stage,
            _backend_name(generator, stage),
            strategy,
            c.policy_tokens,
            c.verifier_tokens,
            c.total_flops,
            cost,
            answer,
        )

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> CascadeResult:
        uses_verifier = self.confidence != "agreement" or any(
            self._needs_verifier(s) for s in (self.small_strategy, self.large_strategy)
        )
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=uses_verifier)
        small_needs = self._needs_verifier(self.small_strategy)
        require_one_sample(tracker, prompt, getattr(self._small, "max_new_tokens", 160), scored=small_needs)

        # Stage 1: the cheap answer, within at most small_samples samples.
        samples = self.small_samples if budget.samples is None else min(self.small_samples, budget.samples)
        first_budget = Budget(samples=samples, tokens=budget.tokens, flops=budget.flops)
        first = self._small.run(prompt, generator, verifier if small_needs else None, first_budget, seed)
        tracker.compute.merge(first.compute)
        trace = [f"small: {self.small_strategy} on {_backend_name(generator, 'small')} -> {first.answer}"]
        try:
            confidence = self._confidence(prompt, first, tracker)
        except BudgetExhausted:
            confidence = 0.0
        stages = [
            self._report(
                "small",
                generator,
                self.small_strategy,
                tracker.compute,
                self.small_cost_per_token,
                first.answer,
            )
        ]
        # The verifier tokens spent on the confidence belong to stage 1 too (already in tracker.compute).
        result = CascadeResult(
            answer=first.answer,
            candidates=list(first.candidates),
            compute=tracker.compute,
            trace=trace,
            confidence=confidence,
            stages=stages,
        )
        trace.append(f"confidence ({self.confidence}) {confidence:.3f}, threshold {self.threshold}")
        if confidence >= self.threshold:
            trace.append("kept the small answer")
            return result

        # Stage 2: escalate with what is left of the budget.
        large_gen = self._large_generator or generator
        spent = tracker.spent
        rest = Budget(
            samples=None if budget.samples is None else max(budget.samples - spent.samples, 0),
            tokens=None if budget.tokens is None else max(budget.tokens - spent.tokens, 0),
            flops=None if budget.flops is None else max(budget.flops - spent.flops, 0.0),
        )
        large_verifier = verifier if self._needs_verifier(self.large_strategy) else None
        try:
            second = self._large.run(
                prompt, large_gen, large_verifier, rest, derive_seed(seed, "cascade", "large")
            )
        except ConfigError as exc:
            if "needs a budget of at least" not in str(exc):
                raise
            trace.append(f"could not escalate: {exc}")
            return result
        result.escalated = True
        tracker.compute.merge(second.compute)
        result.candidates.extend(second.candidates)
        if second.answer is not None:
            result.answer = second.answer
        stages.append(
            self._report(
                "large",
                large_gen,
                self.large_strategy,
                second.compute,
                self.large_cost_per_token,
                second.answer,
            )
        )
        trace.append(
            f"escalated: {self.large_strategy} on {_backend_name(large_gen, 'large')} -> {second.answer}"
        )
        return result
