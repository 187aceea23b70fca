"""The server's parts in-process: config validation, model-name grammar, budgets, ranking, the pool,
search time limits, and the ``ponder serve`` command's errors."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ponder.cli import app as cli_app
from ponder.errors import ConfigError
from ponder.serve.app import create_app
from ponder.serve.config import load_config, parse_config
from ponder.serve.errors import APIError
from ponder.serve.models import load_models
from ponder.serve.pool import Overloaded, SearchPool, await_from_search, run_on_loop
from ponder.serve.responses import rank_answers
from ponder.serve.routing import parse_strategy, plan_search, resolve_model
from ponder.serve.schemas import PonderOptions
from ponder.strategies.base import Candidate, Compute, StrategyResult
from serve_helpers import ASYNC_INSTANT, ASYNC_INSTANT_VERIFIER, INSTANT, INSTANT_VERIFIER, WHERE, WORDY


def instant_entry(name: str = "instant", **extra) -> dict:
    return {
        "name": name,
        "backend": INSTANT,
        "prompt_format": "arithmetic",
        "verifier": INSTANT_VERIFIER,
        **extra,
    }


@pytest.fixture(scope="module")
def models():
    config = parse_config(
        {
            "models": [
                instant_entry(
                    budget={"samples": 8}, max_budget={"samples": 32, "tokens": 5000, "flops": 1e12}
                ),
                instant_entry("team/model-v1", verifier=None),
            ]
        }
    )
    return load_models(config)


@pytest.mark.parametrize(
    ("text", "strategy", "samples"),
    [
        ("beam-16", "beam_search", 16),
        ("beam_search", "beam_search", None),
        ("best-of-n-16", "best_of_n", 16),
        ("Majority-8", "majority", 8),
        ("weighted-best-of-n", "weighted_best_of_n", None),
        ("adaptive-majority-32", "adaptive_majority", 32),
        ("sc-5", "majority", 5),
        ("bon-4", "best_of_n", 4),
        ("dvts", "dvts", None),
    ],
)
def test_strategy_prefix_grammar(text, strategy, samples):
    choice = parse_strategy(text)
    assert choice is not None and (choice.strategy, choice.samples) == (strategy, samples)


@pytest.mark.parametrize("text", ["nope", "beam-", "16", "beam-16-4", "", "beam 16", "majority--8"])
def test_strategy_prefix_refuses_what_is_not_a_strategy(text):
    assert parse_strategy(text) is None


def test_model_names_with_and_without_prefix(models):
    assert resolve_model("instant", models) == (models["instant"], None)
    model, prefix = resolve_model("beam-4/instant", models)
    assert model is models["instant"] and prefix.strategy == "beam_search" and prefix.samples == 4
    assert resolve_model("team/model-v1", models)[1] is None  # a served name may hold a slash
    assert resolve_model("greedy/team/model-v1", models)[0] is models["team/model-v1"]
    for bad, words in [("nope", "does not exist"), ("foo/instant", "unknown strategy prefix 'foo'")]:
        with pytest.raises(APIError) as info:
            resolve_model(bad, models)
        assert info.value.status == 404 and words in info.value.message


def plan(models, name="instant", options=None, **kwargs):
    model, prefix = resolve_model(name, models)
    defaults = {"temperature": None, "max_tokens": None, "seed": 0}
    return plan_search(model, prefix, PonderOptions.model_validate(options or {}), **(defaults | kwargs))


def test_budget_precedence_and_filling_from_the_maximum(models):
    # The model's default; tokens and FLOPs are filled in from max_budget, samples never are.
    p = plan(models)
    assert (p.budget.samples, p.budget.tokens, p.budget.flops) == (8, 5000, 1e12)
    p = plan(models, "majority-4/instant")
    assert (p.strategy_name, p.budget.samples) == ("majority", 4)
    p = plan(models, "majority-4/instant", {"budget": {"tokens": 3000}})
    assert (p.budget.samples, p.budget.tokens) == (4, 3000)  # the prefix's N fills in samples
    p = plan(models, "instant", {"budget": {"tokens": 3000}})
    assert (p.budget.samples, p.budget.tokens) == (None, 3000)
    p = plan(models, "instant", {"strategy": "beam-8"})
    assert (p.strategy_name, p.budget.samples, p.verifier_name) == ("beam_search", 8, INSTANT_VERIFIER)
    assert plan(models, "majority/instant").verifier is None  # a strategy that scores nothing gets none


@pytest.mark.parametrize(
    ("name", "options", "param"),
    [
        ("majority-33/instant", {}, "model"),
        ("instant", {"strategy": "majority-64"}, "ponder.strategy"),
        ("instant", {"budget": {"samples": 33}}, "ponder.budget.samples"),
        ("instant", {"budget": {"flops": 2e12}}, "ponder.budget.flops"),
        ("beam/instant", {"strategy": "majority"}, "ponder.strategy"),
        ("instant", {"verifier": "nope"}, "ponder.verifier"),
        ("beam/instant", {"verifier": "none"}, "ponder.verifier"),
        ("beam/team/model-v1", {}, "model"),
        ("instant", {"params": {"temperature": "hot"}}, "ponder.params"),
    ],
)
def test_bad_plans_name_the_field(models, name, options, param):
    with pytest.raises(APIError) as info:
        plan(models, name, options)
    assert info.value.status == 400 and info.value.param == param, info.value.message


def test_ponder_options_refuse_unknown_keys_and_non_finite_params():
    for bad in ({"budjet": {}}, {"params": {"temperature": float("inf")}}, {"budget": {"samples": True}}):
        with pytest.raises(ValueError):
            PonderOptions.model_validate(bad)


def test_top_n_answers_are_distinct_with_the_strategy_answer_first():
    cands = [
        Candidate("a", 5, score=0.2),
        Candidate("b", 7, score=0.9),
        Candidate("c", 5, score=0.6),
        Candidate("d", None, score=0.99),
        Candidate("e", 8, score=0.95, partial=True),
    ]
    result = StrategyResult(answer=5, candidates=cands, compute=Compute())
    assert [c.text for c in rank_answers(result, 3)] == ["c", "b", "d"]
    assert [c.text for c in rank_answers(result, 1)] == ["c"]
    voted = StrategyResult(
        answer=None, candidates=[Candidate("x", 1), Candidate("y", 2), Candidate("z", 2)], compute=Compute()
    )
    assert [c.text for c in rank_answers(voted, 5)] == ["y", "x"]  # unscored: by votes


@pytest.mark.parametrize(("fmt", "answer", "content"), [("number", "5", "(1)"), ("text", None, "(0)")])
def test_chat_models_vote_on_the_configured_answer_format(fmt, answer, content):
    entry = {"name": "wordy", "backend": WORDY, "verifier": None, "answer_format": fmt}
    with TestClient(create_app(parse_config({"models": [entry]}))) as client:
        r = client.post(
            "/v1/chat/completions",
            json={"model": "majority-6/wordy", "messages": [{"role": "user", "content": "hi"}]},
        )
    body = r.json()
    assert r.status_code == 200, body
    if answer is not None:
        assert body["ponder"]["answer"] == answer
    assert content in body["choices"][0]["message"]["content"]


def test_an_openai_compatible_upstream_behind_the_server():
    """The vLLM set-up of configs/serve-vllm.yaml, with a fake OpenAI-compatible server as vLLM."""
    from openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as upstream:
        port = upstream.port
        entry = {
            "name": "remote",
            "backend": f"openai://127.0.0.1:{port}/tiny-solver",
            "options": {"max_retries": 0},
            "prompt_format": "arithmetic",
            "verifier": INSTANT_VERIFIER,
        }
        with TestClient(create_app(parse_config({"models": [entry]}))) as client:
            ask = {"messages": [{"role": "user", "content": "48+27-13"}], "seed": 1}
            for model in ("majority-4/remote", "beam-4/remote"):
                r = client.post("/v1/chat/completions", json={"model": model, **ask})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["ponder"]["spent"]["samples"] == 4 and body["usage"]["completion_tokens"] > 0
                assert body["choices"][0]["message"]["content"].splitlines()[-1].startswith("A:")
            upstream.fail("500")
            r = client.post("/v1/chat/completions", json={"model": "greedy/remote", **ask})
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
            assert f"127.0.0.1:{port}" in r.json()["error"]["message"]


def test_searches_run_on_the_event_loop_only_when_every_model_call_is_async():
    config = parse_config(
        {
            "models": [
                instant_entry("sync"),
                instant_entry("async", backend=ASYNC_INSTANT, verifier=ASYNC_INSTANT_VERIFIER),
                instant_entry("async-gen", backend=ASYNC_INSTANT),  # its verifier is synchronous
            ]
        }
    )
    models = load_models(config)

    def on_loop(name: str, strategy: str) -> bool:
        model, _ = resolve_model(name, models)
        return plan_search(
            model, None, PonderOptions(strategy=strategy), temperature=None, max_tokens=None, seed=0
        ).on_loop

    assert not on_loop("sync", "majority") and not on_loop("sync", "beam_search")
    assert on_loop("async", "majority") and on_loop("async", "beam_search")
    assert on_loop("async-gen", "majority")  # no verifier runs
    assert not on_loop("async-gen", "beam_search")  # the verifier would block the loop
    # Strategies that may block besides their model calls stay in worker threads.
    assert not on_loop("async", "cascade") and not on_loop("async", "compute_optimal")


def test_an_async_model_is_called_on_the_event_loop_and_a_sync_one_in_a_worker():
    config = parse_config(
        {
            "models": [
                instant_entry("where", backend=WHERE, verifier=None, strategy="majority"),
                instant_entry("where-scored", backend=WHERE),  # a synchronous verifier
            ]
        }
    )
    models = load_models(config)
    with TestClient(create_app(config, models)) as client:
        for name in ("where", "beam-4/where-scored"):
            r = client.post(
                "/v1/chat/completions",
                json={"model": name, "messages": [{"role": "user", "content": "1+2"}], "seed": 0},
            )
            assert r.status_code == 200, r.text
    on_loop, in_worker = models["where"].generator.calls, models["where-scored"].generator.calls
    assert on_loop and {method for method, _ in on_loop} == {"agenerate"}
    assert not any(thread.startswith("ponder-search") for _, thread in on_loop)
    assert in_worker and {method for method, _ in in_worker} == {"generate"}
    assert all(thread.startswith("ponder-search") for _, thread in in_worker)


def test_run_on_loop_awaits_for_the_search_and_raises_into_it():
    import threading

    async def fail() -> None:
        raise ValueError("upstream says no")

    def search() -> tuple[int, threading.Thread]:
        got = await_from_search(asyncio.sleep(0, result=41))
        with pytest.raises(ValueError, match="says no"):
            await_from_search(fail())
        return got + 1, threading.current_thread()

    seen: list[BaseException] = []

    def waits_forever() -> None:
        try:
            await_from_search(asyncio.sleep(60))
        except BaseException as exc:
            seen.append(exc)
            raise

    async def main() -> None:
        assert await run_on_loop(search) == (42, threading.current_thread())
        task = asyncio.ensure_future(run_on_loop(waits_forever))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(seen) == 1 and isinstance(seen[0], asyncio.CancelledError)

    asyncio.run(main())
    with pytest.raises(RuntimeError, match="only for a search running on the event loop"):
        await_from_search(asyncio.sleep(0))


def test_pool_refuses_beyond_its_queue_with_a_retry_time():
    async def fill():
        pool = SearchPool(max_concurrency=1, max_queue=1)
        tickets = [pool.reserve(), pool.reserve()]
        with pytest.raises(Overloaded) as info:
            pool.reserve()
        assert info.value.retry_after >= 1 and pool.rejected == 1
        tickets[1].drop()
        pool.reserve()  # the dropped place is free again
        pool.shutdown()

    asyncio.run(fill())


def test_a_search_past_the_time_limit_is_504():
    config = parse_config(
        {
            "timeout_s": 0.3,
            "models": [
                instant_entry(
                    "slow",
                    options={"delay_s": 0.2},
                    verifier=None,
                    strategy="adaptive_majority",
                    params={"batch_size": 1, "confidence": 1.0},
                )
            ],
        }
    )
    with TestClient(create_app(config)) as client:
        r = client.post(
            "/v1/chat/completions", json={"model": "slow", "messages": [{"role": "user", "content": "1+2"}]}
        )
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert "0.3 s" in r.json()["error"]["message"]


def test_request_bodies_are_logged_only_when_asked(caplog):
    for on in (False, True):
        config = parse_config({"log_requests": on, "models": [instant_entry()]})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ponder.serve"), TestClient(create_app(config)) as client:
            messages = [{"role": "user", "content": "31+4"}]
            assert client.post(
                "/v1/chat/completions", json={"model": "instant", "messages": messages}
            ).is_success
        assert ("31+4" in caplog.text) == on and ("A:35" in caplog.text) == on


def test_a_chunked_body_over_the_limit_is_413():
    config = parse_config({"max_body_bytes": 2048, "models": [instant_entry()]})
    with TestClient(create_app(config)) as client:
        r = client.post("/v1/completions", content=(b"x" * 1024 for _ in range(4)))
        assert r.status_code == 413 and "2048 bytes" in r.json()["error"]["message"]


# --- config files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("models: [{name: a, max_budget: {samples: 4}}]", "models[0]: max_budget.tokens must be set"),
        ("models: [{name: a, budget: {samples: 99}}]", "budget.samples (99) is above max_budget.samples"),
        ("models: [{name: a}, {name: a}]", "repeated: ['a']"),
        ("models: [{name: a, budjet: {}}]", "models[0].budjet: Extra inputs"),
        ("models: []", "models: List should have at least 1 item"),
        ("port: 99999", "port: Input should be less than or equal to 65535"),
        ("max_concurrency: 0", "max_concurrency"),
        ("models: [{name: 'a b'}]", "is not a model name"),
        ("models: [{name: a, verifier: magic}]", "unknown verifier spec 'magic'"),
        ("models: [{name: a, backend: 'python:no_such_module:f'}]", "cannot import 'no_such_module'"),
        ("models: [{name: a, backend: 'nope://x'}]", "models[0] ('a')"),
        ("- a\n- b", "top level must be a mapping"),
        ("models: [", "not valid YAML"),
    ],
)
def test_config_errors_name_the_field(tmp_path, text, words):
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_models(load_config(path))
    assert words in str(info.value)


def test_json_config_and_defaults(tmp_path):
    path = tmp_path / "serve.json"
    path.write_text('{"port": 9000, "models": [{"name": "embedded", "strategy": "beam_search"}]}')
    config = load_config(path)
    assert config.port == 9000 and config.models[0].strategy == "beam_search"
    assert config.models[0].format == "arithmetic" and config.log_requests is False
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_the_documented_vllm_config_is_valid():
    from pathlib import Path

    from ponder.verifiers.spec import check_spec

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "serve-vllm.yaml")
    assert [m.name for m in config.models] == ["qwen-math", "qwen-math-sc"]
    for model in config.models:
        assert model.backend.startswith("openai://") and model.format == "chat" and model.answers == "math"
        for spec in [model.verifier, *model.verifiers.values()]:
            if spec is not None:
                check_spec(spec)


def test_serve_command_refuses_bad_settings_in_one_line(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, max_budget: {samples: 4}}]")
    for args, words in [
        (["serve", "--config", str(tmp_path / "missing.yaml")], "does not exist"),
        (["serve", "--config", str(bad)], "max_budget.tokens must be set"),
        (["serve", "--max-concurrency", "0"], "max_concurrency"),
        (["serve", "--torch-threads", "0"], "--torch-threads"),
    ]:
        result = runner.invoke(cli_app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
