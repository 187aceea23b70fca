"""Verifier specs: one string names the verifier a run uses.

- ``embedded`` (or ``embedded:/path/verifier.safetensors``): the shipped step checker, the default;
  ``embedded+prm``: the shipped PRM + ORM; ``embedded+orders``: the step checker of the
  order-diverse policy (backend ``embedded+orders``), which accepts the operations in any order.
- ``hf-prm:/dir``: a Hugging Face process reward model in a local directory, its step format told
  apart from its config and tokenizer (sequence classifier -> ORM; token classifier with an
  ``<extra_0>`` token -> Qwen2.5-Math-PRM style; causal LM with a ``ки`` tag token ->
  Math-Shepherd style). Name the format to skip the guess: ``hf-prm+shepherd:/dir``,
  ``hf-prm+qwen:/dir``, ``hf-orm:/dir``; ``hf-prm+rlhflow:/dir`` (RLHFlow's Llama3.1-8B-PRM: steps
  as user turns answered "+") is only ever named. Options: ``device``, ``batch_size``,
  ``trust_remote_code`` (needed by models that ship their own code, e.g. Qwen2.5-Math-PRM),
  ``step_delimiter``, ``positive_label`` (ORMs with more than two classes), ``dtype`` (float32 by
  default; bfloat16, float16).
- ``vllm-reward://host:port/model`` (``vllm-reward+https://...``): a PRM or ORM served by vLLM's
  pooling API. Options: ``format`` (``qwen``, the default; ``shepherd``; ``orm``), ``timeout``,
  ``retries``, ``batch_size``, ``params`` (the model's parameter count, for FLOPs), ``endpoint``,
  ``tokenizer`` (a local tokenizer directory, for exact token counts), ``api_key``, ``check``.
- ``judge:<backend spec>`` (``judge+steps:<backend spec>``): any generator ponder can load (see
  :mod:`ponder.backends.spec`) asked whether the solution (each step) is correct, scored by its
  probability of "Yes". ``hf-judge:/dir`` (``hf-judge+steps:/dir``) reads a local transformers
  model's full next-token distribution. Options of ``hf-judge``: ``device``, ``batch_size``, ``dtype``.
- ``answer-check``: the built-in task's own answer (an oracle); ``answer-check:REFERENCE`` checks
  against a reference, ``answer-check+MODE:REFERENCE`` compares as ``exact``, ``number``,
  ``gsm8k`` or ``math``.
- ``checker:package.module:function`` or ``checker:/path/file.py:function``: a user function
  ``(prompt, solution) -> bool | float``.
- ``code-tests:/path/tests.py``: unit tests defining ``check(candidate)`` (HumanEval style), run
  against each code answer in a subprocess. Options: ``entry_point``, ``timeout``, ``memory_mb``,
  ``workers``.

Options follow a ``?`` as ``name=value&name=value`` (``hf-prm:/models/prm?batch_size=4``), or come
as keyword arguments, which win. Every spec is checked before any work: an unknown kind, format or
option, a missing directory or file, a model whose step format cannot be told, an unreachable
server or a model it does not serve raises a ConfigError naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponder.backends.common import parse_bool
from ponder.errors import ConfigError
from ponder.verifiers.base import Verifier

DEFAULT_VERIFIER = "embedded"
KINDS = (
    "embedded",
    "hf-prm",
    "hf-orm",
    "hf-judge",
    "vllm-reward",
    "judge",
    "answer-check",
    "checker",
    "code-tests",
)
USAGE = (
    "embedded, embedded+prm, embedded+orders, embedded:/weights.safetensors, hf-prm:/dir, "
    "hf-prm+shepherd:/dir, hf-prm+qwen:/dir, hf-prm+rlhflow:/dir, hf-orm:/dir, "
    "vllm-reward://host:port/model, judge:<backend spec>, hf-judge:/dir, answer-check[:REFERENCE], "
    "checker:module:function or code-tests:/path/tests.py"
)
_SPEC = re.compile(r"^([a-z][a-z-]*)(?:\+([a-z0-9]+))?(?::(.*))?$", re.S)


def _escaped(value: str) -> str:
    return value.encode().decode("unicode_escape")


def _count(value: str) -> int:
    return int(float(value))  # "7.6e9" is a fine parameter count


HF_OPTIONS: dict[str, Callable[[str], Any]] = {
    "device": str,
    "batch_size": int,
    "trust_remote_code": parse_bool,
    "step_delimiter": _escaped,
    "positive_label": str,
    "dtype": str,
}
HF_JUDGE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "device": str,
    "batch_size": int,
    "step_delimiter": _escaped,
}
VLLM_OPTIONS: dict[str, Callable[[str], Any]] = {
    "format": str,
    "timeout": float,
    "retries": int,
    "batch_size": int,
    "params": _count,
    "endpoint": str,
    "tokenizer": str,
    "api_key": str,
    "check": parse_bool,
    "step_delimiter": _escaped,
    "dtype": str,
}
CODE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "entry_point": str,
    "timeout": float,
    "memory_mb": int,
    "workers": int,
}


def parse_spec(spec: str) -> tuple[str, str | None, str]:
    """``kind[+variant][:target]`` -> (kind, variant, target); a ConfigError for an unknown kind."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"verifier spec must be a non-empty string, got {spec!r}: use {USAGE}")
    m = _SPEC.match(spec.strip())
    if not m or m.group(1) not in KINDS:
        raise ConfigError(f"unknown verifier spec {spec!r}: use {USAGE}")
    return m.group(1), m.group(2), m.group(3) or ""


