"""The server configuration: which models are served, how, and the limits that keep the server bounded.

Read from a YAML or JSON file (``ponder serve --config FILE``) and validated by pydantic; without a
file the server serves the embedded default as the model ``embedded``. Every error names the field::

    host: 127.0.0.1
    port: 8000
    max_concurrency: 2        # searches running at once (worker threads)
    max_queue: 256            # requests waiting for a worker; beyond that: 429 + Retry-After
    models:
      - name: embedded
        backend: embedded     # or openai://host:port/model, hf:/path, gguf:/path, python:module:factory
        verifier: embedded    # a verifier spec (hf-prm:/dir, vllm-reward://..., ...) or none
        prompt_format: arithmetic   # chat: the messages go to the backend (default for other backends)
        answer_format: arithmetic   # what strategies vote on: gsm8k, math, number, text
        strategy: majority    # the default when a request names none
        budget: {samples: 16}
        max_budget: {samples: 64, tokens: 100000}
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ponder.errors import ConfigError
from ponder.strategies.budget import Budget

# Model names are what clients put in "model"; a slash separates a strategy prefix (beam-16/NAME).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*(/[A-Za-z0-9._:@-]+)*")


class BudgetSpec(BaseModel):
    """Limits in the units of :class:`ponder.strategies.budget.Budget`; at least one is set."""

    model_config = ConfigDict(extra="forbid")

    samples: int | None = Field(default=None, ge=1, description="samples (the generation budget N)")
    tokens: int | None = Field(
        default=None, ge=1, description="policy prompt + generated tokens + verifier tokens"
    )
    flops: float | None = Field(default=None, gt=0, description="FLOPs, policy and verifier together")

    @field_validator("flops")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("samples", "tokens", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # JSON true is not a sample count, nor is 2.5; pydantic's lax mode would take both.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        return value

    def is_empty(self) -> bool:
        return self.samples is None and self.tokens is None and self.flops is None

    def to_budget(self) -> Budget:
        return Budget(samples=self.samples, tokens=self.tokens, flops=self.flops)

    def describe(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ModelEntry(BaseModel):
    """One served model: a backend, its verifiers, and the strategy and budgets requests get."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what clients send as 'model'")
    backend: str = Field(
        default="embedded",
        description="embedded, openai://host:port/model, hf:/path, gguf:/path, or python:module:factory",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of a python:module:factory backend"
    )
    verifier: str | None = Field(
        default="embedded", description="the default verifier spec (embedded, python:..., or none)"
    )
    verifiers: dict[str, str] = Field(
        default_factory=dict, description="more verifiers (name: spec) a request may choose (ponder.verifier)"
    )
    prompt_format: Literal["arithmetic", "chat"] | None = Field(
        default=None,
        description="arithmetic: the last user message is a question such as 48+27-13 (the embedded "
        "default); chat: the messages go through the backend's chat handling. Default: arithmetic for "
        "the embedded backend, chat otherwise",
    )
    answer_format: Literal["arithmetic", "gsm8k", "math", "number", "text"] | None = Field(
        default=None,
        description="how strategies read a final answer to vote on: the built-in task's A: line, "
        "GSM8K's #### N / last number, MATH's last \\boxed{}, a number, or the whole text. Default: "
        "arithmetic for the arithmetic prompt format, text otherwise",
    )
    strategy: str = Field(default="majority", description="the strategy when a request names none")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters of the default strategy")
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(samples=16))
    max_budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(samples=64, tokens=100_000))
    max_n: int = Field(default=8, ge=1, le=128, description="most choices (n) a request may ask for")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a model name: letters, digits and ._:@- , parts separated by '/'"
            )
        return value

    @field_validator("verifier", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        return None if value in ("none", "") else value

    @field_validator("verifiers")
    @classmethod
    def _verifier_names(cls, value: dict[str, str]) -> dict[str, str]:
        if "none" in value:
            raise ValueError("'none' is reserved: it means no verifier")
        return value

    @model_validator(mode="after")
    def _budgets(self) -> ModelEntry:
        if self.budget.is_empty():
            raise ValueError("budget needs at least one limit: samples, tokens or flops")
        if self.max_budget.tokens is None:
            # Only a token (or FLOPs) limit bounds how long a search can run, whatever its parameters.
            raise ValueError("max_budget.tokens must be set: it bounds how long any search may run")
        for field, limit in self.max_budget.describe().items():
            value = getattr(self.budget, field)
            if value is not None and value > limit:
                raise ValueError(f"budget.{field} ({value}) is above max_budget.{field} ({limit})")
        return self

    @property
    def format(self) -> str:
        if self.prompt_format is not None:
            return self.prompt_format
        return "arithmetic" if self.backend == "embedded" else "chat"

    @property
    def answers(self) -> str:
        if self.answer_format is not None:
            return self.answer_format
        return "arithmetic" if self.format == "arithmetic" else "text"

    def verifier_names(self) -> list[str]:
        """What a request may send as ``ponder.verifier``."""
        names = ["none", *self.verifiers]
        if self.verifier is not None and self.verifier not in names:
            names.insert(0, self.verifier)
        return names


class ServeConfig(BaseModel):
    """Everything ``ponder serve`` needs; the defaults serve the embedded model on loopback."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str] = Field(
        default_factory=list, description="keys a request must bear (Authorization: Bearer KEY); none: open"
    )
    max_concurrency: int = Field(default=2, ge=1, le=1024, description="searches running at once")
    max_queue: int = Field(default=256, ge=0, le=100_000, description="requests waiting for a worker")
    timeout_s: float = Field(default=300.0, gt=0, description="a search running longer is stopped (504)")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="largest request body (413)")
    max_prompt_chars: int = Field(default=32_000, ge=1, description="largest prompt, all messages together")
    max_prompts: int = Field(default=16, ge=1, description="most prompts in one /v1/completions request")
    log_requests: bool = Field(default=False, description="log request and response bodies (user data)")
    access_log: bool = Field(default=False, description="uvicorn's one line per request")
    models: list[ModelEntry] = Field(default_factory=lambda: [ModelEntry(name="embedded")], min_length=1)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        if any(not k or k != k.strip() for k in value):
            raise ValueError("an API key must be non-empty, without surrounding spaces")
        return value

    @model_validator(mode="after")
    def _unique(self) -> ServeConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {dupes}")
        return self

    def model(self, name: str) -> ModelEntry | None:
        return next((m for m in self.models if m.name == name), None)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def validation_message(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its field."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{_loc(tuple(err['loc']))}: {msg}")
    return "; ".join(lines)


def parse_config(data: Any, source: str = "config") -> ServeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings, got {type(data).__name__}")
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_message(exc)}") from None


def load_config(path: str | Path) -> ServeConfig:
    """A config from a YAML or JSON file; a ConfigError naming the file and field when it is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_config(data, source=f"config file {path}")
