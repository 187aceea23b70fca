"""Request and response bodies: the OpenAI chat / completions / models shapes, plus the ``ponder`` object.

Requests accept (and ignore) OpenAI fields that do not change the answer (``user``, penalties,
``logit_bias``, ``top_p``); fields that would (tools, logprobs, token-id prompts, ``suffix``,
``best_of``) are refused with a 400 naming them rather than silently dropped. Unknown top-level
fields are ignored, as the OpenAI API's clients expect; unknown keys inside ``ponder`` are refused.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.serve.config import BudgetSpec

MAX_STOP = 4
_SEED_MAX = 2**63 - 1


class PonderOptions(BaseModel):
    """How to spend test-time compute on a request: the official client's ``extra_body={"ponder": ...}``."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(
        default=None,
        max_length=64,
        description="a strategy (greedy, majority, best_of_n, beam_search, ...), optionally with -N "
        "samples (e.g. beam-16); default: the model prefix's, else the model's default",
        examples=["majority", "beam-4"],
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description='the strategy\'s own parameters, e.g. {"beam_width": 4}'
    )
    budget: BudgetSpec | None = Field(
        default=None, description="limits on samples / tokens / FLOPs; each at most the server's maximum"
    )
    verifier: str | None = Field(
        default=None, max_length=200, description="one of the model's verifiers by name, or 'none'"
    )
    return_candidates: bool = Field(default=False, description="include every candidate and its score")
    return_trace: bool = Field(default=False, description="include the search's trace, one line per round")
    progress: bool = Field(default=True, description="when streaming, send progress events during the search")

    @field_validator("params")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"parameter {key!r} must be a finite number, got {item}")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


def _check_stop(value: Any) -> Any:
    if isinstance(value, list):
        if len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences, got {len(value)}")
        if any(isinstance(s, str) and not s for s in value):
            raise ValueError("a stop sequence must not be empty")
    elif value == "":
        raise ValueError("a stop sequence must not be empty")
    return value


class _Common(BaseModel):
    """Fields the chat and completions requests share."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        min_length=1,
        max_length=256,
        description="a served model, optionally behind a strategy prefix: beam-16/embedded",
        examples=["embedded", "majority-4/embedded"],
    )
    n: int = Field(default=1, ge=1, le=128, description="choices: the top-n distinct answers")
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, description="longest answer, in tokens")
    temperature: float | None = Field(default=None, ge=0, le=2, description="sampling temperature")
    top_p: float | None = Field(default=None, gt=0, le=1, description="accepted, not used")
    seed: int | None = Field(default=None, ge=0, le=_SEED_MAX, description="fixes the search's sampling")
    stop: str | list[str] | None = Field(default=None, description="the answer is cut before these")
    user: str | None = Field(default=None, description="accepted, not used")
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, description="accepted, not used")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, description="accepted, not used")
    logit_bias: dict[str, float] | None = Field(default=None, description="accepted, not used")
    ponder: PonderOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        return _check_stop(value)

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def _text_content(value: Any) -> Any:
    """A message's content as one string: a string, or a list of text parts (joined by newlines)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError("must be a string or a list of text parts ({'type': 'text', 'text': ...})")
    texts = []
    for i, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(
                f"part {i} must be {{'type': 'text', 'text': '...'}}; got {kind!r} "
                "(this server takes text only)"
            )
        texts.append(part["text"])
    return "\n".join(texts)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = Field(default=None, description="a string, or a list of text parts")
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _text_content(value)


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_completion_tokens: int | None = Field(default=None, ge=1, description="same as max_tokens")
    logprobs: bool | None = Field(default=None, description="not supported: must be false or absent")
    top_logprobs: int | None = Field(default=None, description="not supported")
    tools: list[Any] | None = Field(default=None, description="not supported")
    tool_choice: Any | None = Field(default=None, description="not supported")
    functions: list[Any] | None = Field(default=None, description="not supported")
    function_call: Any | None = Field(default=None, description="not supported")
    response_format: dict[str, Any] | None = Field(default=None, description="only {'type': 'text'}")

    def unsupported(self) -> str | None:
        """The first field set that this server cannot honour, if any."""
        if self.logprobs:
            return "logprobs"
        for name in ("top_logprobs", "tools", "tool_choice", "functions", "function_call"):
            if getattr(self, name) not in (None, [], "none"):
                return name
        if self.response_format not in (None, {"type": "text"}):
            return "response_format"
        return None


def _check_prompt(value: Any) -> Any:
    if isinstance(value, list):
        if not value:
            raise ValueError("must not be an empty list")
        if any(not isinstance(p, str) for p in value):
            raise ValueError("must be a string or a list of strings (token-id prompts are not supported)")
    return value


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(description="one prompt, or a list of prompts (choices per prompt)")
    echo: bool = Field(default=False, description="put the prompt before each answer")
    suffix: str | None = Field(default=None, description="not supported")
    logprobs: int | None = Field(default=None, description="not supported")
    best_of: int | None = Field(default=None, description="not supported: use a strategy (best_of_n-16/...)")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        return _check_prompt(value)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> str | None:
        if self.suffix:
            return "suffix"
        if self.logprobs is not None:
            return "logprobs"
        if self.best_of not in (None, 1):
            return "best_of"
        return None


# --- responses (documentation: handlers build plain dicts, validated by the tests) -----------------


class Usage(BaseModel):
    prompt_tokens: int = Field(description="policy prompt tokens + verifier tokens")
    completion_tokens: int = Field(description="policy generated tokens")
    total_tokens: int


class PonderInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    strategy: str
    params: dict[str, Any]
    verifier: str | None
    budget: dict[str, float]
    spent: dict[str, float]
    seed: int
    elapsed_s: float
    answer: int | str | None = None
    candidates: list[dict[str, Any]] | None = None
    trace: list[str] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    ponder: PonderInfo


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    ponder: PonderInfo


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ponder"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok"] = "ok"
    models: list[str]
    running: int
    queued: int


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
