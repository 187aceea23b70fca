"""Fuzz a real ``ponder serve`` from its own OpenAPI spec with schemathesis: no 5xx, ever.

Every operation of the spec gets generated requests, schema-valid (positive) and not (negative):
odd model names, budgets, strategies, parameters, message shapes. The server must answer each with
a success or a 4xx whose body is an OpenAI error. Budgets are capped low in the config, so no
generated request can start a long search.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from serve_helpers import INSTANT, INSTANT_VERIFIER, ServerProcess

KEY = "fuzz-key"
EXAMPLES = 40  # per operation and mode: about 400 requests in all
CONFIG = {
    "api_keys": [KEY],
    "max_concurrency": 2,
    "max_queue": 8,
    "timeout_s": 20,
    "models": [
        {"name": "embedded", "budget": {"samples": 2}, "max_budget": {"samples": 4, "tokens": 3000}},
        {
            "name": "instant",
            "backend": INSTANT,
            "prompt_format": "arithmetic",
            "verifier": INSTANT_VERIFIER,
            "budget": {"samples": 4},
            "max_budget": {"samples": 16, "tokens": 20_000},
        },
    ],
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    proc = ServerProcess(CONFIG, tmp_path_factory.mktemp("fuzz"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.log(), proc.log()


# Generated bodies rarely name a served model or hold a question, so half of them get one of these:
# that takes the fuzzing past routing, into strategies, budgets and real (small) searches.
MODELS = [
    "embedded",
    "instant",
    "beam-4/instant",
    "majority-2/embedded",
    "best-of-n-4/instant",
    "dvts/instant",
]
QUESTIONS = ["12+5-3", "1+1", "999999999+1-5"]


def steer(case, model: str | None, question: str | None) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if model is not None and "model" in body:
        body["model"] = model
    if question is not None:
        if isinstance(body.get("prompt"), str):
            body["prompt"] = question
        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            messages[-1]["role"], messages[-1]["content"] = "user", question


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_5xx(fuzz_server, mode):
    schema = schemathesis.openapi.from_url(fuzz_server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    seen: dict[int, int] = {}
    searched = 0  # POSTs answered 200: searches really ran
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not (operation.body or operation.path_parameters):
            continue  # nothing to get wrong in a GET without parameters

        @given(
            case=operation.as_strategy(generation_mode=mode),
            model=st.one_of(st.none(), st.sampled_from(MODELS)),
            question=st.one_of(st.none(), st.sampled_from(QUESTIONS)),
        )
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            # The same examples every run: a random draw that happened to reach no search (all 400s
            # and 404s) made the positive case's "searched > 0" fail now and then.
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case, model, question):
            steer(case, model, question)
            response = case.call(
                base_url=fuzz_server.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
            )
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if response.status_code == 200 and case.method.upper() == "POST":
                nonlocal searched
                searched += 1
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"], response.text

        run()
    assert sum(n for code, n in seen.items() if 400 <= code < 500) > 0, seen
    if mode == GenerationMode.POSITIVE:
        assert searched > 0, seen  # the fuzzing reached the searches, not only the validators
