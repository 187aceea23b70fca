"""Backend specs: one string names the generator a run uses.

- ``embedded`` (or ``embedded:/path/policy.safetensors``): the shipped policy, the default;
  ``embedded+reviser``: the policy fine-tuned to revise its own wrong attempts (shipped; ``ponder
  train reviser`` makes it); ``embedded+orders``: a policy of the same size trained on solutions
  that apply the operations in random orders, whose samples disagree where they slip (shipped;
  ``ponder train policy --order-shuffle 1.0``): the one for majority vote.
- ``openai://host:port/model``, ``openai+https://host/model``: any OpenAI-compatible server (vLLM,
  SGLang, llama.cpp's server, Ollama, a provider). The API root is ``/v1`` unless ``prefix=`` says
  otherwise; an empty model picks the only one the server serves. The API key comes from
  ``api_key=`` or the environment variable ``api_key_env`` names (``OPENAI_API_KEY``).
- ``hf:/local/dir``: a transformers model saved in a local directory (``pip install 'ponder[hf]'``).
- ``gguf:/path/model.gguf``: a GGUF file run by llama.cpp (``pip install 'ponder[real]'``).

Options follow a ``?`` as ``name=value&name=value`` (``openai://127.0.0.1:8000/qwen?api=chat&n_mode=
fanout``), or come as keyword arguments, which win. Every spec is checked before any work: an
unknown scheme or option, a missing file or directory, an unreachable server or a model it does
not serve raises a ConfigError naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponder.backends.base import Generator
from ponder.backends.common import parse_bool, parse_options
from ponder.errors import ConfigError

DEFAULT_BACKEND = "embedded"
SCHEMES = (
    "embedded",
    "embedded+reviser",
    "embedded+orders",
    "openai://",
    "openai+http://",
    "openai+https://",
    "hf:",
    "gguf:",
)
USAGE = (
    "embedded, embedded+reviser, embedded+orders, openai://host:port/model, openai+https://host/model, "
    "hf:/model/dir or gguf:/file.gguf"
)


def _int_or_none(value: str) -> int | None:
    return None if value.strip().lower() in ("", "none", "auto") else int(float(value))


def _json_object(value: str) -> dict:
    import json

    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{value!r} is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"{value!r} is not a JSON object")
    return parsed


def _chat(value: str) -> bool | None:
    return None if value.strip().lower() in ("", "auto") else parse_bool(value)


# Options each scheme takes, with how a spec string's value is read.
COMMON: dict[str, Callable[[str], Any]] = {"step_delimiter": lambda v: v.encode().decode("unicode_escape")}
OPENAI_OPTIONS: dict[str, Callable[[str], Any]] = {
    **COMMON,
    "api": str,
    "n_mode": str,
    "max_concurrency": int,
    "timeout": float,
    "max_retries": int,
    "backoff": float,
    "max_backoff": float,
    "logprobs": parse_bool,
    "system": str,
    "continue_final_message": parse_bool,
    "chat_overhead": int,
    "num_params": _int_or_none,
    "context_length": _int_or_none,
    "check": parse_bool,
    "extra_body": _json_object,
    "api_key": str,
    "api_key_env": str,
    "prefix": str,
    "http": str,
}
HF_OPTIONS: dict[str, Callable[[str], Any]] = {
    **COMMON,
    "chat": _chat,
    "dtype": str,
    "device": str,
    "share_prompt_cache": parse_bool,
}
GGUF_OPTIONS: dict[str, Callable[[str], Any]] = {
    **COMMON,
    "chat": _chat,
    "n_ctx": int,
    "n_threads": _int_or_none,
    "n_batch": int,
    "max_batch": int,
}


def typed_options(
    owner: str, allowed: dict[str, Callable[[str], Any]], query: dict[str, str], options: dict[str, Any]
) -> dict[str, Any]:
    """Options of ``owner`` (e.g. "the hf backend"): query-string values typed by ``allowed``,
    keyword options as given; anything not in ``allowed`` is refused by name."""
    out: dict[str, Any] = {}
    for key, value in query.items():
        if key not in allowed:
            raise ConfigError(f"unknown option {key!r} for {owner}: it takes {sorted(allowed)}")
        try:
            out[key] = allowed[key](value)
        except ValueError as exc:
            raise ConfigError(f"bad value for option {key!r} of {owner}: {exc}") from exc
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(f"unknown option {key!r} for {owner}: it takes {sorted(allowed)}")
        out[key] = value
    return out


def _typed(
    scheme: str, allowed: dict[str, Callable[[str], Any]], query: dict[str, str], options: dict[str, Any]
) -> dict[str, Any]:
    return typed_options(f"the {scheme} backend", allowed, query, options)


def _split(spec: str) -> tuple[str, dict[str, str]]:
    body, _, query = spec.partition("?")
    return body, parse_options(query)


def load_generator(spec: str = DEFAULT_BACKEND, **options: Any) -> Generator:
    """The generator ``spec`` names, checked before any work (bad specs raise ConfigError)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"backend spec must be a non-empty string, got {spec!r}: use {USAGE}")
    spec = spec.strip()
    body, query = _split(spec)
    if body == "embedded" or body.startswith("embedded:"):
        return _embedded(body, query, options)
    if body in EMBEDDED_VARIANTS:
        return _embedded_variant(body, query, options)
    if body.startswith(("openai://", "openai+http://", "openai+https://")):
        return _openai(body, query, options)
    if body.startswith("hf:"):
        return _hf(body, query, options)
    if body.startswith("gguf:"):
        return _gguf(body, query, options)
    raise ConfigError(f"unknown backend spec {spec!r}: use {USAGE}")


