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
    finish_reason: str  # "stop" (step delimiter or a stop string), "eos" (end of answer) or "length"
    prompt_tokens: int
    # Of ``prompt_tokens``, those whose keys and values came from a prefix cache instead of being
    # computed (a search re-reading a path it grew earlier); budgets count only the rest.
    cached_prompt_tokens: int = 0
    # Tokens emitted, for backends that know the count but not the ids (a remote server that
    # reports usage only); None means len(token_ids).
    n_tokens: int | None = None
    # When asked for (``SamplingParams.top_logprobs``) and the backend can: per emitted token, the
    # most likely tokens' text -> log-probability (LLM-as-judge verifiers read P("Yes") here).
    top_logprobs: list[dict[str, float]] | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids) if self.n_tokens is None else self.n_tokens

    @property
    def sum_logprob(self) -> float:
        return float(sum(self.logprobs))


@dataclass
class GenerationUsage:
    """Tokens a call really computed: prompt tokens once per distinct prompt (less those a prefix
    cache supplied), plus every emitted token."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    forward_tokens: int = field(default=0)  # all positions run through the model, padding included
    cached_prompt_tokens: int = 0  # prompt tokens read from a prefix cache (not in prompt_tokens)

    def add(self, other: GenerationUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.forward_tokens += other.forward_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    stop_at_step: bool = False  # stop after one step delimiter (step-wise search)
    seed: int | None = None
    # Strings that end a sample (finish_reason "stop"), e.g. an end-of-thinking tag. The matched
    # string stays at the end of the text, as the step delimiter does, so every emitted token is
    # in the text and counted.
    stop: tuple[str, ...] = ()
    # Return this many most likely tokens per emitted token in ``Completion.top_logprobs`` (0: none).
    # Backends that cannot leave it None; an LLM-as-judge verifier then reads the emitted token only.
    top_logprobs: int = 0


@runtime_checkable
class Generator(Protocol):
    """Batched sampling of ``n`` continuations for each of many prompts.

    Optional, used by budgeted strategies when present (see :mod:`ponder.strategies.budget`):
    ``count_prompt_tokens(prompt) -> int``, the tokens ``generate`` runs a prompt through (its
    special tokens included; without it one token per UTF-8 byte plus one is assumed), and
    ``context_length``, the most tokens a prompt and its continuation may hold; and
    ``generate_continuations(questions, responses, params)``, which continues the model's own
    partial ``responses[i]`` to ``questions[i]`` (chat models wrap the question in their chat
    template and continue the assistant turn). Strategies reach it through the budget tracker,
    which splits each ``prompt + path`` it generates from at the run's prompt; and
    ``reset_prefix_cache()``, which the tracker calls when a strategy run starts, so that what a
    run computes (and reports) does not depend on earlier runs sharing the generator.
    """

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """One list of ``params.n`` completions per prompt, in prompt order."""
        ...

    @property
    def num_params(self) -> int:
        """Non-embedding parameters, for FLOPs accounting (2 x params x tokens)."""
        ...
