"""Running searches: a bounded worker pool, a bounded queue, cancellation and progress.

Strategies call their generator synchronously (torch, or blocking HTTP), so a search runs in a
worker thread. A search whose every model call has an async twin (``agenerate``, ``ascore``: an
HTTP backend such as ``openai://``) runs on the server's event loop instead, as a greenlet: its
synchronous code runs as written, and each model call suspends it while the loop awaits the
request, so a request costs no thread hand-offs at all (see :func:`run_on_loop`). Either way
``max_concurrency`` searches run at once; up to ``max_queue`` more wait for a place; a request
beyond that is refused at once (429 with Retry-After) rather than queued without bound.

A search is stopped *between* model calls: every generate() / score() first checks the search's
cancel flag (set when its client disconnects or the server shuts down) and deadline, so a cancelled
search makes no further upstream requests and its place is free after at most one call. A place is
released when its search really returns (its thread or its greenlet), never before, so cancelled
searches cannot pile up past the limit.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import greenlet

from ponder.backends.base import Completion, SamplingParams
from ponder.errors import ConfigError, ContextLengthError
from ponder.verifiers.base import VerifierScore


class Overloaded(Exception):
    """Every worker is busy and the queue is full."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class SearchStopped(Exception):
    """A search stopped between model calls: its client left or the server is shutting down."""


class SearchTimedOut(SearchStopped):
    """A search ran past the server's ``timeout_s``."""


class BackendFailure(Exception):
    """The generator or verifier raised (an upstream server down, an engine error)."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"the {what} failed: {type(exc).__name__}: {exc}")
        self.timeout = _is_timeout(exc)


def _is_timeout(exc: BaseException) -> bool:
    # httpx / openai / requests name their timeout errors *Timeout*; the builtin is TimeoutError.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError) or "Timeout" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Errors a backend raises about the request itself (a prompt too long): the client's to fix.
REQUEST_ERRORS = (ContextLengthError, ConfigError)

T = TypeVar("T")


class _SearchGreenlet(greenlet.greenlet):
    """A search running on the event loop's thread (see :func:`run_on_loop`)."""


def await_from_search(awaitable: Awaitable[T]) -> T:
    """Inside a search started by :func:`run_on_loop`: suspend the search until the event loop has
    awaited ``awaitable``; its result (or its exception, raised here). To the search's synchronous
    code this is a blocking call; meanwhile the loop serves everything else."""
    current = greenlet.getcurrent()
    if not isinstance(current, _SearchGreenlet):
        close = getattr(awaitable, "close", None)
        if callable(close):
            close()  # no "coroutine was never awaited" warning
        raise RuntimeError("await_from_search() is only for a search running on the event loop")
    return current.parent.switch(awaitable)


async def run_on_loop(fn: Callable[[], T]) -> T:
    """``fn()`` on this thread, as a greenlet, awaiting for it each awaitable it hands over with
    :func:`await_from_search`. A cancellation of this task is raised inside ``fn`` at the call it
    is waiting on."""
    search = _SearchGreenlet(fn, greenlet.getcurrent())
    step: Any = search.switch()
    while not search.dead:
        try:
            value = await step
        except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the search
            step = search.throw(exc)
        else:
            step = search.switch(value)
    return step


def _has_async_twins(model: Any, methods: tuple[str, ...]) -> bool:
    """Whether ``model`` has an async twin (``agenerate`` for ``generate``, ...) of each of these
    methods it has."""
    return all(
        callable(getattr(model, "a" + name, None)) for name in methods if callable(getattr(model, name, None))
    )


def can_run_on_loop(generator: Any, verifier: Any | None) -> bool:
    """Whether a search with these models can run on the event loop (:func:`run_on_loop`) without
    ever blocking it: every model call it can make has an async twin."""
    return _has_async_twins(generator, ("generate", "generate_continuations")) and (
        verifier is None or _has_async_twins(verifier, ("score",))
    )


class Meter:
    """What one search has done so far, for progress events; stops it between calls when asked."""

    def __init__(
        self, cancel: threading.Event, deadline: float, on_progress: Callable[[dict[str, Any]], None] | None
    ) -> None:
        self.cancel = cancel
        self.deadline = deadline
        self.on_progress = on_progress
        self.started = time.monotonic()
        self.generator_calls = 0
        self.verifier_calls = 0
        self.completions = 0
        self.policy_tokens = 0
        self.verifier_tokens = 0

    def check(self) -> None:
        if self.cancel.is_set():
            raise SearchStopped("the search was cancelled")
        if time.monotonic() > self.deadline:
            raise SearchTimedOut("the search ran past the server's time limit")

    def snapshot(self, stage: str) -> dict[str, Any]:
        return {
            "event": "progress",
            "stage": stage,
            "generator_calls": self.generator_calls,
            "verifier_calls": self.verifier_calls,
            "completions": self.completions,
            "policy_tokens": self.policy_tokens,
            "verifier_tokens": self.verifier_tokens,
            "elapsed_s": round(time.monotonic() - self.started, 4),
        }

    def report(self, stage: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.snapshot(stage))


