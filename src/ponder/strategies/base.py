"""The strategy seam: problem + budget + generator + verifier -> answer, candidates, compute spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ponder.backends.base import Completion, Generator
from ponder.verifiers.base import Verifier


@dataclass
class Compute:
    """What a run spent. FLOPs are 2 x non-embedding parameters x tokens run through each model."""

    policy_prompt_tokens: int = 0
    policy_completion_tokens: int = 0
    verifier_tokens: int = 0
    policy_flops: float = 0.0
    verifier_flops: float = 0.0
    samples: int = 0

    @property
    def total_flops(self) -> float:
        return self.policy_flops + self.verifier_flops

    @property
    def policy_tokens(self) -> int:
        return self.policy_prompt_tokens + self.policy_completion_tokens

    def add_generation(self, generator: Generator, completions: list[list[Completion]]) -> None:
        """Count a generate() call: each distinct prompt once (its KV cache is shared), every sample."""
        prompt = sum(group[0].prompt_tokens for group in completions if group)
        emitted = sum(c.completion_tokens for group in completions for c in group)
        self.policy_prompt_tokens += prompt
        self.policy_completion_tokens += emitted
        self.samples += sum(len(group) for group in completions)
        self.policy_flops += 2.0 * generator.num_params * (prompt + emitted)

    def merge(self, other: Compute) -> None:
        for name in ("policy_prompt_tokens", "policy_completion_tokens", "verifier_tokens", "samples"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.policy_flops += other.policy_flops
        self.verifier_flops += other.verifier_flops

    def add_verification(self, verifier: Verifier, tokens: int) -> None:
        self.verifier_tokens += tokens
        self.verifier_flops += 2.0 * verifier.num_params * tokens


@dataclass
class Candidate:
    text: str
    answer: int | None
    score: float | None = None


@dataclass
class StrategyResult:
    answer: int | None
    candidates: list[Candidate]
    compute: Compute
    trace: list[str] = field(default_factory=list)


class Strategy(Protocol):
    """A way of spending test-time compute on one prompt."""

    name: str

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, samples: int, seed: int
    ) -> StrategyResult: ...
