"""``ponder serve`` as a real process on loopback, driven by the official ``openai`` client.

One server runs for the whole module: the embedded model (small budgets), instant stub models
(``ponder.serve.testing``) for exact answers, a slow one for queueing and cancellation, and failing
ones for upstream errors. Its API key comes from the environment (PONDER_API_KEY). The ``-async``
twins of the stubs have async model calls, as HTTP backends do: their searches run on the server's
event loop rather than in worker threads, and must behave the same.
"""

from __future__ import annotations

import contextlib
import json
import re
import time

import httpx
import openai
import pytest

from serve_helpers import ASYNC_INSTANT, ASYNC_INSTANT_VERIFIER, INSTANT, INSTANT_VERIFIER, ServerProcess

KEY = "test-key-3f9a1c"
QUESTION = "48+27-13"  # = 62

CONFIG = {
    "max_concurrency": 2,
    "max_queue": 2,
    "timeout_s": 60,
    "max_prompt_chars": 2000,
    "max_body_bytes": 100_000,
    "models": [
        {"name": "embedded", "budget": {"samples": 4}, "max_budget": {"samples": 16, "tokens": 20_000}},
        {
            "name": "instant",
            "backend": INSTANT,
            "options": {"spread": 3},
            "prompt_format": "arithmetic",
            "verifier": INSTANT_VERIFIER,
            "budget": {"samples": 16},
        },
        {
            # 0.2 s per call, one sample per call, and no early stop before a 33-vote lead: ~6.6 s.
            "name": "slow",
            "backend": INSTANT,
            "options": {"delay_s": 0.2},
            "prompt_format": "arithmetic",
            "verifier": None,
            "strategy": "adaptive_majority",
            "params": {"batch_size": 1, "confidence": 1.0},
            "budget": {"samples": 64},
        },
        {"name": "chat-echo", "backend": INSTANT, "verifier": None, "strategy": "greedy"},
        {"name": "down", "backend": INSTANT, "options": {"fail": "connection"}, "verifier": None},
        {"name": "hanging", "backend": INSTANT, "options": {"fail": "timeout"}, "verifier": None},
    ],
}
_SYNC_STUBS = {"instant", "slow", "down", "hanging"}
CONFIG["models"] += [
    {
        **m,
        "name": m["name"] + "-async",
        "backend": ASYNC_INSTANT,
        **({"verifier": ASYNC_INSTANT_VERIFIER} if m["verifier"] else {}),
    }
    for m in CONFIG["models"]
    if m["name"] in _SYNC_STUBS
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(CONFIG, tmp_path_factory.mktemp("serve"), env={"PONDER_API_KEY": KEY})
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    # No retries: a 429 or 5xx must show up as what it is.
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client: openai.OpenAI, model: str, content: str = QUESTION, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **kwargs
    )


