"""The generator seam: what every backend (embedded, HTTP, HF, llama.cpp) provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    ``logprobs`` are the model's own log-probabilities of the emitted tokens (before temperature
    and top-p), so they are comparable across sampling settings.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (step delimiter), "eos" (end of answer) or "length"
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sum_logprob(self) -> float:
        return float(sum(self.logprobs))


@dataclass
class GenerationUsage:
    """Tokens a call really computed: prompt tokens once per distinct prompt, plus every emitted token."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    forward_tokens: int = field(default=0)  # all positions run through the model, padding included

    def add(self, other: GenerationUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.forward_tokens += other.forward_tokens


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    stop_at_step: bool = False  # stop after one step delimiter (step-wise search)
    seed: int | None = None


@runtime_checkable
class Generator(Protocol):
    """Batched sampling of ``n`` continuations for each of many prompts.

    Optional, used by budgeted strategies when present (see :mod:`ponder.strategies.budget`):
    ``count_prompt_tokens(prompt) -> int``, the tokens ``generate`` runs a prompt through (its
    special tokens included; without it one token per UTF-8 byte plus one is assumed), and
    ``context_length``, the most tokens a prompt and its continuation may hold.
    """

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """One list of ``params.n`` completions per prompt, in prompt order."""
        ...

    @property
    def num_params(self) -> int:
        """Non-embedding parameters, for FLOPs accounting (2 x params x tokens)."""
        ...
