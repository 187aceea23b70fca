"""The vLLM reward-model verifier against a loopback fake of vLLM's pooling API: request and
response shapes for each format, token accounting from the server's usage, retries, and every
fault (HTTP 500, a timeout, malformed JSON, wrong shapes, refusals, a server that is down)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("httpx")

from ponder.errors import BackendError, ConfigError  # noqa: E402
from ponder.strategies import Budget, make_strategy  # noqa: E402
from ponder.verifiers.remote import VLLMRewardVerifier, row_score, share  # noqa: E402
from ponder.verifiers.spec import load_verifier  # noqa: E402
from stubs import PROMPT, StepStub, one_marked_per_call  # noqa: E402

QUESTION = "Q:84+72-31\n"


def step_p(k: int) -> float:
    return round(0.1 + 0.2 * (k % 4), 2)


class FakeVLLM(BaseHTTPRequestHandler):
    """Pooling rows per step marker; ``server.faults`` is a list of faults for the next requests."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": "prm"}]}).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append((self.path, body))
        fault = server.faults.pop(0) if server.faults else None
        if fault == "500":
            return self._send(500, b'{"error": "engine crashed"}')
        if fault == "400":
            return self._send(400, b'{"error": "input too long"}')
        if fault == "slow":
            time.sleep(1.0)
        if fault == "badjson":
            return self._send(200, b"<html>proxy error</html>", "text/html")
        texts = body["input"]
        data = []
        for i, text in enumerate(texts):
            if self.path == "/classify":
                p = step_p(len(text))
                data.append({"index": i, "label": "LABEL_1", "probs": [1 - p, p], "num_classes": 2})
                continue
            if "<extra_0>" in text:
                rows = [[1 - step_p(k), step_p(k)] for k in range(text.count("<extra_0>"))]
            else:
                rows = [[step_p(k), 1 - step_p(k)] for k in range(text.count(" ки"))]
            if fault == "wrong_rows":
                rows = rows[:-1]
            if fault == "bad_row":
                rows[0] = ["x"]
            data.append({"index": i, "object": "pooling", "data": rows})
        if fault == "missing":
            data = data[:-1]
        usage = {"prompt_tokens": sum(len(t) // 2 for t in texts), "total_tokens": 0}
        reply = {"id": "pool-1", "object": "list", "model": body["model"], "data": data[::-1], "usage": usage}
        self._send(200, json.dumps(reply).encode())


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a slow answer to a client that timed out meets a closed socket: expected here


@pytest.fixture(scope="module")
def server():
    srv = QuietServer(("127.0.0.1", 0), FakeVLLM)
    srv.requests, srv.faults = [], []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server):
    server.requests.clear()
    server.faults.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


def make(url, fmt="qwen", **kw):
    kw.setdefault("backoff_s", 0.01)
    return VLLMRewardVerifier(url, "prm", fmt, **kw)


def test_qwen_format_sends_chatml_with_separators_and_reads_class_one(server, url):
    v = make(url, num_params=1000)
    out = v.score([QUESTION] * 3, ["84+72=57\n57-31=26\nA:26", "84+72=57\n", "\n"])
    assert [s.step_scores for s in out] == [[0.1, 0.3, 0.5], [0.1], []]
    assert all(s.outcome is None for s in out)
    path, body = server.requests[-1]
    assert (
        path == "/pooling" and body["model"] == "prm" and len(body["input"]) == 2
    )  # nothing sent for no steps
    assert body["input"][1] == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<|im_end|>\n"
        "<|im_start|>user\nQ:84+72-31<|im_end|>\n<|im_start|>assistant\n84+72=57<extra_0><|im_end|>\n"
    )
    # Tokens: the server's usage, shared in proportion to the estimates; never above them.
    assert sum(s.tokens for s in out) == sum(len(t) // 2 for t in body["input"])
    for s, sol in zip(out, ["84+72=57\n57-31=26\nA:26", "84+72=57\n", "\n"]):
        assert s.tokens <= v.count_tokens(QUESTION, sol)
    assert v.count_tokens(QUESTION, "") == len(v.render(QUESTION, "")[0].encode()) + 2  # planning overhead


def test_shepherd_and_orm_formats(server, url):
    v = make(url, "shepherd")
    assert v.score([QUESTION], ["a\nb"])[0].step_scores == [0.1, 0.3]  # index 0: P("+")
    assert server.requests[-1][1]["input"] == ["Q:84+72-31 a ки\nb ки"]
    orm = make(url, "orm")
    s = orm.score([QUESTION], ["A:26"])[0]
    assert server.requests[-1][0] == "/classify"
    assert s.outcome == s.step_scores[0] == pytest.approx(step_p(len(QUESTION + "A:26")))


def test_rows_may_be_probabilities_or_logits():
    assert row_score([0.2, 0.8], 1) == pytest.approx(0.8)
    assert row_score([0.0, 2.0], 1) == pytest.approx(1 / (1 + 2.718281828**-2))  # logits: softmaxed
    assert row_score([0.7], 0) == pytest.approx(0.7) and row_score(3.0, 0) == pytest.approx(
        1 / (1 + 2.718281828**-3)
    )
    with pytest.raises(ValueError):
        row_score([], 0)
    assert share(10, [1, 1, 1]) == [4, 3, 3] and sum(share(7, [5, 0, 2])) == 7


def test_server_errors_are_retried_then_reported(server, url):
    v = make(url, retries=2)
    server.faults[:] = ["500"]
    assert v.score([QUESTION], ["a"])[0].step_scores == [0.1]  # one failure, then an answer
    assert len(server.requests) == 2
    server.faults[:] = ["500"] * 3
    with pytest.raises(
        BackendError, match=r"verifier server http://127.0.0.1:\d+/pooling failed 3 times: HTTP 500"
    ):
        v.score([QUESTION], ["a"])


def test_a_timeout_is_retried_then_reported(server, url):
    v = make(url, timeout_s=0.3, retries=1)
    server.faults[:] = ["slow", "slow"]
    start = time.monotonic()
    with pytest.raises(BackendError, match="failed 2 times: no answer within 0.3s"):
        v.score([QUESTION], ["a"])
    assert time.monotonic() - start < 5


def test_malformed_answers_are_reported_at_once(server, url):
    v = make(url, retries=3)
    for fault, message in (
        ("badjson", "not JSON: '<html>proxy error</html>'"),
        ("wrong_rows", "returned 1 score rows for a solution of 2 steps: serve the PRM with step pooling"),
        ("bad_row", "malformed result 0"),
        ("missing", "returned 1 results for 2 inputs"),
        ("400", "refused the request: HTTP 400"),
    ):
        server.requests.clear()
        server.faults[:] = [fault]
        with pytest.raises(BackendError, match=message):
            v.score([QUESTION] * 2, ["a\nb", "c\nd"])
        assert len(server.requests) == 1, f"{fault} must not be retried"


def test_a_server_that_is_down_or_lacks_the_model_is_refused_before_scoring(url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(BackendError, match=rf"127.0.0.1:{free}/v1/models failed 1 time: ConnectError"):
        VLLMRewardVerifier(f"http://127.0.0.1:{free}", "prm", retries=0)
    with pytest.raises(ConfigError, match=r"does not serve 'other'; it serves \['prm'\]"):
        VLLMRewardVerifier(url, "other")
    with pytest.raises(ConfigError, match="unknown reward-model format 'mistral'"):
        VLLMRewardVerifier(url, "prm", "mistral")
    with pytest.raises(ConfigError, match="must look like http://host:port"):
        VLLMRewardVerifier("localhost:8000", "prm")


def test_spec_loading_and_options(server, url):
    port = server.server_address[1]
    v = load_verifier(
        f"vllm-reward://127.0.0.1:{port}/prm?format=shepherd&timeout=2.5&retries=1&params=7.6e9"
    )
    assert isinstance(v, VLLMRewardVerifier)
    assert (v.format, v.retries, v.num_params, v.client.timeout.read) == ("shepherd", 1, 7_600_000_000, 2.5)
    for bad, message in (
        ("vllm-reward:127.0.0.1/prm", "must look like vllm-reward://host:port/model"),
        (f"vllm-reward://127.0.0.1:{port}/", "must name a host and a model"),
        ("vllm-reward://127.0.0.1:99999/prm", "malformed host or port"),
        (f"vllm-reward://127.0.0.1:{port}/prm?speed=1", "unknown option 'speed'"),
        (f"vllm-reward://127.0.0.1:{port}/prm?retries=many", "bad value for option 'retries'"),
        (f"vllm-reward://127.0.0.1:{port}/prm?tokenizer=/nowhere", "tokenizer directory not found"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_verifier(bad)


def test_best_of_n_counts_the_servers_tokens_and_flops(server, url):
    v = make(url, num_params=5000)
    result = make_strategy("best_of_n").run(PROMPT, StepStub(one_marked_per_call(2)), v, Budget(samples=4), 0)
    sent = [t for path, body in server.requests for t in body["input"]]
    assert result.compute.verifier_tokens == sum(len(t) // 2 for t in sent)
    assert result.compute.verifier_flops == pytest.approx(2 * 5000 * result.compute.verifier_tokens)
    assert all(c.score is not None for c in result.candidates)