class MeteredGenerator:
    """A generator as the strategy sees it: checks the meter before and after each call, counts what
    the call returned. Both ways of generating are metered: ``generate`` and, where the backend has
    it, ``generate_continuations`` (chat backends continuing a partial answer)."""

    def __init__(self, inner: Any, meter: Meter, on_loop: bool = False) -> None:
        self._inner = inner
        self._meter = meter
        self._on_loop = on_loop  # a search on the event loop: call the async twins

    @property
    def num_params(self) -> int:
        return self._inner.num_params

    def _method(self, name: str) -> Callable[..., list[list[Completion]]]:
        if not self._on_loop:
            return getattr(self._inner, name)
        twin = getattr(self._inner, "a" + name)
        return lambda *args: await_from_search(twin(*args))

    def __getattr__(self, name: str) -> Any:  # count_prompt_tokens, context_length, ...
        attr = getattr(self._inner, name)
        if name == "generate_continuations" and callable(attr):
            fn = self._method(name)
            return lambda questions, responses, params=None: self._call(fn, questions, responses, params)
        return attr

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        return self._call(self._method("generate"), prompts, params)

    def _call(self, fn: Callable[..., list[list[Completion]]], *args: Any) -> list[list[Completion]]:
        meter = self._meter
        meter.check()
        try:
            groups = fn(*args)
        except REQUEST_ERRORS:
            raise
        except Exception as exc:
            raise BackendFailure("generator", exc) from exc
        meter.check()  # a client that left during the call gets nothing more done for it
        meter.generator_calls += 1
        meter.completions += sum(len(g) for g in groups)
        meter.policy_tokens += sum(g[0].prompt_tokens for g in groups if g)
        meter.policy_tokens += sum(c.completion_tokens for g in groups for c in g)
        meter.report("generate")
        return groups


class MeteredVerifier:
    def __init__(self, inner: Any, meter: Meter, on_loop: bool = False) -> None:
        self._inner = inner
        self._meter = meter
        self._on_loop = on_loop

    @property
    def num_params(self) -> int:
        return self._inner.num_params

    def __getattr__(self, name: str) -> Any:  # count_tokens, context_length, ...
        return getattr(self._inner, name)

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        self._meter.check()
        try:
            if self._on_loop:
                scores = await_from_search(self._inner.ascore(prompts, solutions))
            else:
                scores = self._inner.score(prompts, solutions)
        except REQUEST_ERRORS:
            raise
        except Exception as exc:
            raise BackendFailure("verifier", exc) from exc
        self._meter.check()
        self._meter.verifier_calls += 1
        self._meter.verifier_tokens += sum(s.tokens for s in scores)
        self._meter.report("verify")
        return scores


class Ticket:
    """A place in the pool: reserved (counted as queued) on admission, then run or dropped, once."""

    def __init__(self, pool: SearchPool) -> None:
        self._pool = pool
        self._state = "reserved"  # -> "waiting" -> "running" | "dropped"

    async def start(self, fn: Callable[[], Any], on_loop: bool = False) -> asyncio.Future:
        """Wait for a free place, then run ``fn`` in a worker thread (on this event loop with
        ``on_loop``, see :func:`run_on_loop`); the place is freed when ``fn`` returns."""
        pool = self._pool
        if self._state != "reserved":
            raise RuntimeError("a ticket starts once")
        self._state = "waiting"
        try:
            await pool._slots.acquire()
        except BaseException:
            self._state = "dropped"
            pool.queued -= 1
            raise
        pool.queued -= 1
        pool.running += 1
        self._state = "running"
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        if on_loop:
            task = loop.create_task(run_on_loop(fn))
            task.add_done_callback(lambda f: pool._finished(started, f))
            return task
        future = pool._executor.submit(fn)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(pool._finished, started, f))
        return asyncio.wrap_future(future, loop=loop)

    def drop(self) -> None:
        """Give the place back if the search never started (its client left first)."""
        if self._state == "reserved":
            self._state = "dropped"
            self._pool.queued -= 1


class SearchPool:
    """``max_concurrency`` worker threads and a queue of at most ``max_queue`` waiting requests."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="ponder-search")
        self._slots = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.queued = 0
        self.completed = 0
        self.rejected = 0
        self.cancelled = 0
        self._mean_s = 0.0  # running mean of search durations, for Retry-After

    def reserve(self) -> Ticket:
        """A place in the pool now, or :class:`Overloaded` (never a wait)."""
        if self.running + self.queued >= self.max_concurrency + self.max_queue:
            self.rejected += 1
            raise Overloaded(self.retry_after())
        self.queued += 1
        return Ticket(self)

    def has_free_worker(self) -> bool:
        """Would a search start now, without waiting for a worker?"""
        return not self._slots.locked()

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, drained at the observed rate."""
        waves = (self.queued + 1) / self.max_concurrency
        return int(min(60, max(1, math.ceil(waves * self._mean_s))))

    def _finished(self, started: float, future: Future | asyncio.Future) -> None:
        self.running -= 1
        self.completed += 1
        error = None if future.cancelled() else future.exception()
        if isinstance(error, SearchStopped) and not isinstance(error, SearchTimedOut):
            self.cancelled += 1
        took = time.monotonic() - started
        self._mean_s = took if self.completed == 1 else 0.9 * self._mean_s + 0.1 * took
        self._slots.release()

    def stats(self) -> dict[str, int]:
        return {
            "running": self.running,
            "queued": self.queued,
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "rejected": self.rejected,
        }

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
