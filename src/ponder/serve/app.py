"""The FastAPI application: OpenAI-compatible endpoints that answer with a test-time compute search.

``POST /v1/chat/completions`` and ``POST /v1/completions`` run the chosen strategy on the model's
backend and answer with the chosen answer as a normal completion, ``usage`` counting every token
spent (policy and verifier), and a ``ponder`` field (strategy, budget, spend, candidates on request).
``GET /v1/models``, ``GET /v1/models/{model}``, ``GET /health`` and ``GET /openapi.json`` complete it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ponder import __version__
from ponder.errors import ContextLengthError, PonderError
from ponder.serve.config import ServeConfig
from ponder.serve.errors import APIError, bad_request
from ponder.serve.models import ServedModel, load_models
from ponder.serve.pool import (
    BackendFailure,
    Meter,
    MeteredGenerator,
    MeteredVerifier,
    Overloaded,
    SearchPool,
    SearchStopped,
    SearchTimedOut,
    Ticket,
)
from ponder.serve.responses import answer_texts, ponder_info, total_compute, usage
from ponder.serve.routing import SearchPlan, plan_search, resolve_model
from ponder.serve.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    TextCompletion,
)
from ponder.strategies.base import StrategyResult
from ponder.strategies.budget import BudgetTooSmall

log = logging.getLogger("ponder.serve")

HEARTBEAT_S = 5.0  # an SSE comment this often keeps proxies from closing a quiet stream
PROGRESS_EVERY_S = 0.05  # at most this often a progress event is sent

_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "bad request: the message names the field"),
        (401, "missing or wrong API key"),
        (404, "unknown model or strategy prefix"),
        (413, "request body too large"),
        (429, "overloaded: retry after Retry-After seconds"),
        (502, "the model backend failed"),
        (504, "the search or its backend timed out"),
    )
}


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) before anything parses them."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send: Callable) -> None:
        body = APIError(
            413,
            f"request body is larger than this server's limit of {self.max_bytes} bytes",
            code="too_large",
        ).body()
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) <= self.max_bytes:
                await self.app(scope, receive, send)
            else:
                await self._too_large(send)
            return
        # No Content-Length (chunked): read at most max_bytes, then hand the body on.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> dict:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


async def wait_disconnect(receive: Callable) -> None:
    """Returns when the client disconnects (the request body must already have been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(exc: RequestValidationError | ValidationError) -> APIError:
    """A 400 naming the first wrong field (and counting the rest)."""
    errors = exc.errors()
    if not errors:
        return bad_request("the request is not valid")
    first = errors[0]
    kind, loc = first.get("type", ""), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        where = f" at position {loc[1]}" if len(loc) > 1 else ""
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        return APIError(400, f"malformed JSON body{where}: {reason}", code="invalid_json")
    field = _loc(loc)
    msg = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    if not field:
        if kind == "missing":
            return bad_request("the request has no body: send a JSON object", None, "missing_body")
        return bad_request(f"the body must be a JSON object ({msg})", None)
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return bad_request(
        f"{field}: {msg}{more}", field, "missing_field" if kind == "missing" else "invalid_value"
    )


_BodyModel = TypeVar("_BodyModel", bound=BaseModel)


async def read_body(request: Request, model: type[_BodyModel]) -> _BodyModel:
    """The JSON body as ``model``, or a 400 naming what is wrong. Parsed here rather than by FastAPI's
    dependency machinery, which costs more per request than the whole search on a fast backend."""
    raw = await request.body()
    if not raw.strip():
        raise bad_request("the request has no body: send a JSON object", None, "missing_body")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        where = f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise APIError(400, f"malformed JSON body{where}: {reason}", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON request body of ``model`` (see :func:`add_body_schemas`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def add_body_schemas(spec: dict[str, Any], models: list[type[BaseModel]]) -> dict[str, Any]:
    """Put the request models (and the models they use) into the spec's components."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return spec


def search_error(exc: BaseException, plan: SearchPlan, timeout_s: float) -> APIError:
    """What a failed search answers."""
    model = plan.model.name
    if isinstance(exc, SearchTimedOut):
        return APIError(
            504,
            f"the search on model {model!r} ran past this server's limit of {timeout_s:g} s",
            code="timeout",
        )
    if isinstance(exc, SearchStopped):
        return APIError(503, "the search was stopped: the server is shutting down", code="shutting_down")
    if isinstance(exc, BackendFailure):
        text = str(exc)[:500]
        if exc.timeout:
            return APIError(504, f"model {model!r}: {text}", code="upstream_timeout")
        return APIError(502, f"model {model!r}: {text}", code="upstream_error")
    if isinstance(exc, ContextLengthError):
        return bad_request(
            f"the prompt does not fit model {model!r}: {exc}", "messages", "context_length_exceeded"
        )
    if isinstance(exc, BudgetTooSmall):
        return bad_request(f"ponder.budget: {exc}", "ponder.budget", "budget_too_small")
    if isinstance(exc, PonderError):
        return bad_request(str(exc))
    log.error("internal error in a search on model %r", model, exc_info=exc)
    return APIError(500, "internal server error", code="internal_error")


def run_search(plan: SearchPlan, prompts: list[str], meter: Meter) -> list[StrategyResult]:
    """The search: the strategy on each prompt, every model call metered and cancellable (in a
    worker thread, or on the event loop when ``plan.on_loop``)."""
    generator = MeteredGenerator(plan.model.generator, meter, plan.on_loop)
    verifier = MeteredVerifier(plan.verifier, meter, plan.on_loop) if plan.verifier is not None else None
    with plan.model.answer_context():
        return [plan.strategy.run(p, generator, verifier, plan.budget, plan.seed) for p in prompts]


class Job:
    """One request's search: its plan, prompts, cancel flag and the progress it reports."""

    def __init__(self, server: Server, plan: SearchPlan, prompts: list[str], with_progress: bool) -> None:
        self.server = server
        self.plan = plan
        self.prompts = prompts
        self.cancel = threading.Event()
        self.progress: dict[str, Any] | None = None
        self.progress_ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._last_report = 0.0
        self.started = time.monotonic()
        self.with_progress = with_progress

    def _on_progress(self, snapshot: dict[str, Any]) -> None:  # where the search runs
        now = time.monotonic()
        if now - self._last_report >= PROGRESS_EVERY_S:
            self._last_report = now
            if self.plan.on_loop:  # already on the loop's thread
                self._deliver(snapshot)
                return
            try:
                self._loop.call_soon_threadsafe(self._deliver, snapshot)
            except RuntimeError:  # the loop is closed: the server is shutting down
                pass

    def _deliver(self, snapshot: dict[str, Any]) -> None:
        self.progress = snapshot
        self.progress_ready.set()

    def work(self) -> list[StrategyResult]:
        meter = Meter(
            self.cancel,
            time.monotonic() + self.server.config.timeout_s,
            self._on_progress if self.with_progress else None,
        )
        self.started = meter.started
        return run_search(self.plan, self.prompts, meter)

    async def start(self, ticket: Ticket) -> asyncio.Future:
        future = await ticket.start(self.work, on_loop=self.plan.on_loop)
        # Read the outcome even when nobody waits for it any more (no "never retrieved" warnings).
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future


class Server:
    """Shared state of one app: config, models, the pool, live jobs."""

    def __init__(self, config: ServeConfig, models: dict[str, ServedModel]) -> None:
        self.config = config
        self.models = models
        self.pool = SearchPool(config.max_concurrency, config.max_queue)
        self.jobs: set[Job] = set()
        self.created = int(time.time())

    def admit(self) -> Ticket:
        try:
            return self.pool.reserve()
        except Overloaded as exc:
            raise APIError(
                429,
                f"the server is at capacity ({self.pool.max_concurrency} searches running, "
                f"{self.pool.max_queue} queued); retry after {exc.retry_after} s",
                code="server_overloaded",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None

    async def run(self, job: Job, request: Request) -> list[StrategyResult]:
        """Run a job to its end, or stop it when its client disconnects first."""
        ticket = self.admit()
        self.jobs.add(job)
        gone = asyncio.ensure_future(wait_disconnect(request.receive))
        try:
            if self.pool.has_free_worker():
                future = await job.start(ticket)  # no wait: no need to race the client
            else:
                starting = asyncio.ensure_future(job.start(ticket))
                done, _ = await asyncio.wait({starting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if starting not in done:
                    starting.cancel()
                    raise ClientGone
                future = starting.result()
            limit = self.config.timeout_s + 10.0  # the worker's own deadline comes first
            done, _ = await asyncio.wait({future, gone}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if future in done:
                try:
                    return future.result()
                except Exception as exc:
                    raise search_error(exc, job.plan, self.config.timeout_s) from None
            if gone in done:
                raise ClientGone
            raise search_error(SearchTimedOut(), job.plan, self.config.timeout_s)
        finally:
            job.cancel.set()  # a no-op once the search is over; stops it otherwise
            gone.cancel()
            ticket.drop()
            self.jobs.discard(job)

    def shutdown(self) -> None:
        for job in list(self.jobs):
            job.cancel.set()
        self.pool.shutdown()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


class SearchStream(StreamingResponse):
    """An SSE response that stops its search when the client disconnects, and frees its place in the
    pool even if streaming never began."""

    def __init__(self, job: Job, ticket: Ticket) -> None:
        super().__init__(
            iter(()),  # the events are set once the stream exists (they watch it for a disconnect)
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.job = job
        self.ticket = ticket
        self.gone = asyncio.Event()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        watcher.add_done_callback(lambda t: t.cancelled() or self._left())
        try:
            await super().__call__(scope, receive, send)
        finally:
            watcher.cancel()
            self.job.cancel.set()
            self.ticket.drop()
            self.job.server.jobs.discard(self.job)

    def _left(self) -> None:
        self.job.cancel.set()
        self.gone.set()


def _chunk(
    kind: str,
    rid: str,
    created: int,
    model: str,
    index: int,
    text: str | None,
    finish: str | None,
    role: bool = False,
) -> dict[str, Any]:
    if kind == "chat":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}


async def stream_events(
    server: Server,
    job: Job,
    ticket: Ticket,
    stream: SearchStream,
    kind: str,
    rid: str,
    request_model: str,
    n: int,
    stops: list[str],
    include_usage: bool,
    echo_prompts: list[str] | None,
) -> AsyncIterator[str]:
    """SSE events: a first chunk (role), progress chunks while the search runs (empty delta, the
    progress in ``ponder``), then each answer's text, a final chunk per choice, usage, ``[DONE]``."""
    created = int(time.time())
    plan = job.plan
    first = _chunk(kind, rid, created, request_model, 0, "", None, role=True)
    first["ponder"] = {"event": "started", **plan.describe()}
    yield _sse(first)
    gone = asyncio.ensure_future(stream.gone.wait())
    starting = asyncio.ensure_future(job.start(ticket))
    try:
        while True:  # queued: wait for a worker, keeping the connection alive
            done, _ = await asyncio.wait(
                {starting, gone}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if gone in done:
                return
            if starting in done:
                break
            yield ": queued\n\n"
        future = starting.result()
        while not future.done():
            ready = asyncio.ensure_future(job.progress_ready.wait())
            done, _ = await asyncio.wait(
                {future, ready, gone}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
            )
            ready.cancel()
            if gone in done:
                return
            if job.progress_ready.is_set():
                job.progress_ready.clear()
                if plan.options.progress and job.progress is not None and not future.done():
                    event = _chunk(kind, rid, created, request_model, 0, None if kind == "chat" else "", None)
                    event["ponder"] = job.progress
                    yield _sse(event)
            elif not done:
                yield ": searching\n\n"
        try:
            results = future.result()
        except Exception as exc:
            error = search_error(exc, plan, server.config.timeout_s)
            if error.status >= 500:
                log.warning("%d %s (stream): %s", error.status, error.code, error.message)
            yield _sse(error.body())
            yield "data: [DONE]\n\n"
            return
        info = ponder_info(plan, results, time.monotonic() - job.started)
        spend = usage(total_compute(results))
        texts = [
            (echo_prompts[p] if echo_prompts is not None else "") + text
            for p, result in enumerate(results)
            for text in answer_texts(plan, result, n, stops)
        ]
        for index, text in enumerate(texts):
            for piece in text.splitlines(keepends=True) or [""]:
                yield _sse(_chunk(kind, rid, created, request_model, index, piece, None))
            final = _chunk(kind, rid, created, request_model, index, None if kind == "chat" else "", "stop")
            if index == len(texts) - 1:
                final["ponder"] = {"event": "done", **info, "usage": spend}
            yield _sse(final)
        log_response(server, rid, {"choices": texts, "ponder": info})
        if include_usage:
            tail = {
                "id": rid,
                "object": first["object"],
                "created": created,
                "model": request_model,
                "choices": [],
                "usage": spend,
            }
            yield _sse(tail)
        yield "data: [DONE]\n\n"
    finally:
        gone.cancel()
        if not starting.done():
            starting.cancel()


def log_request(server: Server, rid: str, body: Any) -> None:
    if server.config.log_requests:
        log.info("request %s %s", rid, body.model_dump_json(exclude_none=True))


def log_response(server: Server, rid: str, payload: Any) -> None:
    if server.config.log_requests:
        log.info("response %s %s", rid, json.dumps(payload, default=str))


def create_app(config: ServeConfig | None = None, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The app for ``config`` (default: the embedded model); ``models`` skips loading them again."""
    config = config or ServeConfig()
    server = Server(config, models if models is not None else load_models(config))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        server.shutdown()

    app = FastAPI(
        title="ponder serve",
        version=__version__,
        description="An OpenAI-compatible endpoint that answers with test-time compute: a search "
        "(majority vote, best-of-N, PRM beam search, ...) over a model's samples, within a budget. "
        "Choose the strategy with a model prefix (beam-16/embedded) or the `ponder` object.",
        lifespan=lifespan,
    )
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    bearer = HTTPBearer(auto_error=False, description="required when the server has API keys")
    keys = [k.encode() for k in config.api_keys]

    # async: FastAPI runs a plain def dependency in a thread, a hand-off that costs more than the check.
    async def authorize(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if not keys:
            return
        if creds is None:
            raise APIError(
                401, "missing API key: send the header 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        given = creds.credentials.encode()
        # Compare with every key, in constant time, so timing tells nothing about a key.
        if not any([hmac.compare_digest(given, k) for k in keys]):
            raise APIError(401, "invalid API key", code="invalid_api_key")

    # The completion endpoints check the key themselves: solving the dependency above costs FastAPI
    # about as much per request as everything else it does for one. Their OpenAPI says the same.
    async def check_key(request: Request) -> None:
        if keys:
            await authorize(await bearer(request))

    secured = {"security": [{bearer.scheme_name: []}]}

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%d %s: %s", exc.status, exc.code, exc.message)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return APIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers).response()

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; nginx's "client closed request"

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return APIError(500, "internal server error", code="internal_error").response()

    def check_n(model: ServedModel, n: int) -> None:
        if n > model.entry.max_n:
            raise bad_request(
                f"n: at most {model.entry.max_n} choices for model {model.name!r}, got {n}", "n"
            )

    def check_size(total: int, param: str) -> None:
        if total > config.max_prompt_chars:
            raise bad_request(
                f"{param}: the prompt is {total} characters; "
                f"this server takes at most {config.max_prompt_chars}",
                param,
                "prompt_too_long",
            )

    async def answer(
        body: Any, request: Request, kind: str, prompts: list[str], plan: SearchPlan, echo: list[str] | None
    ) -> Response:
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        log_request(server, rid, body)
        stops = body.stops()
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if body.stream:
            ticket = server.admit()
            job = Job(server, plan, prompts, with_progress=plan.options.progress)
            server.jobs.add(job)
            stream = SearchStream(job, ticket)
            stream.body_iterator = stream_events(
                server, job, ticket, stream, kind, rid, body.model, body.n, stops, include_usage, echo
            )
            return stream
        job = Job(server, plan, prompts, with_progress=False)
        results = await server.run(job, request)
        info = ponder_info(plan, results, time.monotonic() - job.started)
        choices = []
        for p, result in enumerate(results):
            for text in answer_texts(plan, result, body.n, stops):
                if echo is not None:
                    text = echo[p] + text
                i = len(choices)
                if kind == "chat":
                    choices.append(
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    )
                else:
                    choices.append({"index": i, "text": text, "finish_reason": "stop", "logprobs": None})
        out = {
            "id": rid,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": choices,
            "usage": usage(total_compute(results)),
            "ponder": info,
        }
        log_response(server, rid, out)
        return JSONResponse(out)

    async def open_request(request: Request, schema: type) -> tuple[Any, Any, Any]:
        """The validated body, its model and its strategy prefix; refuses what the server lacks."""
        await check_key(request)
        body = await read_body(request, schema)
        unsupported = body.unsupported()
        if unsupported:
            raise bad_request(f"{unsupported}: not supported by this server", unsupported, "unsupported")
        model, prefix = resolve_model(body.model, server.models)
        check_n(model, body.n)
        return body, model, prefix

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        responses={200: {"model": ChatCompletion, "content": {"text/event-stream": {}}}, **_ERRORS},
        summary="Answer a chat with a test-time compute search",
        openapi_extra={**json_body(ChatCompletionRequest), **secured},
    )
    async def chat_completions(request: Request) -> Response:
        body, model, prefix = await open_request(request, ChatCompletionRequest)
        messages = [{"role": m.role, "content": m.content or ""} for m in body.messages]
        check_size(sum(len(m["content"]) for m in messages), "messages")
        prompt = model.chat_prompt(messages)
        plan = plan_search(
            model,
            prefix,
            body.ponder,
            temperature=body.temperature,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            seed=body.seed,
        )
        return await answer(body, request, "chat", [prompt], plan, None)

    @app.post(
        "/v1/completions",
        response_model=None,
        responses={200: {"model": TextCompletion, "content": {"text/event-stream": {}}}, **_ERRORS},
        summary="Complete prompts with a test-time compute search",
        openapi_extra={**json_body(CompletionRequest), **secured},
    )
    async def completions(request: Request) -> Response:
        body, model, prefix = await open_request(request, CompletionRequest)
        texts = body.prompts()
        if len(texts) > config.max_prompts:
            raise bad_request(
                f"prompt: at most {config.max_prompts} prompts per request, got {len(texts)}", "prompt"
            )
        check_size(sum(len(t) for t in texts), "prompt")
        many = len(texts) > 1
        prompts = [model.text_prompt(t, f"prompt[{i}]" if many else "prompt") for i, t in enumerate(texts)]
        plan = plan_search(
            model,
            prefix,
            body.ponder,
            temperature=body.temperature,
            max_tokens=body.max_tokens,
            seed=body.seed,
        )
        return await answer(body, request, "text", prompts, plan, texts if body.echo else None)

    def card(name: str, model: ServedModel) -> dict[str, Any]:
        entry = model.entry
        return {
            "id": name,
            "object": "model",
            "created": server.created,
            "owned_by": "ponder",
            "ponder": {
                "strategy": entry.strategy,
                "budget": entry.budget.describe(),
                "max_budget": entry.max_budget.describe(),
                "max_n": entry.max_n,
                "verifiers": sorted(model.verifiers),
                "prompt_format": entry.format,
                "answer_format": entry.answers,
            },
        }

    @app.get(
        "/v1/models",
        response_model=ModelList,
        dependencies=[Depends(authorize)],
        responses={401: _ERRORS[401]},
        summary="The served models",
    )
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [card(name, m) for name, m in server.models.items()]}

    @app.get(
        "/v1/models/{model:path}",
        response_model=ModelCard,
        dependencies=[Depends(authorize)],
        responses={401: _ERRORS[401], 404: _ERRORS[404]},
        summary="One model (with or without prefix)",
    )
    async def get_model(model: str) -> dict[str, Any]:
        served, prefix = resolve_model(model, server.models)
        out = card(model, served)
        if prefix is not None:
            out["ponder"]["strategy"] = prefix.strategy
            if prefix.samples is not None:
                out["ponder"]["budget"] = {"samples": prefix.samples}
        return out

    @app.get("/health", response_model=Health, summary="Liveness and load")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(server.models), **server.pool.stats()}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            app.openapi_schema = add_body_schemas(spec, [ChatCompletionRequest, CompletionRequest])
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def serve(config: ServeConfig, log_level: str = "info") -> None:
    """Load the models and serve until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpx2"):  # a line per upstream request is noise, and costs time per request
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_app(config)
    names = ", ".join(app.state.server.models)
    log.info(
        "ponder serve %s on http://%s:%d (models: %s; API key %s; request logging %s)",
        __version__,
        config.host,
        config.port,
        names,
        "required" if config.api_keys else "not required",
        "on" if config.log_requests else "off",
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=config.access_log,
        timeout_graceful_shutdown=5,
    )
