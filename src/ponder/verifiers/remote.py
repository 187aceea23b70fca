"""A reward model served by vLLM, over HTTP (httpx).

``vllm serve Qwen/Qwen2.5-Math-PRM-7B`` (or any model run with ``--runner pooling``) answers

- ``POST /pooling`` ``{"model": M, "input": [text, ...]}`` with ``{"data": [{"index": i, "data":
  rows}, ...], "usage": {"prompt_tokens": T, ...}}``. For a process reward model vLLM's step
  pooler returns one row per step tag / separator (the class probabilities there: Qwen's
  ``[p_wrong, p_right]``; Math-Shepherd's ``[p("+"), p("-")]`` when served with
  ``returned_token_ids`` set to the "+" and "-" ids).
- ``POST /classify`` ``{"model": M, "input": [text, ...]}`` with ``{"data": [{"index": i, "probs":
  [...]}, ...], "usage": ...}`` for a sequence classifier (an ORM).

The texts are built exactly as the local verifiers build them (:mod:`ponder.verifiers.formats`;
Qwen's chat is rendered as ChatML here). A row that does not sum to 1 is taken as logits and
softmaxed; a one-value row as a logit unless it lies in [0, 1].

Failures: connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times with
exponential backoff, then raise :class:`~ponder.errors.BackendError` naming the server; any other
HTTP error, a body that is not JSON, or a response of the wrong shape raises at once.

Budgets: a remote model's tokenizer is unknown here, so ``count_tokens`` bounds the tokens of a
pair by its UTF-8 bytes plus 2 (no tokenizer makes more tokens than bytes, plus a begin-of-text
token; special tokens take fewer), or counts them exactly with a local copy of the tokenizer
(``tokenizer=``). What a call really used is the server's ``usage.prompt_tokens``, shared among
the batch's solutions in proportion to their counts. FLOPs need the model's size, which a server
does not report: give ``num_params`` (e.g. ``params=7.6e9`` in a spec), else they count as 0.
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

from ponder.errors import BackendError, ConfigError
from ponder.verifiers.base import VerifierScore
from ponder.verifiers.formats import (
    QWEN_SEPARATOR,
    QWEN_SYSTEM,
    SHEPHERD_TAG,
    question_text,
    qwen_messages,
    render_chatml,
    shepherd_text,
    split_steps,
)

REMOTE_FORMATS = ("qwen", "shepherd", "orm")
_ENDPOINTS = {"qwen": "/pooling", "shepherd": "/pooling", "orm": "/classify"}
# Which class of a step row means "this step is right".
_POSITIVE = {"qwen": 1, "shepherd": 0, "orm": -1}
_RETRY_STATUS = {429, 500, 502, 503, 504}


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def row_score(row: Any, positive: int) -> float:
    """The probability of the "right" class in one returned row (see the module docstring)."""
    if isinstance(row, int | float) and not isinstance(row, bool):
        row = [row]
    if (
        not isinstance(row, list)
        or not row
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in row)
    ):
        raise ValueError(f"a score row must be a non-empty list of finite numbers, got {row!r}")
    if len(row) == 1:
        v = float(row[0])
        return v if 0.0 <= v <= 1.0 else 1.0 / (1.0 + math.exp(-v))
    probs = row if abs(sum(row) - 1.0) < 1e-3 and min(row) >= 0 else _softmax(row)
    return float(probs[positive])


def share(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), summing to ``total``."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum <= 0:
        weights, wsum = [1] * len(weights), len(weights)
    raw = [total * w / wsum for w in weights]
    out = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def parse_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"verifier server address {url!r} must look like http://host:port")
    return url.rstrip("/")


class VLLMRewardVerifier:
    """A PRM or ORM behind vLLM's pooling API, as a :class:`~ponder.verifiers.base.Verifier`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        format: str = "qwen",
        *,
        endpoint: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        batch_size: int = 32,
        num_params: int = 0,
        step_delimiter: str = "\n",
        tokenizer: Any = None,
        api_key: str | None = None,
        check: bool = True,
        transport: Any = None,
    ) -> None:
        import httpx

        if format not in REMOTE_FORMATS:
            raise ConfigError(f"unknown reward-model format {format!r}: choose one of {list(REMOTE_FORMATS)}")
        if not model:
            raise ConfigError("the verifier server's model name is empty (vllm-reward://host:port/MODEL)")
        for name, value, low in (("timeout", timeout_s, 0.0), ("backoff", backoff_s, 0.0)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= low):
                raise ConfigError(f"verifier {name} must be a number >= {low}, got {value!r}")
        if timeout_s <= 0:
            raise ConfigError(f"verifier timeout must be > 0 seconds, got {timeout_s}")
        if retries < 0 or batch_size < 1 or num_params < 0:
            raise ConfigError(
                "need retries >= 0, batch_size >= 1 and params >= 0; "
                f"got {retries}, {batch_size}, {num_params}"
            )
        if not step_delimiter:
            raise ConfigError("the step delimiter must be a non-empty string")
        self.base_url = parse_base_url(base_url)
        self.model = model
        self.format = format
        self.endpoint = endpoint or _ENDPOINTS[format]
        if not self.endpoint.startswith("/"):
            self.endpoint = "/" + self.endpoint
        self.retries = retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size
        self._num_params = int(num_params)
        self.step_delimiter = step_delimiter
        self.tokenizer = tokenizer
        self.name = f"vllm-reward:{model}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)
        if check:
            self.check_model()

    # --- HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        url = self.base_url + path
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.request(method, url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.client.timeout.read}s"
                continue
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise BackendError(
                    f"verifier server {url} refused the request: HTTP {response.status_code}: "
                    f"{response.text[:300]}"
                )
            try:
                return response.json()
            except ValueError as exc:
                raise BackendError(
                    f"verifier server {url} answered with something that is not JSON: {response.text[:200]!r}"
                ) from exc
        tries = self.retries + 1
        raise BackendError(f"verifier server {url} failed {tries} time{'s' * (tries > 1)}: {last}")

    def check_model(self) -> None:
        """Refuse, before any scoring, a server that is down or does not serve the model."""
        listing = self._request("GET", "/v1/models")
        try:
            served = [m["id"] for m in listing["data"]]
        except (TypeError, KeyError) as exc:
            raise BackendError(
                f"verifier server {self.base_url}/v1/models gave no model list: {listing!r}"
            ) from exc
        if self.model not in served:
            raise ConfigError(
                f"verifier server {self.base_url} does not serve {self.model!r}; it serves {served}"
            )

    def close(self) -> None:
        self.client.close()

    # --- texts and token counts ----------------------------------------------------------------

    def render(self, prompt: str, solution: str) -> tuple[str, int]:
        """The text sent for one pair, and its number of steps (1 for an ORM)."""
        steps = split_steps(solution, self.step_delimiter)
        if self.format == "qwen":
            messages = qwen_messages(question_text(prompt), steps, QWEN_SEPARATOR, QWEN_SYSTEM)
            return render_chatml(messages), len(steps)
        if self.format == "shepherd":
            return shepherd_text(question_text(prompt), steps, SHEPHERD_TAG)[0], len(steps)
        return prompt + solution, 1

    def _estimate(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text)["input_ids"])
        return len(text.encode()) + 2

    def count_tokens(self, prompt: str, solution: str) -> int:
        """An upper bound on the tokens the server runs one pair through (exact with a tokenizer).
        A solution with no steps yet is not sent; it counts as its question and template, the
        overhead that budget planning adds to every text it will score."""
        return self._estimate(self.render(prompt, solution)[0])

    @property
    def num_params(self) -> int:
        return self._num_params

    # --- scoring ----------------------------------------------------------------------------------

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        rendered = [self.render(p, s) for p, s in zip(prompts, solutions)]
        out: list[VerifierScore] = [VerifierScore(step_scores=[], outcome=None, tokens=0) for _ in rendered]
        todo = [i for i, (_, steps) in enumerate(rendered) if steps]
        for b in range(0, len(todo), self.batch_size):
            idxs = todo[b : b + self.batch_size]
            texts = [rendered[i][0] for i in idxs]
            body = self._request("POST", self.endpoint, {"model": self.model, "input": texts})
            scores = self._parse(body, [rendered[i][1] for i in idxs])
            estimates = [self._estimate(t) for t in texts]
            used = _usage(body)
            tokens = share(used, estimates) if used is not None else estimates
            for i, steps, t in zip(idxs, scores, tokens):
                outcome = steps[-1] if self.format == "orm" else None
                out[i] = VerifierScore(step_scores=steps, outcome=outcome, tokens=t)
        return out

    def _parse(self, body: Any, n_steps: list[int]) -> list[list[float]]:
        where = f"verifier server {self.base_url}{self.endpoint}"
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != len(n_steps):
            got = len(data) if isinstance(data, list) else "no"
            raise BackendError(f"{where} returned {got} results for {len(n_steps)} inputs: {str(body)[:200]}")
        items = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
        positive = _POSITIVE[self.format]
        out = []
        for k, (item, steps) in enumerate(zip(items, n_steps)):
            try:
                if self.format == "orm":
                    values = item["probs"] if "probs" in item else item["data"]
                    out.append([row_score(values, positive)])
                    continue
                rows = item["data"]
                if not isinstance(rows, list):
                    raise ValueError(f"data is {type(rows).__name__}, not a list of rows")
                if len(rows) != steps:
                    raise BackendError(
                        f"{where} returned {len(rows)} score rows for a solution of {steps} steps: serve the "
                        "PRM with step pooling (vLLM's default for Qwen2.5-Math-PRM; for Math-Shepherd "
                        "set the pooler's step_tag_id and returned_token_ids)"
                    )
                out.append([row_score(r, positive) for r in rows])
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise BackendError(
                    f"{where} returned a malformed result {k}: {exc}; {str(item)[:200]}"
                ) from exc
        return out


def _usage(body: dict) -> int | None:
    usage = body.get("usage")
    if (
        isinstance(usage, dict)
        and isinstance(usage.get("prompt_tokens"), int)
        and usage["prompt_tokens"] >= 0
    ):
        return usage["prompt_tokens"]
    return None
