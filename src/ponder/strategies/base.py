"""The strategy seam: problem + budget + generator + verifier -> answer, candidates, compute spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ponder.backends.base import Completion, Generator
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:  # budget.py builds on Compute, so importing it here at run time would be circular
    from ponder.strategies.budget import Budget


@dataclass
class Compute:
    """What a run spent. FLOPs are 2 x non-embedding parameters x tokens run through each model.

    ``samples`` is what a budget's ``samples`` limit counts: full solutions for the sampling
    strategies, step candidates per round (the generation budget N) for step-level search.
    ``completions`` counts every completion the policy returned (search steps and rollouts too).
    """

    policy_prompt_tokens: int = 0
    policy_completion_tokens: int = 0
    verifier_tokens: int = 0
    policy_flops: float = 0.0
    verifier_flops: float = 0.0
    samples: int = 0
    completions: int = 0
    # Prompt tokens a generator's prefix cache supplied: not computed, so not in the counts above.
    policy_cached_tokens: int = 0
    # Wall time of the run until its last call ended; never part of equality (runs that did the
    # same work are equal however long they took).
    wall_seconds: float = field(default=0.0, compare=False)

    @property
    def total_flops(self) -> float:
        return self.policy_flops + self.verifier_flops

    @property
    def policy_tokens(self) -> int:
        return self.policy_prompt_tokens + self.policy_completion_tokens

    def add_generation(
        self, generator: Generator, completions: list[list[Completion]], samples: int | None = None
    ) -> None:
        """Count a generate() call: each distinct prompt once (its KV cache is shared; the part a
        prefix cache supplied is not computed and not counted), every sample.

        ``samples`` is how much the call adds to the samples count; None counts every completion
        (step-level search passes less: its later rounds re-use the N sample slots of the first).
        """
        prompt = sum(group[0].prompt_tokens - group[0].cached_prompt_tokens for group in completions if group)
        self.policy_cached_tokens += sum(group[0].cached_prompt_tokens for group in completions if group)
        emitted = sum(c.completion_tokens for group in completions for c in group)
        returned = sum(len(group) for group in completions)
        self.policy_prompt_tokens += prompt
        self.policy_completion_tokens += emitted
        self.samples += returned if samples is None else samples
        self.completions += returned
        self.policy_flops += 2.0 * generator.num_params * (prompt + emitted)

    def merge(self, other: Compute) -> None:
        names = (
            "policy_prompt_tokens",
            "policy_completion_tokens",
            "verifier_tokens",
            "samples",
            "completions",
            "policy_cached_tokens",
        )
        for name in names:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.policy_flops += other.policy_flops
        self.verifier_flops += other.verifier_flops
        self.wall_seconds += other.wall_seconds

    def add_verification(self, verifier: Verifier, tokens: int) -> None:
        self.verifier_tokens += tokens
        self.verifier_flops += 2.0 * verifier.num_params * tokens


@dataclass
class Candidate:
    """A solution a strategy produced. ``partial`` marks a step-search path pruned (or still open)
    before it reached an answer line; its score is the verifier's score of the prefix."""

    text: str
    answer: int | None
    score: float | None = None
    partial: bool = False


@dataclass
class StrategyResult:
    """The answer, every candidate with its score, what was really spent, and (for search) one
    line per round saying what happened."""

    answer: int | None
    candidates: list[Candidate]
    compute: Compute
    trace: list[str] = field(default_factory=list)


class Strategy(Protocol):
    """A way of spending test-time compute on one prompt, never more than ``budget`` allows."""

    name: str

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult: ...
