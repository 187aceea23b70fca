"""Pieces the real-model backends (HTTP, transformers, llama.cpp) share: parameter checks, chat
templates, cutting a completion at the step delimiter, and sampling from logits."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ponder.backends.base import Completion, SamplingParams
from ponder.errors import ConfigError
from ponder.tasks.arithmetic import STEP_DELIMITER

DEFAULT_STEP_DELIMITER = STEP_DELIMITER
# Tokens a chat template adds around a user turn are counted exactly; a path moved from the
# user turn (how strategies count a prompt) to the assistant turn (how it is sent) can tokenize
# a few tokens differently at the boundaries, so budgets allow this many more.
CHAT_BOUNDARY_TOKENS = 4
# End-of-turn tokens of common chat templates: generation stops at any of them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


class ContinuationGenerator:
    """Base of the real-model backends: each implements ``generate_continuations`` (a question
    and the part of the answer written so far, so chat models continue their own turn), and a
    plain ``generate`` is the case with nothing written yet."""

    def generate(self, prompts: list[str], params: SamplingParams | None = None) -> list[list[Completion]]:
        return self.generate_continuations(prompts, [""] * len(prompts), params)

    def generate_continuations(
        self, questions: list[str], responses: list[str], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        raise NotImplementedError


def validate_params(params: SamplingParams) -> None:
    if getattr(params, "top_logprobs", 0) < 0:
        raise ConfigError(f"top_logprobs must be >= 0, got {params.top_logprobs}")
    if isinstance(getattr(params, "stop", ()), str):
        raise ConfigError("stop must be a tuple of strings, not one string")
    if params.n < 1:
        raise ConfigError(f"n must be at least 1, got {params.n}")
    if params.temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {params.max_new_tokens}")


def check_prompts(prompts: Sequence[str], responses: Sequence[str] | None = None) -> None:
    if not prompts:
        raise ConfigError("no prompts given")
    if responses is not None and len(responses) != len(prompts):
        raise ConfigError(f"{len(prompts)} questions but {len(responses)} responses")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ConfigError(f"prompt {i} must be a string, got {type(p).__name__}")


def checked_call(
    questions: Sequence[str], responses: Sequence[str] | None, params: SamplingParams | None
) -> SamplingParams:
    """The call's sampling parameters (defaults when None), after refusing bad parameters or prompts:
    the checks every backend makes before any work."""
    params = params or SamplingParams()
    validate_params(params)
    check_prompts(questions, responses)
    return params


def cut_at_step(text: str, delimiter: str) -> tuple[str, bool]:
    """``text`` up to and including the first ``delimiter``, and whether there was one."""
    i = text.find(delimiter)
    if i < 0:
        return text, False
    return text[: i + len(delimiter)], True


def stop_strings(params: SamplingParams, step_delimiter: str) -> tuple[str, ...]:
    """The strings that end a sample: ``params.stop``, and the step delimiter for step-wise search."""
    stops = tuple(s for s in params.stop if s)
    if params.stop_at_step and step_delimiter not in stops:
        stops = (step_delimiter, *stops)
    return stops


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to and including the stop string that ends first in it, and that string (None
    when there is none). The matched string stays at the end, as the step delimiter does."""
    best: tuple[int, str] | None = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or i + len(stop) < best[0]):
            best = (i + len(stop), stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def render_chat(template: str, question: str, bos_token: str = "", eos_token: str = "") -> str:
    """The chat template rendered for one user turn, ready for the assistant's reply."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=[{"role": "user", "content": question}],
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except jinja2.TemplateError as exc:
        raise ConfigError(f"the model's chat template failed to render: {exc}") from exc


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A seed for sample ``sample_index`` of prompt ``prompt_index``, from the call's seed alone, so
    sample ``s`` does not depend on how many samples a call asks for."""
    digest = hashlib.sha256(repr((seed, prompt_index, sample_index)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class Draw:
    token: int
    logprob: float  # the model's log-probability of the token, before temperature and top-p


def sample_logits(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> Draw:
    """One token from a row of logits (greedy at temperature 0): softmax of logits / temperature,
    cut to the smallest top-p nucleus, drawn by inverse CDF from one uniform of ``rng``."""
    x = np.asarray(logits, dtype=np.float32)
    best = int(x.argmax())
    top = float(x[best])
    z = x - top
    weights = np.exp(z)
    logz = top + math.log(float(weights.sum(dtype=np.float64)))
    if temperature == 0:
        return Draw(best, top - logz)
    if temperature != 1:
        weights = np.exp(z / temperature)
    u = rng.random()
    total = float(weights.sum(dtype=np.float64))
    if top_p < 1.0:
        order = _nucleus_order(weights, top_p * total)
        kept = weights[order].astype(np.float64)
        cumulative = np.cumsum(kept)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        keep = max(1, int(np.searchsorted(cumulative - kept, top_p * total, side="left")))
        idx = int(np.searchsorted(cumulative[:keep], u * cumulative[keep - 1], side="right"))
        token = int(order[min(idx, keep - 1)])
    else:
        cdf = np.cumsum(weights, dtype=np.float64)
        token = int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1))
    return Draw(token, float(x[token]) - logz)


def _nucleus_order(weights: np.ndarray, mass: float) -> np.ndarray:
    """Token ids, heaviest first, enough of them to hold ``mass`` (sorting all 50k-odd weights
    of a vocabulary takes milliseconds; the nucleus is almost always within the top few hundred)."""
    k = 256
    while k < len(weights):
        part = np.argpartition(-weights, k)[:k]
        order = part[np.argsort(-weights[part], kind="stable")]
        if float(weights[order].sum(dtype=np.float64)) >= mass:
            return order
        k *= 4
    return np.argsort(-weights, kind="stable")


def top_logprobs(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` likeliest tokens of a row of logits and their log-probabilities, best first."""
    logits = logits.astype(np.float64, copy=False)
    k = min(k, len(logits))
    top = float(logits.max())
    logz = top + float(np.log(np.exp(logits - top).sum()))
    idx = np.argpartition(-logits, k - 1)[:k]
    idx = idx[np.argsort(-logits[idx], kind="stable")]
    return [(int(i), float(logits[i] - logz)) for i in idx]


def parse_bool(value: str) -> bool:
    """A spec option's boolean: 1/true/yes/on or 0/false/no/off."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def parse_options(query: str) -> dict[str, str]:
    """``a=1&b=x`` -> ``{"a": "1", "b": "x"}`` (a spec's options)."""
    from urllib.parse import parse_qsl

    try:
        return dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise ConfigError(f"malformed backend options {query!r}: use name=value&name=value") from exc
