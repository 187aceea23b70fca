"""A small OpenAI-compatible server on loopback for testing the HTTP backend, with faults on demand.

Its "model" solves the built-in arithmetic task one character per token: sample ``s`` of a
request with seed ``seed`` writes the reference solution, or (when ``wrong(seed, s)``) a
corrupted one, continuing from however many lines the prompt (or, in chat, the assistant
prefix) already holds. Prompts that are not ``Q:`` questions get ``FALLBACK_TEXT``.

Faults are queued per request (:meth:`FakeOpenAIServer.fail`): ``"500"``, ``"429"``, ``"drop"``
(close the connection without answering), ``"malformed"`` (200 with broken JSON) and
``("slow", seconds)``. ``ignore_n`` makes it answer one choice whatever ``n`` asks (llama.cpp and
Ollama do), ``usage`` and ``logprobs`` turn those parts of the answer off, and ``stop_reason``
adds vLLM's field saying which stop string (or None for end of text) ended a choice.

Run as a process: ``python tests/openai_server.py --port 8000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ponder.tasks.arithmetic import corrupt_solution, decode_number, parse_question

FALLBACK_TEXT = "I cannot tell.\nA: none"
_QUESTION = re.compile(r"Q:(\d+(?:[+-]\d+)+)\n")


def wrong(seed: int | None, sample: int) -> bool:
    """Whether sample ``sample`` of a call with ``seed`` writes a corrupted solution (1 in 3)."""
    digest = hashlib.sha256(repr((seed, sample)).encode()).digest()
    return digest[0] % 3 == 0


def solve_text(text: str, seed: int | None, sample: int) -> str:
    """The continuation of ``text`` (question plus any lines already written) for one sample."""
    m = _QUESTION.search(text)
    if not m:
        return FALLBACK_TEXT
    ordinary = re.sub(r"\d+", lambda d: str(decode_number(d.group())), m.group(1))
    problem = parse_question(ordinary)
    if wrong(seed, sample):
        solution = corrupt_solution(problem, random.Random(repr((seed, sample))))
    else:
        solution = problem.solution
    done = text[m.end() :].count("\n")
    lines = solution.split("\n")
    return "\n".join(lines[done:])


@dataclass
class ServerState:
    models: list[str] = field(default_factory=lambda: ["tiny-solver"])
    ignore_n: bool = False
    usage: bool = True
    logprobs: bool = True
    stop_reason: bool = False
    chat_continue: bool = True  # honour a trailing assistant message (prefill)
    reject_logprobs: bool = False  # answer 400 to requests asking for log-probs
    cached_tokens: int = 0  # prompt tokens to report as served from a prefix cache
    in_flight: int = 0
    max_in_flight: int = 0
    faults: list[Any] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Any:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


def _complete(state: ServerState, text: str, body: dict, chat: bool) -> tuple[list[dict], int]:
    n = 1 if state.ignore_n else int(body.get("n") or 1)
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    seed = body.get("seed")
    temperature = float(body.get("temperature", 1.0))
    choices, emitted = [], 0
    for i in range(n):
        full = solve_text(text, seed, 0 if temperature == 0 else i)
        out, finish, reason = full, "stop", None
        cuts = [(full.find(s), s) for s in stop if s and full.find(s) >= 0]
        if cuts:
            pos, reason = min(cuts)
            out = full[:pos]
        if len(out) > max_tokens:
            out, finish, reason = out[:max_tokens], "length", None
        # One token per character; a stop string's characters are generated, then cut off.
        tokens = len(out) + (len(reason) if reason else 0)
        emitted += tokens
        choice: dict[str, Any] = {"index": i, "finish_reason": finish}
        want_lp = body.get("logprobs")
        k = int(body.get("top_logprobs") or 0) if chat else int(want_lp or 0)
        # The emitted character at -0.25, then "?" and "!" as the runners-up.
        alternatives = [("?", -2.0), ("!", -3.0)][: max(0, k - 1)]
        if chat:
            choice["message"] = {"role": "assistant", "content": out}
            if state.logprobs and want_lp:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": c,
                            "logprob": -0.25,
                            "bytes": list(c.encode()),
                            "top_logprobs": [
                                {"token": t, "logprob": lp, "bytes": None}
                                for t, lp in [(c, -0.25), *alternatives][:k]
                            ],
                        }
                        for c in out
                    ]
                }
        else:
            choice["text"] = out
            if state.logprobs and want_lp is not None:
                choice["logprobs"] = {
                    "tokens": list(out),
                    "token_logprobs": [-0.25] * len(out),
                    "top_logprobs": [dict([(c, -0.25), *alternatives]) for c in out] if k > 1 else None,
                    "text_offset": list(range(len(out))),
                }
        if state.stop_reason:
            choice["stop_reason"] = reason
        choices.append(choice)
    return choices, emitted


def make_handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _fault(self) -> bool:
            fault = state.next_fault()
            if fault is None:
                return False
            if isinstance(fault, tuple) and fault[0] == "slow":
                time.sleep(fault[1])
                return False
            if fault == "500":
                self._send(500, {"error": {"message": "internal error", "type": "server_error"}})
            elif fault == "429":
                self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            elif fault == "malformed":
                self._send(200, b'{"id": "cmpl-1", "choices": [')
            elif fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            return True

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": m, "object": "model", "owned_by": "test", "created": 0} for m in state.models]
                self._send(200, {"object": "list", "data": data})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.requests.append({"path": self.path, **body})
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                self._answer(body)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self, body: dict) -> None:
            if self._fault():
                return
            if state.reject_logprobs and body.get("logprobs") not in (None, False):
                self._send(400, {"error": {"message": "logprobs are not supported"}})
                return
            if body.get("model") not in state.models:
                self._send(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
                return
            if self.path == "/v1/completions":
                text, chat = body["prompt"], False
            elif self.path == "/v1/chat/completions":
                msgs = body["messages"]
                text = next(m["content"] for m in msgs if m["role"] == "user")
                if msgs[-1]["role"] == "assistant" and state.chat_continue:
                    text += msgs[-1]["content"]
                chat = True
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            choices, emitted = _complete(state, text, body, chat)
            reply: dict[str, Any] = {
                "id": "cmpl-test",
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": choices,
            }
            if state.usage:
                prompt_tokens = len(text) + 1
                reply["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": emitted,
                    "total_tokens": prompt_tokens + emitted,
                }
                if state.cached_tokens:
                    reply["usage"]["prompt_tokens_details"] = {"cached_tokens": state.cached_tokens}
            self._send(200, reply)

    return Handler


class FakeOpenAIServer:
    """The server on a free loopback port, in a background thread; ``url`` is its ``/v1`` base."""

    def __init__(self, port: int = 0, **state: Any) -> None:
        self.state = ServerState(**state)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.state))
        self.httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for one, and tests start and stop many servers.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail(self, *faults: Any) -> None:
        with self.state.lock:
            self.state.faults.extend(faults)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with FakeOpenAIServer(args.port) as server:
        print(f"serving on {server.url}", flush=True)
        server.thread.join()
