"""Served models: a configured backend and its verifiers, loaded once, and how requests become prompts.

Backend specs are those of :func:`ponder.backends.spec.load_generator` (``embedded``,
``openai://host:port/model``, ``hf:/path``, ``gguf:/path``) and verifier specs those of
:func:`ponder.verifiers.spec.load_verifier`, plus ``python:module:factory`` for both: any callable
returning a :class:`~ponder.backends.base.Generator` (or :class:`~ponder.verifiers.base.Verifier`),
called with the entry's ``options``. That is how a custom engine is served, and how the tests and
benchmarks plug in instant stub models.
"""

from __future__ import annotations

import importlib
import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ponder.backends.base import Generator
from ponder.errors import ConfigError, PonderError
from ponder.serve.config import ModelEntry, ServeConfig
from ponder.serve.errors import bad_request
from ponder.tasks.answers import answer_extractor
from ponder.tasks.arithmetic import parse_question, to_display
from ponder.verifiers.base import Verifier

# A chain such as 48+27-13 inside a message ("What is 48 + 27 - 13?"), spaces removed first.
_CHAIN = re.compile(r"\d+(?:[+-]\d+)+")


def _from_python(spec: str, options: dict[str, Any], what: str) -> Any:
    target = spec.removeprefix("python:")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} spec {spec!r}: write python:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} spec {spec!r}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{what} spec {spec!r}: {module_name} has no callable {attr!r}")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"{what} spec {spec!r}: bad options {sorted(options)}: {exc}") from None


def load_backend(spec: str, options: dict[str, Any]) -> Generator:
    """The generator a model entry's ``backend`` names."""
    if spec.startswith("python:"):
        generator = _from_python(spec, options, "backend")
    else:
        from ponder.backends.spec import load_generator

        generator = load_generator(spec, **options)
    for attr in ("generate", "num_params"):
        if not hasattr(generator, attr):
            raise ConfigError(f"backend {spec!r} gave {type(generator).__name__}, which has no {attr!r}")
    return generator


def load_verifier(spec: str) -> Verifier:
    """The verifier a spec names: those of :func:`ponder.verifiers.spec.load_verifier` (``embedded``,
    ``hf-prm:/dir``, ``vllm-reward://host:port/model``, ``judge:<backend>``, ...) or
    ``python:module:factory``."""
    if spec.startswith("python:"):
        verifier = _from_python(spec, {}, "verifier")
    else:
        from ponder.verifiers.spec import load_verifier as load_spec

        verifier = load_spec(spec)
    if not hasattr(verifier, "score"):
        raise ConfigError(f"verifier {spec!r} gave {type(verifier).__name__}, which has no 'score'")
    return verifier


def chat_as_prompt(messages: list[dict[str, str]]) -> str:
    """The one prompt string a generator takes, for a chat.

    A chat that is a single user message is that message: chat backends (``api=chat``, HF and GGUF
    chat templates) wrap it as the user turn, and completion backends read it as is. A longer chat
    (a system message, earlier turns) becomes a transcript, one ``role: content`` block per message,
    ending with the assistant's turn.
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n\n".join([*lines, "assistant:"])


@dataclass
class ServedModel:
    """A model entry with its backend and verifiers loaded."""

    entry: ModelEntry
    generator: Generator
    verifiers: dict[str, Verifier | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def default_verifier(self) -> str:
        return self.entry.verifier if self.entry.verifier is not None else "none"

    def verifier(self, name: str | None) -> tuple[str, Verifier | None]:
        """The verifier a request names (the model's default when None); 400 naming the choices."""
        name = self.default_verifier if name is None else name
        if name not in self.verifiers:
            raise bad_request(
                f"unknown verifier {name!r} for model {self.name!r}: choose one of {sorted(self.verifiers)}",
                "ponder.verifier",
            )
        return name, self.verifiers[name]

    # --- requests -> prompts, candidates -> text ------------------------------------------------------

    def question_prompt(self, text: str, param: str) -> str:
        """The embedded task's prompt for a question such as ``48+27-13`` found in ``text``."""
        compact = re.sub(r"\s+", "", text)
        match = _CHAIN.search(compact)
        if match is None:
            raise bad_request(
                f"model {self.name!r} answers chains of additions and subtractions such as '48+27-13'; "
                f"{param} holds none",
                param,
            )
        try:
            return parse_question(match.group()).prompt
        except PonderError as exc:
            raise bad_request(f"{param}: {exc}", param) from None

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if self.entry.format == "arithmetic":
            for i in range(len(messages) - 1, -1, -1):
                if messages[i]["role"] == "user":
                    return self.question_prompt(messages[i]["content"], f"messages[{i}].content")
            raise bad_request(f"model {self.name!r} needs a user message holding the question", "messages")
        # A backend that can render a whole chat itself says so with a chat_prompt(messages) hook.
        hook = getattr(self.generator, "chat_prompt", None)
        return hook(messages) if callable(hook) else chat_as_prompt(messages)

    def text_prompt(self, prompt: str, param: str) -> str:
        if self.entry.format == "arithmetic":
            return self.question_prompt(prompt, param)
        return prompt

    def answer_context(self) -> AbstractContextManager[None]:
        """The answer rule strategies vote with while this model's searches run."""
        fmt = self.entry.answers
        if fmt == "arithmetic":
            return nullcontext()
        if fmt == "text":
            return answer_extractor(lambda text: text.strip() or None)
        from ponder.eval.datasets import answer_format

        return answer_format(fmt).strategy_context()

    def render(self, text: str) -> str:
        """A candidate's text as the client sees it (the embedded task writes digits reversed)."""
        return to_display(text).strip() if self.entry.format == "arithmetic" else text


def load_models(config: ServeConfig) -> dict[str, ServedModel]:
    """Every configured model, loaded now so that a bad spec stops the server before it listens."""
    verifier_cache: dict[str, Verifier] = {}
    out: dict[str, ServedModel] = {}
    for i, entry in enumerate(config.models):
        where = f"models[{i}] ({entry.name!r})"
        try:
            generator = load_backend(entry.backend, entry.options)
            verifiers: dict[str, Verifier | None] = {"none": None}
            specs = dict(entry.verifiers)
            if entry.verifier is not None:
                specs[entry.verifier] = entry.verifier
            for name, spec in specs.items():
                if spec in ("none", ""):
                    verifiers[name] = None
                    continue
                if spec not in verifier_cache:
                    verifier_cache[spec] = load_verifier(spec)
                verifiers[name] = verifier_cache[spec]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[entry.name] = ServedModel(entry, generator, verifiers)
    return out