def check_usage(usage, info) -> None:
    """usage counts every token: policy prompt + verifier tokens as prompt, policy output as completion."""
    spent = info["spent"]
    assert usage.prompt_tokens == spent["policy_prompt_tokens"] + spent["verifier_tokens"]
    assert usage.completion_tokens == spent["policy_completion_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens == spent["total_tokens"]


# --- chat, completions, extra_body -----------------------------------------------------------------


def test_chat_on_the_embedded_default(client):
    r = ask(client, "embedded", seed=0)
    assert r.object == "chat.completion" and r.model == "embedded"
    assert len(r.choices) == 1 and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    info = r.ponder
    assert info["strategy"] == "majority" and info["budget"] == {"samples": 4, "tokens": 20_000}
    assert info["spent"]["samples"] == 4 and info["seed"] == 0
    check_usage(r.usage, info)
    # The answer is the chosen candidate in ordinary digit order, its last line the answer line.
    if info["answer"] is not None:
        assert r.choices[0].message.content.splitlines()[-1] == f"A:{info['answer']}"


def test_model_prefix_picks_strategy_and_budget_and_usage_counts_the_verifier(client):
    r = ask(client, "beam-4/embedded", seed=1)
    info = r.ponder
    assert info["strategy"] == "beam_search" and info["verifier"] == "embedded"
    assert info["budget"]["samples"] == 4
    assert info["spent"]["verifier_tokens"] > 0
    check_usage(r.usage, info)
    assert r.usage.prompt_tokens > info["spent"]["policy_prompt_tokens"]


@pytest.mark.parametrize("model", ["instant", "instant-async"])
def test_extra_body_sets_strategy_budget_and_returns_scored_candidates(client, model):
    r = ask(
        client,
        model,
        seed=3,
        extra_body={"ponder": {"strategy": "best_of_n", "budget": {"samples": 6}, "return_candidates": True}},
    )
    info = r.ponder
    assert info["strategy"] == "best_of_n" and info["budget"]["samples"] == 6
    assert info["answer"] == 62
    assert r.choices[0].message.content == "48+27=75\n75-13=62\nA:62"
    cands = info["candidates"]
    assert len(cands) == 6 and all(isinstance(c["score"], float) for c in cands)
    assert {c["answer"] for c in cands} == {62, 63, 64}  # spread 3: sample s answers 62 + s % 3
    check_usage(r.usage, info)


@pytest.mark.parametrize("model", ["instant", "instant-async"])
def test_n_returns_the_top_distinct_answers_best_first(client, model):
    r = ask(client, f"majority-9/{model}", n=3, seed=0)
    answers = [c.message.content.splitlines()[-1] for c in r.choices]
    assert answers == ["A:62", "A:63", "A:64"]
    assert [c.index for c in r.choices] == [0, 1, 2]


def test_temperature_and_max_tokens_reach_the_strategy(client):
    r = ask(client, "majority-2/instant", temperature=0.5, max_tokens=40)
    assert r.ponder["params"] == {"temperature": 0.5, "max_new_tokens": 40}


def test_chat_model_gets_the_messages_as_a_transcript(client):
    r = client.chat.completions.create(
        model="chat-echo",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
    )
    text = r.choices[0].message.content
    assert "system: be brief" in text and "user: hello there" in text


def test_completions_with_several_prompts_and_echo(client):
    r = client.completions.create(model="majority-4/instant", prompt=[QUESTION, "1+2"], seed=0)
    assert r.object == "text_completion"
    assert [c.text.splitlines()[-1] for c in r.choices] == ["A:62", "A:3"]
    info = r.ponder
    assert [p["answer"] for p in info["prompts"]] == [62, 3]
    assert info["spent"]["samples"] == 8
    check_usage(r.usage, info)
    echoed = client.completions.create(model="greedy/instant", prompt="1+2", echo=True)
    assert echoed.choices[0].text.startswith("1+2") and echoed.choices[0].text.endswith("A:3")


def test_stop_sequences_cut_the_answer(client):
    r = ask(client, "greedy/instant", stop=["\nA:"])
    assert r.choices[0].message.content == "48+27=75\n75-13=62"


# --- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["slow", "slow-async"])
def test_chat_stream_sends_progress_then_the_answer_then_usage(client, model):
    kwargs = dict(seed=5, extra_body={"ponder": {"strategy": "adaptive-majority-4"}})
    plain = ask(client, model, **kwargs)
    chunks = list(ask(client, model, stream=True, stream_options={"include_usage": True}, **kwargs))
    events = [getattr(c, "ponder", None) or {} for c in chunks]
    assert events[0]["event"] == "started" and chunks[0].choices[0].delta.role == "assistant"
    assert any(e.get("event") == "progress" for e in events)
    progress = [e for e in events if e.get("event") == "progress"]
    assert all(e["generator_calls"] >= 1 and e["policy_tokens"] > 0 for e in progress)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content == "48+27=75\n75-13=62\nA:62"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1 and finals[0].ponder["event"] == "done"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    check_usage(chunks[-1].usage, finals[0].ponder)
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_completion_stream_with_n(client):
    chunks = list(client.completions.create(model="majority-6/instant", prompt="1+2", n=2, stream=True))
    texts: dict[int, str] = {}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert [texts[0].splitlines()[-1], texts[1].splitlines()[-1]] == ["A:3", "A:4"]


# --- errors ---------------------------------------------------------------------------------------


def error_of(exc: openai.APIStatusError) -> dict:
    return exc.response.json()["error"]


@pytest.mark.parametrize(
    ("model", "kwargs", "status", "param", "words"),
    [
        ("nope", {}, 404, "model", "'nope' does not exist"),
        ("foo-3/embedded", {}, 404, "model", "unknown strategy prefix 'foo-3'"),
        ("embedded", {"extra_body": {"ponder": {"strategy": "nope"}}}, 400, "ponder.strategy", "'nope'"),
        (
            "embedded",
            {"extra_body": {"ponder": {"budget": {"samples": 1000}}}},
            400,
            "ponder.budget.samples",
            "above this server's maximum",
        ),
        ("majority-1000/embedded", {}, 400, "model", "1000 samples is above"),
        (
            "embedded",
            {"extra_body": {"ponder": {"budget": {"tokens": 10**9}}}},
            400,
            "ponder.budget.tokens",
            "maximum",
        ),
        ("embedded", {"extra_body": {"ponder": {"budjet": {}}}}, 400, "ponder.budjet", "Extra inputs"),
        ("embedded", {"extra_body": {"ponder": {"params": {"beam": 2}}}}, 400, "ponder.params", "'beam'"),
        ("best_of_n/slow", {}, 400, "model", "needs a verifier"),
        ("embedded", {"n": 9}, 400, "n", "at most 8 choices"),
        ("embedded", {"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools", "not supp"),
        ("embedded", {"content": "hello"}, 400, "messages[0].content", "such as '48+27-13'"),
        ("embedded", {"content": "1+2" + " " * 2500}, 400, "messages", "at most 2000"),
        ("beam-2/embedded", {}, 400, "ponder.budget", "needs a budget of at least"),
    ],
)
def test_bad_requests_get_openai_errors_naming_the_field(client, model, kwargs, status, param, words):
    content = kwargs.pop("content", QUESTION)
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, model, content, **kwargs)
    assert info.value.status_code == status
    err = error_of(info.value)
    assert err["param"] == param and words in err["message"], err
    assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "robot", "content": QUESTION}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content",
        ),
        ([{"content": QUESTION}], "messages[0].role"),
        ([], "messages"),
    ],
)
def test_messages_of_the_wrong_shape(client, messages, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="embedded", messages=messages)
    assert error_of(info.value)["param"] == param


