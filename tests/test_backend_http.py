"""The OpenAI-compatible HTTP generator against a real server on loopback (tests/openai_server.py):
n samples native and fanned out, step stops, chat continuation, usage, retries and faults, and
every strategy running on it."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from typer.testing import CliRunner

import ponder
from backend_stubs import CheckingVerifier
from openai_server import FakeOpenAIServer
from ponder.backends import Generator
from ponder.backends.base import SamplingParams
from ponder.backends.openai_http import OpenAIGenerator, RetryPolicy
from ponder.backends.spec import load_generator
from ponder.cli import app
from ponder.errors import BackendError, ConfigError
from ponder.strategies.budget import Budget
from ponder.strategies.registry import make_strategy
from ponder.tasks import extract_answer, parse_question

PROBLEM = parse_question("48+27-13")
PROMPT = PROBLEM.prompt
FAST = RetryPolicy(max_retries=3, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def make(srv: FakeOpenAIServer, **kw) -> OpenAIGenerator:
    kw.setdefault("retry", FAST)
    return OpenAIGenerator(srv.url, "tiny-solver", **kw)


def posts(srv: FakeOpenAIServer) -> list[dict]:
    return [r for r in srv.state.requests if r["path"].endswith("completions")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- generation ---------------------------------------------------------------------------------


def test_n_samples_in_one_request_when_the_server_honours_n(server):
    with make(server) as gen:
        assert isinstance(gen, Generator)
        groups = gen.generate([PROMPT, PROMPT], SamplingParams(n=3, seed=1, max_new_tokens=64))
        assert [len(g) for g in groups] == [3, 3]
        assert len(posts(server)) == 2 and all(r["n"] == 3 for r in posts(server))
        assert gen.native_n is True
        for c in groups[0]:
            assert extract_answer(c.text) is not None
            assert c.finish_reason == "eos"
            # One token per character on this server; counted from the returned log-probs.
            assert c.completion_tokens == len(c.text) == len(c.logprobs)
            assert c.prompt_tokens == len(PROMPT) + 1  # the server's usage
            assert all(lp == -0.25 for lp in c.logprobs)


def test_a_server_ignoring_n_is_detected_and_fanned_out():
    with FakeOpenAIServer(ignore_n=True) as srv, make(srv) as gen:
        group = gen.generate([PROMPT], SamplingParams(n=4, seed=5, max_new_tokens=64))[0]
        assert len(group) == 4
        first = posts(srv)
        assert first[0].get("n") == 4 and all("n" not in r for r in first[1:]) and len(first) == 4
        # Fanned-out samples carry their own seeds, so they differ like samples should.
        assert len({r.get("seed") for r in first[1:]}) == 3
        assert gen.native_n is False
        srv.state.requests.clear()
        gen.generate([PROMPT], SamplingParams(n=3, seed=5, max_new_tokens=64))
        assert len(posts(srv)) == 3 and all("n" not in r for r in posts(srv))  # no more n requests


def test_native_n_mode_refuses_a_server_that_ignores_n():
    with FakeOpenAIServer(ignore_n=True) as srv, make(srv, n_mode="native") as gen:
        with pytest.raises(BackendError, match="1 choices for n=2"):
            gen.generate([PROMPT], SamplingParams(n=2))


def test_fanout_mode_never_sends_n(server):
    with make(server, n_mode="fanout") as gen:
        assert len(gen.generate([PROMPT], SamplingParams(n=3, max_new_tokens=64))[0]) == 3
        assert len(posts(server)) == 3 and all("n" not in r for r in posts(server))


@pytest.mark.parametrize("hint", [False, True])
def test_step_wise_generation_stops_at_the_delimiter(hint):
    with FakeOpenAIServer(stop_reason=hint) as srv, make(srv) as gen:
        c = gen.generate([PROMPT], SamplingParams(n=1, seed=0, temperature=0, stop_at_step=True))[0][0]
        assert posts(srv)[0]["stop"] == ["\n"]
        assert c.text == PROBLEM.solution.split("\n")[0] + "\n" and c.finish_reason == "stop"
        # The last line ends the text: with vLLM's stop_reason that is told apart from a step.
        path = "\n".join(PROBLEM.solution.split("\n")[:-1]) + "\n"
        last = gen.generate([PROMPT + path], SamplingParams(temperature=0, stop_at_step=True))[0][0]
        assert extract_answer(last.text) == PROBLEM.answer
        assert last.finish_reason == ("eos" if hint else "stop")


def test_a_server_ignoring_stop_still_gives_one_step(server):
    from ponder.backends.openai_http import _Reply

    with make(server) as gen:
        params = SamplingParams(temperature=0, stop_at_step=True)
        # A reply as if the server had not cut the text at the stop string.
        c = gen._completion(_Reply("84+72=57\n57-31=26\n", "length", None, None, None, False), 9, 12, params)
        assert c.text == "84+72=57\n" and c.finish_reason == "stop"


@pytest.mark.parametrize("hint", [False, True])
def test_stop_strings_end_a_sample_and_stay_in_its_text(hint):
    with FakeOpenAIServer(stop_reason=hint) as srv, make(srv) as gen:
        c = gen.generate([PROMPT], SamplingParams(temperature=0, stop=("=",)))[0][0]
        assert posts(srv)[-1]["stop"] == ["="]
        assert c.text == "84+72=" and c.finish_reason == "stop"
        both = gen.generate([PROMPT], SamplingParams(temperature=0, stop=("-",), stop_at_step=True))[0][0]
        assert posts(srv)[-1]["stop"] == ["\n", "-"]
        if hint:  # the server says which string matched
            assert both.text == "84+72=57\n" and both.finish_reason == "stop"
        else:  # two stop strings and no word on which: the text as the server sent it
            assert both.text == "84+72=57" and both.finish_reason == "stop"


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_top_logprobs_and_cached_prompt_tokens(api):
    with FakeOpenAIServer(cached_tokens=5) as srv, make(srv, api=api) as gen:
        c = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=3, top_logprobs=3))[0][0]
        body = posts(srv)[-1]
        assert (body["top_logprobs"] if api == "chat" else body["logprobs"]) == 3
        assert c.top_logprobs == [
            {"8": -0.25, "?": -2.0, "!": -3.0},
            {"4": -0.25, "?": -2.0, "!": -3.0},
            {"+": -0.25, "?": -2.0, "!": -3.0},
        ]
        assert c.cached_prompt_tokens == 5
        plain = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=3))[0][0]
        assert plain.top_logprobs is None


def test_length_limit_and_usage_fallbacks():
    with FakeOpenAIServer(usage=False, logprobs=False) as srv, make(srv) as gen:
        c = gen.generate([PROMPT], SamplingParams(max_new_tokens=5, temperature=0))[0][0]
        assert c.finish_reason == "length" and len(c.text) == 5
        assert c.completion_tokens == 5  # bytes: an upper bound when the server reports nothing
        assert c.prompt_tokens == gen.count_prompt_tokens(PROMPT) == len(PROMPT) + 1
    with FakeOpenAIServer(logprobs=False) as srv, make(srv) as gen:
        one = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=64))[0][0]
        assert one.completion_tokens == len(one.text)  # usage of a one-choice request
        group = gen.generate([PROMPT], SamplingParams(n=3, seed=2, max_new_tokens=64))[0]
        # Usage of a 3-choice request is shared out; the total is the server's.
        assert sum(c.completion_tokens for c in group) == sum(len(c.text) for c in group)


def test_a_server_without_logprobs_support_is_asked_again_without(server):
    server.state.reject_logprobs = True
    with make(server) as gen:
        c = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=64))[0][0]
        assert extract_answer(c.text) == PROBLEM.answer and c.logprobs == []
        assert gen.logprobs is False


def test_chat_api_continues_an_assistant_prefix(server):
    with make(server, api="chat", system="Be brief.") as gen:
        path = PROBLEM.solution.split("\n")[0] + "\n"
        c = gen.generate_continuations([PROMPT], [path], SamplingParams(temperature=0, stop_at_step=True))[0][
            0
        ]
        body = posts(server)[-1]
        assert body["path"] == "/v1/chat/completions"
        assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]
        assert body["messages"][-1]["content"] == path
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
        assert c.text == PROBLEM.solution.split("\n")[1] + "\n"
        assert c.completion_tokens == len(c.logprobs) > 0
        # A plain question is one user turn, nothing to continue.
        gen.generate([PROMPT], SamplingParams(temperature=0))
        assert [m["role"] for m in posts(server)[-1]["messages"]] == ["system", "user"]
        assert gen.count_prompt_tokens(PROMPT) > len(PROMPT) + gen.chat_overhead


def test_requests_run_concurrently_within_the_limit(server):
    server.fail(*[("slow", 0.2)] * 6)
    with make(server, n_mode="fanout", max_concurrency=2) as gen:
        start = time.monotonic()
        groups = gen.generate([PROMPT] * 3, SamplingParams(n=2, max_new_tokens=64))
        elapsed = time.monotonic() - start
    assert [len(g) for g in groups] == [2, 2, 2]
    assert server.state.max_in_flight == 2
    assert elapsed > 0.55  # 6 slow requests, never more than two at a time


def test_async_callers_await_on_their_own_loop_with_a_client_of_its_own(server):
    params = SamplingParams(n=3, seed=7, max_new_tokens=64)
    with make(server, max_concurrency=2) as gen:
        want = gen.generate([PROMPT, PROMPT], params)

        async def on_this_loop():
            return await gen.agenerate([PROMPT, PROMPT], params), asyncio.get_running_loop()

        for _ in range(2):  # a second loop gets a new client; the closed first one's is dropped
            got, loop = asyncio.run(on_this_loop())
            assert [[c.text for c in g] for g in got] == [[c.text for c in g] for g in want]
            assert got[0][0].prompt_tokens == want[0][0].prompt_tokens
            assert list(gen._sessions) == [loop]
        step = asyncio.run(gen.agenerate_continuations([PROMPT], [""], SamplingParams(stop_at_step=True)))
        assert step[0][0].finish_reason == "stop" and step[0][0].text.endswith("\n")
        with pytest.raises(ConfigError, match="n must be at least 1"):
            asyncio.run(gen.agenerate([PROMPT], SamplingParams(n=0)))
    with pytest.raises(ConfigError, match="closed"):
        asyncio.run(gen.agenerate([PROMPT]))


# --- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "429", "drop", "malformed"])
def test_transient_failures_are_retried(server, fault):
    with make(server) as gen:
        server.fail(fault, fault)
        c = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=64))[0][0]
        assert extract_answer(c.text) == PROBLEM.answer
        assert gen.retries == 2


def test_a_failure_past_the_last_retry_is_a_clear_error(server):
    with make(server, retry=RetryPolicy(max_retries=2, initial_backoff=0.01)) as gen:
        server.fail("500", "500", "500")
        with pytest.raises(
            BackendError, match=r"127\.0\.0\.1.*failed after 3 tries: HTTP 500: internal error"
        ):
            gen.generate([PROMPT], SamplingParams())
        server.fail("malformed", "malformed", "malformed")
        with pytest.raises(BackendError, match="unreadable|malformed|without"):
            gen.generate([PROMPT], SamplingParams())
        server.fail("drop", "drop", "drop")
        with pytest.raises(BackendError, match="connection failed"):
            gen.generate([PROMPT], SamplingParams())


def test_slow_responses_time_out_and_are_retried(server):
    with make(server, timeout=0.3, retry=RetryPolicy(max_retries=1, initial_backoff=0.01)) as gen:
        server.fail(("slow", 1.0))
        c = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=64))[0][0]
        assert extract_answer(c.text) == PROBLEM.answer and gen.retries == 1
        server.fail(("slow", 1.0), ("slow", 1.0))
        start = time.monotonic()
        with pytest.raises(BackendError, match=r"timed out \(timeout 0.3 s\)"):
            gen.generate([PROMPT], SamplingParams())
        assert time.monotonic() - start < 1.5


def test_client_errors_are_not_retried(server):
    with make(server) as gen:
        server.state.models = ["another-model"]  # the server stops serving it mid-run
        with pytest.raises(BackendError, match="HTTP 404: model 'tiny-solver' not found"):
            gen.generate([PROMPT], SamplingParams())
        assert gen.retries == 0


def test_retry_policy_schedule():
    policy = RetryPolicy(max_retries=5, initial_backoff=0.5, multiplier=2.0, max_backoff=3.0, jitter=0.0)
    assert [policy.delay(k) for k in range(4)] == [0.5, 1.0, 2.0, 3.0]
    jittery = RetryPolicy(initial_backoff=1.0, jitter=0.1)
    rng = random.Random(0)
    assert all(0.9 <= jittery.delay(0, rng=rng) <= 1.1 for _ in range(50))

    class Limited(Exception):
        response = type("R", (), {"headers": {"retry-after": "2"}})()

    assert policy.delay(0, Limited()) == 2.0
    assert RetryPolicy(max_backoff=1.0).delay(0, Limited()) == 1.0
    import openai

    try:  # the HTTP library the openai client is built on
        import httpx2 as httpx
    except ImportError:
        import httpx

    request = httpx.Request("POST", "http://x/v1/completions")

    def status(code: int) -> openai.APIStatusError:
        return openai.APIStatusError("x", response=httpx.Response(code, request=request), body=None)

    assert all(RetryPolicy.retryable(status(c)) for c in (408, 409, 429, 500, 502, 503))
    assert not any(RetryPolicy.retryable(status(c)) for c in (400, 401, 404, 422))
    assert RetryPolicy.retryable(openai.APITimeoutError(request=request))
    assert RetryPolicy.retryable(openai.APIConnectionError(request=request))
    with pytest.raises(ConfigError, match="max_retries"):
        RetryPolicy(max_retries=-1)


# --- specs and bad input --------------------------------------------------------------------------


def test_spec_loads_and_checks_the_model(server):
    port = server.port
    gen = load_generator(f"openai://127.0.0.1:{port}/tiny-solver?api=chat&max_concurrency=3&backoff=0.01")
    try:
        assert isinstance(gen, OpenAIGenerator)
        assert (gen.api, gen.max_concurrency, gen.retry.initial_backoff) == ("chat", 3, 0.01)
        assert gen.base_url == f"http://127.0.0.1:{port}/v1"
    finally:
        gen.close()
    with load_generator(f"openai://127.0.0.1:{port}") as only:  # the one model it serves
        assert only.model == "tiny-solver"
    with load_generator(f"openai+http://127.0.0.1:{port}/tiny-solver", timeout=5.0) as gen:
        assert gen.timeout == 5.0
    with pytest.raises(ConfigError, match=r"'nope' is not served by .*it serves \['tiny-solver'\]"):
        load_generator(f"openai://127.0.0.1:{port}/nope")
    server.state.models = ["a", "b"]
    with pytest.raises(ConfigError, match=r"serves \['a', 'b'\]: name one"):
        load_generator(f"openai://127.0.0.1:{port}")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("openai://127.0.0.1:PORT/m", "cannot reach an OpenAI-compatible server at http://127.0.0.1:PORT/v1"),
        ("openai://127.0.0.1:99999/m", "malformed host or port"),
        ("openai:///m", "names no host"),
        ("openai://127.0.0.1:1/m?colour=red", "unknown option 'colour' for the openai backend"),
        ("openai://127.0.0.1:1/m?timeout=soon", "bad value for option 'timeout'"),
        ("openai://127.0.0.1:1/m?api=grpc", "api must be 'completions' or 'chat'"),
        ("vllm://127.0.0.1:8000/m", "unknown backend spec 'vllm://127.0.0.1:8000/m'"),
        ("", "non-empty"),
        ("hf:", "names no directory"),
        ("gguf:", "names no file"),
    ],
)
def test_bad_specs_are_clear_config_errors(spec, message):
    port = str(free_port())
    with pytest.raises(
        ConfigError, match=message.replace("PORT", port).replace("(", r"\(").replace(")", r"\)")
    ):
        load_generator(spec.replace("PORT", port))


def test_closed_generator_refuses_work(server):
    gen = make(server)
    gen.close()
    with pytest.raises(ConfigError, match="closed"):
        gen.generate([PROMPT])


# --- strategies on the server ---------------------------------------------------------------------


@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize(
    "strategy, params",
    [
        ("greedy", {}),
        ("majority", {}),
        ("best_of_n", {}),
        ("weighted_best_of_n", {}),
        ("beam_search", {"beam_width": 2}),
        ("lookahead", {"beam_width": 2, "lookahead": 1}),
        ("dvts", {}),
        ("adaptive_majority", {}),
    ],
)
def test_every_strategy_runs_on_the_http_backend(api, strategy, params):
    with FakeOpenAIServer(ignore_n=(api == "chat")) as srv, make(srv, api=api) as gen:
        verifier = CheckingVerifier()
        budget = Budget(samples=6)
        result = make_strategy(strategy, **params).run(PROMPT, gen, verifier, budget, seed=3)
        assert result.answer == PROBLEM.answer
        assert not budget.exceeded_by(result.compute)
        assert result.compute.policy_completion_tokens > 0 and result.compute.samples <= 6
        if strategy in ("beam_search", "lookahead", "dvts"):
            # Step-wise: every request stopped at the delimiter; later rounds continued a path.
            step_posts = [r for r in posts(srv) if r.get("stop")]
            assert step_posts
            if api == "chat":
                assert any(r["messages"][-1]["role"] == "assistant" for r in step_posts)
            else:
                assert any(r["prompt"] != PROMPT for r in step_posts)


def test_token_budget_is_kept_on_the_http_backend(server):
    with make(server) as gen:
        budget = Budget(tokens=400)
        result = make_strategy("majority", max_new_tokens=32).run(PROMPT, gen, None, budget, seed=0)
        assert result.compute.policy_tokens <= 400 and result.compute.samples >= 2


def test_solve_and_cli_take_a_backend_spec(server):
    spec = f"openai://127.0.0.1:{server.port}/tiny-solver"
    result = ponder.solve("48+27-13", strategy="majority", samples=4, backend=spec)
    assert result.answer == 62 and result.compute.samples == 4
    out = CliRunner().invoke(app, ["solve", "48+27-13", "--samples", "3", "--backend", spec])
    assert out.exit_code == 0, out.output
    assert "answer: 62" in out.output
    dead = f"openai://127.0.0.1:{free_port()}/tiny-solver"
    out = CliRunner().invoke(app, ["solve", "48+27-13", "--backend", dead])
    assert out.exit_code == 2 and "cannot reach" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("http", ["aiohttp", "httpx"])
def test_both_http_stacks_answer_and_name_a_dropped_connection(server, http):
    with make(server, http=http, retry=RetryPolicy(max_retries=0)) as gen:
        assert gen.http == http
        c = gen.generate([PROMPT], SamplingParams(temperature=0, max_new_tokens=64))[0][0]
        assert extract_answer(c.text) == PROBLEM.answer
        server.fail("drop")
        with pytest.raises(BackendError, match="connection failed") as info:
            gen.generate([PROMPT], SamplingParams())
        assert "timed out" not in str(info.value)


def test_an_unknown_http_stack_is_named(server):
    with pytest.raises(ConfigError, match="http must be one of"):
        make(server, http="curl")