def _options(
    kind: str, allowed: dict[str, Callable[[str], Any]], target: str, options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Split ``target?a=1&b=2``; type the query's values; keyword options win."""
    from urllib.parse import parse_qsl

    body, _, query = target.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigError(f"malformed verifier options {query!r}: use name=value&name=value") from exc
    from ponder.backends.spec import typed_options

    return body, typed_options(f"the {kind} verifier", allowed, dict(pairs), options)


def load_verifier(spec: str = DEFAULT_VERIFIER, **options: Any) -> Verifier:
    """The verifier ``spec`` names, checked before any work (bad specs raise ConfigError)."""
    kind, variant, target = parse_spec(spec)
    loader = _LOADERS[kind]
    return loader(variant, target, options)


def check_spec(spec: str) -> None:
    """Refuse a malformed spec without loading anything (for runs that may not need the verifier)."""
    kind, variant, _ = parse_spec(spec)
    allowed = _VARIANTS.get(kind, ())
    if variant is not None and variant not in allowed:
        raise ConfigError(_variant_error(kind, variant))


_VARIANTS: dict[str, tuple[str, ...]] = {
    "embedded": ("prm", "orders"),
    "hf-prm": ("shepherd", "qwen", "rlhflow", "orm"),
    "hf-judge": ("steps", "outcome"),
    "judge": ("steps", "outcome"),
    "vllm-reward": ("http", "https"),
    "answer-check": ("exact", "number", "gsm8k", "math", "arithmetic"),
}


def _variant_error(kind: str, variant: str) -> str:
    allowed = _VARIANTS.get(kind, ())
    if not allowed:
        return f"the {kind} verifier takes no +{variant} variant"
    return f"unknown {kind} variant +{variant}: choose one of {', '.join('+' + a for a in allowed)}"


def _need_variant(kind: str, variant: str | None) -> None:
    if variant is not None and variant not in _VARIANTS.get(kind, ()):
        raise ConfigError(_variant_error(kind, variant))


def _no_options(kind: str, options: dict[str, Any]) -> None:
    if options:
        raise ConfigError(f"the {kind} verifier takes no options, got {sorted(options)}")


# --- one loader per kind ---------------------------------------------------------------------------


def _embedded(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    _need_variant("embedded", variant)
    _no_options("embedded", options)
    from ponder.verifiers.embedded import EmbeddedVerifier, load_embedded_verifier

    if not target:
        if variant == "prm":  # the reward model trained on rollout labels
            return EmbeddedVerifier.load()
        if variant == "orders":
            from ponder.training.weights import orders_checker_path

            if not orders_checker_path().is_file():
                raise ConfigError(
                    f"embedded+orders: no checker weights at {orders_checker_path()}; train them with "
                    "`ponder train checker --any-order` and pass them as embedded:PATH"
                )
            return load_embedded_verifier(orders_checker_path())
        from ponder.api import default_models

        return default_models()[1]
    if variant is not None:
        raise ConfigError("embedded: give either a +variant (+prm, +orders) or a weights path, not both")
    path = Path(target).expanduser()
    if not path.is_file():
        raise ConfigError(f"embedded verifier: no verifier weights at {path}")
    return load_embedded_verifier(path)


def _hf(kind: str) -> Callable[[str | None, str, dict[str, Any]], Verifier]:
    def load(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
        from ponder.verifiers.hf import load_hf_verifier

        _need_variant(kind, variant)
        path, opts = _options(kind, HF_OPTIONS, target, options)
        if not path:
            raise ConfigError(f"verifier spec '{kind}:' names no directory: use {kind}:/path/to/model")
        fmt = "orm" if kind == "hf-orm" else variant
        return load_hf_verifier(path, fmt, **opts)

    return load


def _hf_judge(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    from ponder.verifiers.hf import (
        _load_weights,
        import_transformers,
        load_tokenizer,
        read_model_dir,
        torch_dtype,
    )
    from ponder.verifiers.judge import NO_WORDS, YES_WORDS, HFJudgeVerifier, answer_token_ids

    _need_variant("hf-judge", variant)
    path, opts = _options("hf-judge", HF_JUDGE_OPTIONS, target, options)
    if not path:
        raise ConfigError("verifier spec 'hf-judge:' names no directory: use hf-judge:/path/to/model")
    weights_dtype = torch_dtype(opts.pop("dtype", "float32"))
    p, _ = read_model_dir(path)
    tokenizer = load_tokenizer(p)
    answer_token_ids(tokenizer, YES_WORDS, NO_WORDS)  # checked before the weights load
    auto = import_transformers().AutoModelForCausalLM
    model = _load_weights(auto.from_pretrained, p, "judge model", dtype=weights_dtype)
    return HFJudgeVerifier(model, tokenizer, mode=variant or "outcome", **opts)


def _vllm(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    from urllib.parse import urlsplit

    from ponder.verifiers.remote import VLLMRewardVerifier

    _need_variant("vllm-reward", variant)
    body, opts = _options("vllm-reward", VLLM_OPTIONS, target, options)
    if not body.startswith("//"):
        raise ConfigError(f"verifier spec vllm-reward:{body} must look like vllm-reward://host:port/model")
    scheme = variant or "http"
    hostport, _, model = body[2:].partition("/")
    try:
        parts = urlsplit(f"{scheme}://{hostport}")
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ConfigError(f"verifier spec vllm-reward:{body} has a malformed host or port: {exc}") from exc
    if not parts.hostname or not model:
        raise ConfigError(
            f"verifier spec vllm-reward:{body} must name a host and a model: vllm-reward://host:port/model"
        )
    tokenizer = opts.pop("tokenizer", None)
    if isinstance(tokenizer, str):
        from ponder.verifiers.hf import load_tokenizer

        tok_dir = Path(tokenizer).expanduser()
        if not tok_dir.is_dir():
            raise ConfigError(f"vllm-reward verifier: tokenizer directory not found: {tok_dir}")
        tokenizer = load_tokenizer(tok_dir)
    renamed = {"timeout": "timeout_s", "params": "num_params"}
    kwargs = {renamed.get(k, k): v for k, v in opts.items()}
    return VLLMRewardVerifier(f"{scheme}://{hostport}", model, tokenizer=tokenizer, **kwargs)


def _judge(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    from ponder.backends.spec import load_generator
    from ponder.verifiers.judge import JudgeVerifier

    _need_variant("judge", variant)
    if not target.strip():
        raise ConfigError(
            "verifier spec 'judge:' names no model: use judge:<backend spec>, e.g. judge:hf:/dir"
        )
    mode = variant or "outcome"
    judge_opts = {
        k: options.pop(k) for k in ("top_logprobs", "undecided", "template", "step_template") if k in options
    }
    return JudgeVerifier(load_generator(target, **options), mode, **judge_opts)


def _answer_check(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    from ponder.verifiers.checkers import AnswerCheckVerifier

    _need_variant("answer-check", variant)
    if variant is not None and not target:
        raise ConfigError(f"answer-check+{variant} needs a reference: answer-check+{variant}:REFERENCE")
    if "match" in options and variant is not None:
        raise ConfigError("give the answer match either as answer-check+MODE or as match=, not both")
    allowed = {"references", "match", "pending", "checker"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for the answer-check verifier: it takes {sorted(allowed)}"
        )
    return AnswerCheckVerifier(target or None, match=variant or options.pop("match", "auto"), **options)


def _checker(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    from ponder.verifiers.checkers import AnswerCheckVerifier

    _need_variant("checker", variant)
    _no_options("checker", options)
    source, sep, name = target.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise ConfigError(
            f"verifier spec checker:{target} must be checker:package.module:function "
            "or checker:/file.py:function"
        )
    if source.endswith(".py"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"checker file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(f"ponder_checker_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"cannot import the checker file {path}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # user code: report it in one line
            raise ConfigError(f"importing the checker file {path} failed: {exc!r}") from exc
    else:
        try:
            module = importlib.import_module(source)
        except Exception as exc:
            raise ConfigError(f"cannot import the checker module {source!r}: {exc!r}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"the checker module {source!r} has no function {name!r}")
    return AnswerCheckVerifier(checker=fn)


def _code_tests(variant: str | None, target: str, options: dict[str, Any]) -> Verifier:
    from ponder.verifiers.code_tests import CodeTests, CodeTestVerifier

    _need_variant("code-tests", variant)
    path_text, opts = _options("code-tests", CODE_OPTIONS, target, options)
    if not path_text:
        raise ConfigError("verifier spec 'code-tests:' names no file: use code-tests:/path/tests.py")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"code tests file not found: {path}")
    try:
        test = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the code tests file {path}: {exc}") from exc
    if not re.search(r"^def\s+check\s*\(", test, re.M):
        raise ConfigError(f"the code tests file {path} defines no check(candidate) function")
    tests = CodeTests(test, opts.pop("entry_point", None))
    renamed = {"timeout": "timeout_s"}
    return CodeTestVerifier(tests, **{renamed.get(k, k): v for k, v in opts.items()})


_LOADERS: dict[str, Callable[[str | None, str, dict[str, Any]], Verifier]] = {
    "embedded": _embedded,
    "hf-prm": _hf("hf-prm"),
    "hf-orm": _hf("hf-orm"),
    "hf-judge": _hf_judge,
    "vllm-reward": _vllm,
    "judge": _judge,
    "answer-check": _answer_check,
    "checker": _checker,
    "code-tests": _code_tests,
}
