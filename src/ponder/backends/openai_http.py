"""Generation from any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama, providers).

The official ``openai`` client is async; strategies call generators synchronously, so each
generator runs one event loop in a background thread and ``generate`` blocks on it. Within a call
every request runs concurrently, at most ``max_concurrency`` at a time. Async callers (``ponder
serve``) await ``agenerate`` / ``agenerate_continuations`` on their own loop instead, with a client
(and connection pool) of that loop's own, and no thread hand-off; ``max_concurrency`` then holds
per event loop.

- ``n`` samples: one request with ``n`` where the server honours it; llama.cpp and Ollama answer
  one choice whatever ``n`` says, which is detected from the choices returned (``n_mode="auto"``)
  and the missing samples are fanned out as ``n=1`` requests (and are from then on).
- Step-wise search sends the step delimiter as a stop string (with ``SamplingParams.stop``'s).
  Servers cut the stop string off and say "stop" for it and for end of text alike; vLLM's
  ``stop_reason`` / SGLang's ``matched_stop`` tell them apart, and without them a non-empty text
  that stopped on the only stop string asked for is taken to have met it (an empty one, to be the
  end of the answer). The matched string is put back, so a step reads as it does from the
  embedded model. (With several stop strings and no such field, which one matched is unknown: the
  text is left as the server sent it.)
- Continuing a partial answer: on the completions API, the prompt is the question plus the path.
  On the chat API the path becomes a trailing assistant message, with vLLM's / SGLang's
  ``continue_final_message`` (llama.cpp's server continues a trailing assistant message itself).
- Token counts: per choice from its log-probs when the server returns them, else from the
  response's usage, else an upper bound of one token per UTF-8 byte. Prompt tokens a server
  served from its prefix cache (``usage.prompt_tokens_details.cached_tokens``) are reported as
  cached. ``SamplingParams.top_logprobs`` asks for the most likely tokens at each position.
- Failures: connection errors, timeouts, 408/409/429/5xx and malformed responses are retried with
  exponential backoff (:class:`RetryPolicy`; the client's own retries are off so the policy is
  this one); anything else, or a failure past the last retry, raises a BackendError naming the
  server and what went wrong.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import random
import threading
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ponder.backends.base import Completion, SamplingParams
from ponder.backends.common import (
    DEFAULT_STEP_DELIMITER,
    ContinuationGenerator,
    checked_call,
    cut_at_stop,
    row_seed,
    stop_strings,
)
from ponder.errors import BackendError, ConfigError

T = TypeVar("T")
ApiKind = Literal["completions", "chat"]
NMode = Literal["auto", "native", "fanout"]


class MalformedResponse(Exception):
    """A response that parsed as JSON but is not a usable completion (or did not parse at all)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and how long to wait before each retry.

    The wait before retry ``k`` (0-based) is ``initial_backoff * multiplier**k``, capped at
    ``max_backoff``, spread by +-``jitter`` (a fraction) so that many clients do not retry in step.
    A ``Retry-After`` header (429, 503) is honoured up to ``max_backoff``.
    """

    max_retries: int = 3
    initial_backoff: float = 0.5
    multiplier: float = 2.0
    max_backoff: float = 8.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ConfigError("backoff times must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"jitter must be in [0, 1), got {self.jitter}")

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        import openai

        if isinstance(exc, openai.APIConnectionError | MalformedResponse):  # includes timeouts
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in (408, 409, 429) or exc.status_code >= 500
        return False

    def delay(
        self, attempt: int, exc: BaseException | None = None, rng: random.Random | None = None
    ) -> float:
        wait = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
        retry_after = _retry_after(exc)
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, wait * (1.0 + spread))


HTTP_STACKS = ("auto", "aiohttp", "httpx")

# Generators still open at exit are closed then, while their loop threads still run: an aiohttp
# session left to the garbage collector complains about its unclosed connections.
_OPEN: weakref.WeakSet[OpenAIGenerator] = weakref.WeakSet()


@atexit.register
def _close_open_generators() -> None:
    for gen in list(_OPEN):
        gen.close()


def resolve_http_stack(http: str) -> str:
    """The HTTP stack under the openai client: ``auto`` is aiohttp when it is installed."""
    if http == "httpx":
        return "httpx"
    import openai

    try:
        import aiohttp  # noqa: F401

        available = hasattr(openai, "DefaultAioHttpClient")
    except ImportError:
        available = False
    if not available and http == "aiohttp":
        raise ConfigError(
            "http=aiohttp needs aiohttp and an openai client with DefaultAioHttpClient: "
            "pip install -U 'openai[aiohttp]'"
        )
    return "aiohttp" if available else "httpx"


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own schedule


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` of a JSON object, None for anything else (a reply is read leniently)."""
    return obj.get(key) if isinstance(obj, dict) else None


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _timed_out(exc: BaseException) -> bool:
    """A real timeout. The aiohttp transport reports every lost connection (a server that hung
    up, a refused connect) as a connect timeout, so its root cause decides."""
    import openai

    if not isinstance(exc, openai.APITimeoutError):
        return False
    root = _root_cause(exc)
    module = type(root).__module__ or ""
    if module.startswith("aiohttp") and not isinstance(root, TimeoutError):
        return False  # aiohttp's own timeout errors subclass TimeoutError; the rest are not
    return True