def test_text_parts_are_accepted(client):
    r = client.chat.completions.create(
        model="greedy/instant", messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    )
    assert r.choices[0].message.content.endswith("A:62")


def test_malformed_json_and_oversized_bodies(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = server.base_url + "/v1/chat/completions"
    r = httpx.post(url, content=b'{"model": "embedded", "messages": [', headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert "malformed JSON" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"[1, 2]", headers=headers)
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    big = json.dumps({"model": "embedded", "messages": [{"role": "user", "content": "1" * 200_000}]})
    r = httpx.post(url, content=big.encode(), headers=headers)
    assert r.status_code == 413 and "100000 bytes" in r.json()["error"]["message"]
    r = httpx.post(
        server.base_url + "/v1/completions", json={"model": "embedded", "prompt": [1, 2]}, headers=headers
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.get(server.base_url + "/v1/nothing", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("suffix", ["", "-async"])
def test_upstream_failures_are_502_and_504(client, suffix):
    with pytest.raises(openai.InternalServerError) as info:
        ask(client, "down" + suffix)
    assert info.value.status_code == 502 and "refused the connection" in error_of(info.value)["message"]
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, "hanging" + suffix)
    assert info.value.status_code == 504 and error_of(info.value)["code"] == "upstream_timeout"


@pytest.mark.parametrize("model", ["down", "down-async"])
def test_stream_errors_arrive_as_an_error_event(client, model):
    with pytest.raises(openai.APIError, match="refused the connection"):
        list(ask(client, model, stream=True))


# --- auth -----------------------------------------------------------------------------------------


def test_api_key_is_required(server):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            bad.models.list()
        assert "API key" in error_of(info.value)["message"]
        assert (key or "x") not in error_of(info.value)["message"]
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"model": "embedded", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = httpx.post(
        server.base_url + "/v1/completions",
        json={"model": "instant", "prompt": QUESTION},
        headers={"Authorization": "Bearer wrong-key"},
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.base_url + "/health").status_code == 200  # open for load balancers


# --- models, health, OpenAPI --------------------------------------------------------------------------


def test_models_health_and_openapi(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids == [m["name"] for m in CONFIG["models"]]
    one = client.models.retrieve("beam-16/embedded")
    assert one.id == "beam-16/embedded" and one.ponder["strategy"] == "beam_search"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    health = server.health()
    assert health["status"] == "ok" and health["max_concurrency"] == 2 and health["max_queue"] == 2
    spec = httpx.get(server.base_url + "/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models"):
        operation = next(iter(spec["paths"][path].values()))
        assert operation["security"] == [{"HTTPBearer": []}], path


# --- load limits and cancellation -------------------------------------------------------------------


def slow_stream(http: httpx.Client, server, stack: contextlib.ExitStack, model: str = "slow"):
    response = stack.enter_context(
        http.stream(
            "POST",
            server.base_url + "/v1/chat/completions",
            json={"model": model, "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    )
    assert response.status_code == 200
    return response


@pytest.mark.parametrize("model", ["slow", "slow-async"])
def test_beyond_the_queue_is_429_with_retry_after_and_leaving_frees_the_workers(client, server, model):
    before = server.wait_idle()
    with httpx.Client(timeout=30) as http, contextlib.ExitStack() as stack:
        for _ in range(4):  # 2 running + 2 queued fill the server
            slow_stream(http, server, stack, model)
        state = server.health()
        assert state["running"] + state["queued"] == 4
        with pytest.raises(openai.RateLimitError) as info:
            ask(client, "instant")
        assert int(info.value.response.headers["retry-after"]) >= 1
        assert error_of(info.value)["code"] == "server_overloaded"
    # The clients left: their searches stop at the next call (0.2 s) instead of running ~6 s.
    after = server.wait_idle(timeout=3.0)
    assert after["running"] == 0 and after["queued"] == 0
    assert after["rejected"] == before["rejected"] + 1
    assert after["cancelled"] >= before["cancelled"] + 2
    assert ask(client, "greedy/instant").choices[0].message.content.endswith("A:62")


@pytest.mark.parametrize("model", ["slow", "slow-async"])
def test_a_client_that_disconnects_cancels_its_search(server, model):
    before = server.wait_idle()
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": QUESTION}]},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=httpx.Timeout(5.0, read=0.6),
        )
    after = server.wait_idle(timeout=3.0)
    assert after["running"] == 0 and time.monotonic() - started < 4.0  # the search alone takes ~6.6 s
    assert after["cancelled"] == before["cancelled"] + 1


@pytest.mark.parametrize("model", ["slow", "slow-async"])
def test_a_stream_client_that_disconnects_cancels_its_search(server, model):
    before = server.wait_idle()
    with httpx.Client(timeout=30) as http, contextlib.ExitStack() as stack:
        response = slow_stream(http, server, stack, model)
        for line in response.iter_lines():
            if '"event":"progress"' in line:
                break  # the search is under way: leave
    after = server.wait_idle(timeout=3.0)
    assert after["running"] == 0 and after["cancelled"] == before["cancelled"] + 1


# --- last: what the server wrote to its log ------------------------------------------------------------


def test_log_holds_no_prompt_and_no_key(server):
    log = server.log()
    assert "Uvicorn running" in log or "ponder serve" in log
    assert KEY not in log
    assert QUESTION not in log and "hello there" not in log
    assert not re.search(r"Traceback", log), log