# Named embedded policies besides the default: what to call, where the weights live, what makes them.
EMBEDDED_VARIANTS = {
    "embedded+reviser": ("reviser_path", "ponder train reviser"),
    "embedded+orders": ("orders_policy_path", "ponder train policy --order-shuffle 1.0"),
}


def _embedded_variant(body: str, query: dict[str, str], options: dict[str, Any]) -> Generator:
    _typed("embedded", {}, query, options)
    from ponder.backends.embedded import DEFAULT_PREFIX_CACHE_MB, EmbeddedGenerator
    from ponder.training import weights

    path_of, command = EMBEDDED_VARIANTS[body]
    path = getattr(weights, path_of)()
    if not path.is_file():
        raise ConfigError(
            f"{body}: no weights at {path}; train them with `{command}` and pass them as embedded:PATH"
        )
    return EmbeddedGenerator.load(path, prefix_cache_mb=DEFAULT_PREFIX_CACHE_MB)


def _embedded(body: str, query: dict[str, str], options: dict[str, Any]) -> Generator:
    _typed("embedded", {}, query, options)
    path = body.partition(":")[2]
    if not path:
        from ponder.api import default_models

        return default_models()[0]
    from ponder.backends.embedded import EmbeddedGenerator

    if not Path(path).expanduser().is_file():
        raise ConfigError(f"embedded backend: no policy weights at {path}")
    return EmbeddedGenerator.load(Path(path).expanduser())


def _openai(body: str, query: dict[str, str], options: dict[str, Any]) -> Generator:
    from urllib.parse import urlsplit

    from ponder.backends.openai_http import OpenAIGenerator, RetryPolicy

    opts = _typed("openai", OPENAI_OPTIONS, query, options)
    scheme, _, rest = body.partition("://")
    http = "https" if scheme == "openai+https" else "http"
    hostport, _, model = rest.partition("/")
    if not hostport:
        raise ConfigError(f"backend spec {body!r} names no host: use openai://host:port/model")
    try:
        parts = urlsplit(f"{http}://{hostport}")
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ConfigError(f"backend spec {body!r} has a malformed host or port: {exc}") from exc
    if not parts.hostname:
        raise ConfigError(f"backend spec {body!r} names no host: use openai://host:port/model")
    prefix = "/" + str(opts.pop("prefix", "/v1")).strip("/")
    base_url = f"{http}://{hostport}{prefix if prefix != '/' else ''}"
    key_env = opts.pop("api_key_env", "OPENAI_API_KEY")
    api_key = opts.pop("api_key", None) or os.environ.get(key_env)
    retry_keys = {"max_retries": "max_retries", "backoff": "initial_backoff", "max_backoff": "max_backoff"}
    retry = RetryPolicy(**{retry_keys[k]: opts.pop(k) for k in list(opts) if k in retry_keys})
    return OpenAIGenerator(base_url, model, api_key=api_key, retry=retry, **opts)


def _hf(body: str, query: dict[str, str], options: dict[str, Any]) -> Generator:
    opts = _typed("hf", HF_OPTIONS, query, options)
    path = body[len("hf:") :]
    if not path:
        raise ConfigError("backend spec 'hf:' names no directory: use hf:/path/to/model")
    from ponder.backends.hf import HFGenerator

    return HFGenerator.load(path, **opts)


def _gguf(body: str, query: dict[str, str], options: dict[str, Any]) -> Generator:
    opts = _typed("gguf", GGUF_OPTIONS, query, options)
    path = body[len("gguf:") :]
    if not path:
        raise ConfigError("backend spec 'gguf:' names no file: use gguf:/path/to/model.gguf")
    from ponder.backends.llamacpp import LlamaCppGenerator

    return LlamaCppGenerator.load(path, **opts)