def _describe(exc: BaseException) -> str:
    import openai

    if _timed_out(exc):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        root = _root_cause(exc)
        if type(root).__module__.startswith("aiohttp"):
            return f"connection failed ({type(root).__name__}: {root})"
        cause = exc.__cause__ or exc.__context__
        return f"connection failed ({type(cause).__name__}: {cause})" if cause else "connection failed"
    if isinstance(exc, openai.APIStatusError):
        message = exc.message
        body = exc.body
        if isinstance(body, dict):
            err = body.get("error", body)
            message = err.get("message", message) if isinstance(err, dict) else str(err)
        return f"HTTP {exc.status_code}: {message}"
    return f"{type(exc).__name__}: {exc}"


async def _gather_all(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Every result in order; when one fails, the others are cancelled rather than left running."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Loop:
    """One asyncio loop in a daemon thread; ``run`` blocks the caller on a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ponder-http", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a generator's generate() was called from inside its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass
class _Session:
    """A client bound to one event loop (its connections belong to that loop) and that loop's limit
    on requests at once."""

    client: Any  # openai.AsyncOpenAI
    semaphore: asyncio.Semaphore


@dataclass
class _Reply:
    """What one choice said, before it becomes a Completion."""

    text: str
    finish: str | None
    logprobs: list[float] | None
    top: list[dict[str, float]] | None
    stop_hint: Any  # vLLM stop_reason / SGLang matched_stop: the stop string, a token id, or None
    has_hint: bool


class OpenAIGenerator(ContinuationGenerator):
    """A :class:`~ponder.backends.base.Generator` on an OpenAI-compatible server.

    ``base_url`` is the API root (``http://127.0.0.1:8000/v1``), ``model`` a name it serves (checked
    against ``/v1/models`` unless ``check=False``; empty picks the only one it serves).
    ``num_params`` feeds FLOPs accounting (llama.cpp's server reports it; other servers do not,
    and FLOPs then count as 0). The server's own sampling defaults apply on top of temperature and
    top-p (llama-cpp-python's server adds top_k=40, min_p=0.05 and repeat_penalty=1.1; vLLM takes
    the model's generation_config): ``extra_body`` is sent with every request to override them,
    e.g. ``{"repeat_penalty": 1.0, "top_k": 0, "min_p": 0}``. ``http`` picks the client's HTTP
    stack: ``aiohttp`` (the default when installed: less time per call) or ``httpx``.
    """

    prefix_stable = False  # the server's sampler decides whether sample s depends on n

    def __init__(
        self,
        base_url: str,
        model: str = "",
        *,
        api_key: str | None = None,
        api: ApiKind = "completions",
        n_mode: NMode = "auto",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        logprobs: bool = True,
        step_delimiter: str = DEFAULT_STEP_DELIMITER,
        system: str | None = None,
        continue_final_message: bool = True,
        chat_overhead: int = 64,
        num_params: int | None = None,
        context_length: int | None = None,
        extra_body: dict[str, Any] | None = None,
        check: bool = True,
        http: str = "auto",
    ) -> None:
        if http not in HTTP_STACKS:
            raise ConfigError(f"http must be one of {list(HTTP_STACKS)}, got {http!r}")
        self.http = resolve_http_stack(http)
        if api not in ("completions", "chat"):
            raise ConfigError(f"api must be 'completions' or 'chat', got {api!r}")
        if n_mode not in ("auto", "native", "fanout"):
            raise ConfigError(f"n_mode must be 'auto', 'native' or 'fanout', got {n_mode!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if not step_delimiter:
            raise ConfigError("step_delimiter must not be empty")

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api: ApiKind = api
        self.n_mode: NMode = n_mode
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.logprobs = logprobs
        self.step_delimiter = step_delimiter
        self.system = system
        self.continue_final_message = continue_final_message
        self.chat_overhead = chat_overhead
        self._num_params = num_params
        self.context_length = context_length
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ConfigError(f"extra_body must be a JSON object, got {extra_body!r}")
        self.extra_body = dict(extra_body or {})
        # None until a reply says whether the server honours n (auto mode).
        self.native_n: bool | None = {"auto": None, "native": True, "fanout": False}[n_mode]
        self._path = "/completions" if api == "completions" else "/chat/completions"
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._loop = _Loop()
        _OPEN.add(self)
        self._own = _Session(self._new_client(), asyncio.Semaphore(max_concurrency))
        self._sessions: dict[asyncio.AbstractEventLoop, _Session] = {}  # callers' loops (agenerate)
        self.retries = 0  # retries made so far, for logs and tests
        try:
            if check:
                self._loop.run(self._check_model())
        except BaseException:
            self.close()
            raise
        self.name = f"openai:{self.model}"

    # --- set-up --------------------------------------------------------------------------------

    def _new_client(self) -> Any:
        import openai

        extra: dict[str, Any] = {}
        if self.http == "aiohttp":
            # The client's own aiohttp transport: about a quarter less time per call than httpx
            # on loopback, which is most of what a proxying server adds.
            extra["http_client"] = openai.DefaultAioHttpClient(timeout=self.timeout)
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            timeout=self.timeout,
            max_retries=0,  # retries are RetryPolicy's
            **extra,
        )

    def _session(self) -> _Session:
        """The client and limit of the running event loop (made on its first call there)."""
        loop = asyncio.get_running_loop()
        if loop is self._loop.loop:
            return self._own
        session = self._sessions.get(loop)
        if session is None:
            # A loop that has closed (a finished test client's) cannot use its client again.
            self._sessions = {k: v for k, v in self._sessions.items() if not k.is_closed()}
            session = self._sessions[loop] = _Session(
                self._new_client(), asyncio.Semaphore(self.max_concurrency)
            )
        return session

    async def _check_model(self) -> None:
        import openai

        try:
            page = await self._own.client.models.list(timeout=min(self.timeout, 10.0))
        except openai.NotFoundError:
            if not self.model:
                raise ConfigError(
                    f"{self.base_url} has no /models list: name the model in the spec"
                ) from None
            return  # a server without a model list: nothing to check against
        except openai.AuthenticationError as exc:
            raise ConfigError(
                f"{self.base_url} refused the API key ({_describe(exc)}): set OPENAI_API_KEY or api_key="
            ) from exc
        except (openai.APIError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach an OpenAI-compatible server at {self.base_url}: {_describe(exc)}"
            ) from exc
        entries = {m.id: m for m in page.data}
        if not self.model:
            if len(entries) != 1:
                raise ConfigError(
                    f"{self.base_url} serves {sorted(entries) or 'no models'}: name one in the spec "
                    "(openai://host:port/MODEL)"
                )
            self.model = next(iter(entries))
        if self.model not in entries:
            raise ConfigError(
                f"model {self.model!r} is not served by {self.base_url}; it serves {sorted(entries)}"
            )
        extra = entries[self.model].model_extra or {}
        if self.context_length is None and isinstance(extra.get("max_model_len"), int):
            self.context_length = extra["max_model_len"]  # vLLM
        meta = extra.get("meta")
        if self._num_params is None and isinstance(meta, dict) and isinstance(meta.get("n_params"), int):
            self._num_params = meta["n_params"]  # llama.cpp's server

    def close(self) -> None:
        """Close the clients and stop the background loop."""
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        own = getattr(self, "_own", None)
        if own is not None and loop.loop.is_running():
            try:
                loop.run(own.client.close())
            except Exception:  # closing is best effort
                pass
        loop.close()
        self._loop = None  # type: ignore[assignment]
        _OPEN.discard(self)
        sessions, self._sessions = getattr(self, "_sessions", {}), {}
        for other, session in sessions.items():
            if other.is_closed():
                continue
            try:  # best effort too: on that loop, once it gets to it
                if other.is_running() and not _in_loop(other):
                    asyncio.run_coroutine_threadsafe(session.client.close(), other).result(timeout=5)
                elif other.is_running():
                    other.create_task(session.client.close())
            except Exception:
                pass

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the Generator protocol ------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        return self._num_params or 0

    def count_prompt_tokens(self, prompt: str) -> int:
        """An upper bound: no token of a byte-level vocabulary is shorter than a byte; the chat
        template's own tokens are allowed for by ``chat_overhead``."""
        extra = self.chat_overhead + len((self.system or "").encode()) if self.api == "chat" else 0
        return len(prompt.encode()) + 1 + extra

    def generate_continuations(
        self, questions: list[str], responses: list[str], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        params = self._checked(questions, responses, params)
        return self._loop.run(self._generate(list(questions), list(responses), params))

    def _checked(
        self, questions: list[str], responses: list[str], params: SamplingParams | None
    ) -> SamplingParams:
        """The call's parameters, after refusing bad input or a closed generator."""
        params = checked_call(questions, responses, params)
        if self._loop is None:
            raise ConfigError(f"the generator for {self.base_url} is closed")
        return params

    async def agenerate(
        self, prompts: list[str], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """``generate`` on the caller's event loop."""
        return await self.agenerate_continuations(prompts, [""] * len(prompts), params)

    async def agenerate_continuations(
        self, questions: list[str], responses: list[str], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """``generate_continuations`` on the caller's event loop: no thread hand-off."""
        params = self._checked(questions, responses, params)
        return await self._generate(list(questions), list(responses), params)

    # --- requests ------------------------------------------------------------------------------

    async def _generate(
        self, questions: list[str], responses: list[str], params: SamplingParams
    ) -> list[list[Completion]]:
        session = self._session()
        if len(questions) == 1:  # the common case: no task to spawn and gather
            return [await self._samples(session, 0, questions[0], responses[0], params)]
        return await _gather_all(
            [self._samples(session, i, q, r, params) for i, (q, r) in enumerate(zip(questions, responses))]
        )

    async def _samples(
        self, session: _Session, index: int, question: str, response: str, params: SamplingParams
    ) -> list[Completion]:
        n = params.n
        base_seed = None if params.seed is None else row_seed(params.seed, index, -1) % 2**31
        out: list[Completion] = []
        if self.native_n is not False and n > 1:
            out = await self._request(session, question, response, params, n, base_seed)
            if len(out) > n:
                raise BackendError(f"{self.base_url} returned {len(out)} choices for n={n}")
            if len(out) < n:
                if self.native_n:
                    raise BackendError(
                        f"{self.base_url} returned {len(out)} choices for n={n} (n_mode='native'); "
                        "use n_mode='auto' or 'fanout' for servers that ignore n"
                    )
                self.native_n = False  # llama.cpp, Ollama: fan out from now on
            elif self.native_n is None:
                self.native_n = True
        missing = range(len(out), n)

        async def one(s: int) -> list[Completion]:
            seed = None if params.seed is None else row_seed(params.seed, index, s) % 2**31
            return await self._request(session, question, response, params, 1, seed)

        if len(missing) == 1:  # one request: await it here rather than in a task of its own
            groups = [await one(missing[0])]
        else:
            groups = await _gather_all([one(s) for s in missing])
        for group in groups:
            if len(group) != 1:
                raise BackendError(f"{self.base_url} returned {len(group)} choices for n=1")
            out.extend(group)
        return out

    def _body(
        self, question: str, response: str, params: SamplingParams, n: int, seed: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        if params.top_p < 1:
            body["top_p"] = params.top_p
        if n > 1:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        stops = stop_strings(params, self.step_delimiter)
        if stops:
            body["stop"] = list(stops)
        if self.api == "completions":
            body["prompt"] = question + response
            if self.logprobs:
                body["logprobs"] = max(1, params.top_logprobs)
        else:
            messages = [{"role": "system", "content": self.system}] if self.system else []
            messages.append({"role": "user", "content": question})
            if response:
                messages.append({"role": "assistant", "content": response})
            body["messages"] = messages
            if self.logprobs:
                body["logprobs"] = True
                if params.top_logprobs:
                    body["top_logprobs"] = params.top_logprobs
        # Extra keys win over the ones above (as the client's extra_body does), the continuation's
        # over those.
        body.update(self.extra_body)
        if self.api == "chat" and response and self.continue_final_message:
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    async def _request(
        self,
        session: _Session,
        question: str,
        response: str,
        params: SamplingParams,
        n: int,
        seed: int | None,
    ) -> list[Completion]:
        import openai

        attempt = 0
        while True:
            body = self._body(question, response, params, n, seed)
            try:
                async with session.semaphore:
                    # The client's post() with the body as sent and the reply as bytes: its
                    # errors, auth and timeouts, without the per-call cost of create()'s typed
                    # parameter transform and response models (a third of the client's time).
                    raw = await session.client.post(self._path, cast_to=bytes, body=body)
                return self._parse(json.loads(raw), question + response, params)
            except openai.BadRequestError as exc:
                if self.logprobs and "logprob" in _describe(exc).lower():
                    self.logprobs = False  # a server without log-probs: ask without them
                    continue
                raise BackendError(f"{self.base_url} rejected the request: {_describe(exc)}") from exc
            except (openai.APIError, MalformedResponse, ValueError) as exc:
                if isinstance(exc, ValueError) and not isinstance(exc, openai.APIError):
                    exc = MalformedResponse(f"unreadable response ({exc})")
                if not self.retry.retryable(exc):
                    raise BackendError(f"{self.base_url} failed: {_describe(exc)}") from exc
                if attempt >= self.retry.max_retries:
                    tries = "1 try" if attempt == 0 else f"{attempt + 1} tries"
                    raise BackendError(
                        f"{self.base_url} failed after {tries}: {_describe(exc)}"
                        + (f" (timeout {self.timeout:g} s)" if _timed_out(exc) else "")
                    ) from exc
                await asyncio.sleep(self.retry.delay(attempt, exc))
                attempt += 1
                self.retries += 1

    # --- replies -------------------------------------------------------------------------------

    def _parse(self, reply: Any, prompt: str, params: SamplingParams) -> list[Completion]:
        """The completions of a reply (the JSON body, parsed)."""
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices:
            raise MalformedResponse(f"a response without choices: {str(reply)[:200]!r}")
        replies = sorted((self._choice(c) for c in choices), key=lambda rc: rc[0])
        usage = _field(reply, "usage")
        prompt_tokens = _field(usage, "prompt_tokens")
        if not isinstance(prompt_tokens, int):
            prompt_tokens = self.count_prompt_tokens(prompt)
        cached = _field(_field(usage, "prompt_tokens_details"), "cached_tokens")
        cached = min(cached, prompt_tokens) if isinstance(cached, int) and cached > 0 else 0
        counts = self._token_counts([r for _, r in replies], _field(usage, "completion_tokens"))
        return [
            self._completion(r, count, prompt_tokens, params, cached)
            for (_, r), count in zip(replies, counts)
        ]

    def _choice(self, choice: Any) -> tuple[int, _Reply]:
        if not isinstance(choice, dict):
            raise MalformedResponse(f"a choice that is not an object: {str(choice)[:200]!r}")
        if self.api == "completions":
            text = choice.get("text")
        else:
            message = choice.get("message")
            text = _field(message, "content")
            text = "" if isinstance(message, dict) and text is None else text
        if not isinstance(text, str):
            raise MalformedResponse(f"a choice without text: {str(choice)[:200]!r}")
        index = choice.get("index")
        hint_key = next((k for k in ("stop_reason", "matched_stop") if k in choice), None)
        lp = choice.get("logprobs")
        return index if isinstance(index, int) else 0, _Reply(
            text=text,
            finish=choice.get("finish_reason"),
            logprobs=self._choice_logprobs(lp),
            top=self._choice_top(lp),
            stop_hint=choice.get(hint_key) if hint_key else None,
            has_hint=hint_key is not None,
        )

    def _choice_logprobs(self, lp: Any) -> list[float] | None:
        if not isinstance(lp, dict):
            return None
        if self.api == "completions":
            values = lp.get("token_logprobs")
        else:
            content = lp.get("content")
            values = [_field(t, "logprob") for t in content] if isinstance(content, list) else None
        if not isinstance(values, list):
            return None
        return [float(v) if isinstance(v, int | float) else 0.0 for v in values]

    def _choice_top(self, lp: Any) -> list[dict[str, float]] | None:
        """The most likely tokens at each position, as text -> log-probability."""
        if not isinstance(lp, dict):
            return None
        if self.api == "completions":
            entries = lp.get("top_logprobs")
            if not entries or not isinstance(entries, list):
                return None
            return [
                {str(k): float(v) for k, v in e.items() if isinstance(v, int | float)}
                if isinstance(e, dict)
                else {}
                for e in entries
            ]
        content = lp.get("content")
        if not content or not isinstance(content, list):
            return None
        out = []
        for t in content:
            alts = _field(t, "top_logprobs") or []
            out.append(
                {
                    str(a.get("token")): float(a["logprob"])
                    for a in alts
                    if isinstance(a, dict) and isinstance(a.get("logprob"), int | float)
                }
            )
        return out if any(out) else None

    @staticmethod
    def _token_counts(replies: list[_Reply], completion_tokens: Any) -> list[int]:
        """Tokens per choice: its log-probs, else its share of the usage, else bytes (a bound)."""
        if all(r.logprobs is not None for r in replies):
            return [len(r.logprobs or []) for r in replies]
        if isinstance(completion_tokens, int):
            if len(replies) == 1:
                return [completion_tokens]
            # Usage is per request: share it out by text length.
            sizes = [len(r.text.encode()) + 1 for r in replies]
            total = sum(sizes)
            counts = [completion_tokens * s // total for s in sizes]
            counts[-1] += completion_tokens - sum(counts)
            return counts
        return [len(r.text.encode()) for r in replies]

    def _completion(
        self, r: _Reply, count: int, prompt_tokens: int, params: SamplingParams, cached: int = 0
    ) -> Completion:
        text, finish = r.text, r.finish
        stops = stop_strings(params, self.step_delimiter)
        if finish == "length":
            reason = "length"
        elif finish == "stop" and stops:
            if r.has_hint:
                matched = r.stop_hint if r.stop_hint in stops else None
                reason = "stop" if matched else "eos"
            elif len(stops) == 1:
                # No way to tell: a non-empty text met the stop string, an empty one ended.
                matched = stops[0] if text else None
                reason = "stop" if matched else "eos"
            else:
                matched, reason = None, ("stop" if text else "eos")
            if matched and not text.endswith(matched):
                text += matched
        else:
            reason = "eos"  # "stop" with no stop strings asked for, and anything else a server says
        # A server that ignored the stop strings still ends the text at the first.
        text, met = cut_at_stop(text, stops)
        if met:
            reason = "stop"
        logprobs = r.logprobs or []
        return Completion(
            text=text,
            token_ids=[],
            logprobs=logprobs[:count] if logprobs else [],
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached,
            n_tokens=count,
            top_logprobs=r.top[:count] if (r.top and params.top_logprobs) else None,
        )
