"""Budget forcing (s1): capping and extending a thinking block over the Generator protocol, checked
with a scripted stub that thinks a known number of characters; stop strings in the embedded generator."""

from __future__ import annotations

import pytest

from ponder.backends.base import SamplingParams
from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from scripted_stubs import CLOSE, OPEN, WAIT, ThinkStub

Q = "Q:11+11\n"


def run(stub: ThinkStub, budget: Budget | None = None, **params: object):
    strategy = make_strategy("budget_forcing", think_start=OPEN, **params)
    return strategy.run(Q, stub, None, budget or Budget(samples=1), 0)


def test_a_model_that_ends_thinking_on_its_own_is_left_alone():
    stub = ThinkStub(think_chars=20)
    result = run(stub)
    (think_prompts, think), (answer_prompts, answer) = stub.calls
    assert think_prompts == [Q + OPEN] and think.stop == (CLOSE,) and think.temperature == 0.0
    assert answer_prompts == [Q + OPEN + "x" * 20 + CLOSE] and answer.stop == ()
    assert result.answer == 10
    assert result.candidates[0].text == OPEN + "x" * 20 + CLOSE + "A:01"
    assert result.trace[-2] == "thinking: 28 tokens in 1 call(s), 0 extension(s); ended by the model"
    assert result.compute.samples == 1 and result.compute.completions == 2


def test_thinking_is_capped_and_the_end_forced():
    stub = ThinkStub(think_chars=100)
    result = run(stub, max_thinking_tokens=12, answer_prefix="Final Answer:")
    (_, think), (answer_prompts, answer) = stub.calls
    assert think.max_new_tokens == 12
    # The end of thinking (and the answer prefix) is ponder's, after exactly 12 thinking tokens.
    assert answer_prompts == [Q + OPEN + "x" * 12 + CLOSE + "Final Answer:"]
    assert answer.max_new_tokens == 160
    assert "end forced: the thinking cap of 12 tokens was reached" in result.trace[-2]
    assert result.answer == 10


def test_an_early_end_of_thinking_is_suppressed_and_wait_appended():
    stub = ThinkStub(think_chars=20)
    result = run(stub, min_thinking_tokens=50, max_extensions=5)
    prompts = [ps[0] for ps, _ in stub.calls]
    # 28 tokens (20 + the delimiter) < 50: the delimiter is dropped, "Wait" appended, thinking goes on;
    # 56 >= 50: the second end stands.
    assert prompts == [
        Q + OPEN,
        Q + OPEN + "x" * 20 + WAIT,
        Q + OPEN + "x" * 20 + WAIT + "x" * 20 + CLOSE,
    ]
    assert result.answer == 11  # the stub's answer counts the extensions it saw
    assert "appended 'Wait' (extension 1 of 5)" in result.trace[0]
    assert result.trace[-2] == "thinking: 56 tokens in 2 call(s), 1 extension(s); ended by the model"


def test_extensions_stop_at_max_extensions():
    stub = ThinkStub(think_chars=10)
    result = run(
        stub, min_thinking_tokens=1000, max_thinking_tokens=2000, max_extensions=2, extension="\nWait,"
    )
    assert len(stub.calls) == 4  # 3 thinking calls (2 extensions), then the answer
    assert stub.calls[-1][0][0].count("\nWait,") == 2
    assert result.answer == 12


def test_the_cap_also_bounds_extended_thinking():
    stub = ThinkStub(think_chars=20)
    result = run(stub, min_thinking_tokens=60, max_thinking_tokens=60, max_extensions=9)
    thinking = [p for _, p in stub.calls[:-1]]
    assert [p.max_new_tokens for p in thinking] == [60, 32, 4]  # what is left of the cap each time
    assert "end forced: the thinking cap of 60 tokens" in result.trace[-2]


@pytest.mark.parametrize(("honour", "strip"), [(False, False), (True, True)])
def test_backends_that_ignore_or_strip_the_stop_string(honour, strip):
    stub = ThinkStub(think_chars=15, honour_stop=honour, strip_stop=strip)
    result = run(stub)
    # Text after the delimiter (from a backend that ignores stop strings) is dropped, not kept.
    assert stub.calls[-1][0] == [Q + OPEN + "x" * 15 + CLOSE]
    assert result.answer == 10
    assert result.compute.policy_completion_tokens == stub.completion_tokens


def test_without_think_start_the_model_opens_the_block_itself():
    stub = ThinkStub(think_chars=5)
    result = make_strategy("budget_forcing").run(Q, stub, None, Budget(samples=1), 0)
    assert [ps[0] for ps, _ in stub.calls] == [Q, Q + "xxxxx" + CLOSE]
    assert result.answer == 10
    # A prompt that already opens the block is not opened twice.
    stub = ThinkStub(think_chars=5)
    make_strategy("budget_forcing", think_start=OPEN).run(Q + OPEN, stub, None, Budget(samples=1), 0)
    assert stub.calls[0][0] == [Q + OPEN]


def test_a_token_budget_shortens_thinking_but_leaves_room_for_the_answer():
    stub = ThinkStub(think_chars=400)
    budget = Budget(tokens=400)
    result = run(stub, budget, max_thinking_tokens=1000, max_answer_tokens=20)
    (_, think), (_, answer) = stub.calls
    assert think.max_new_tokens < 400
    assert answer.max_new_tokens == 20
    assert result.answer == 10
    spent = result.compute.policy_tokens
    assert spent <= 400
    assert "end forced: the budget" in result.trace[-2]


def test_budget_forcing_refuses_a_budget_without_room_for_an_answer():
    stub = ThinkStub()
    answer_only = len(Q + OPEN + CLOSE) + 1 + 20
    with pytest.raises(ConfigError, match=rf"needs a budget of at least 1 sample, {answer_only} tokens"):
        run(stub, Budget(tokens=answer_only - 1), max_answer_tokens=20)
    assert stub.calls == []
    result = run(stub, Budget(tokens=answer_only), max_answer_tokens=20)
    assert len(stub.calls) == 1 and result.answer == 10  # no room to think: straight to the answer
    assert "end forced" in result.trace[-2]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_thinking_tokens": 10, "max_thinking_tokens": 5}, "must not be above max_thinking_tokens"),
        ({"think_end": ""}, "think_end must not be empty"),
        ({"max_extensions": -1}, "max_extensions must be >= 0"),
        ({"max_answer_tokens": 0}, "max_answer_tokens must be >= 1"),
        ({"extension": 3}, "'extension' must be str"),
        ({"wait": "Wait"}, "unknown parameter 'wait'"),
    ],
)
def test_bad_budget_forcing_parameters_are_refused(params, message):
    with pytest.raises(ConfigError, match=rf"bad parameter for strategy 'budget_forcing': .*{message}"):
        make_strategy("budget_forcing", **params)


def test_an_empty_prompt_is_refused():
    with pytest.raises(ConfigError, match="got an empty prompt"):
        make_strategy("budget_forcing").run("  ", ThinkStub(), None, Budget(samples=1), 0)


# --- stop strings in the embedded generator ---------------------------------------------------------


@pytest.mark.parametrize("stop", [("5",), ("ab", "7"), ("\n\n",)])
def test_embedded_generation_stops_at_a_stop_string(flat_generator, stop):
    groups = flat_generator.generate(["Q:12+5\n"], SamplingParams(n=24, max_new_tokens=60, seed=3, stop=stop))
    finishes = set()
    for c in groups[0]:
        finishes.add(c.finish_reason)
        if c.finish_reason == "stop":
            # It stopped at the first occurrence of a stop string, and kept it.
            ends = [s for s in stop if c.text.endswith(s)]
            assert ends
            assert not any(s in c.text[: -len(ends[0])] for s in stop)
        else:
            assert not any(s in c.text for s in stop)
        assert len(c.token_ids) == len(c.text)  # every emitted token is in the text
    if stop == ("5",):
        assert "stop" in finishes


def test_bad_stop_strings_are_refused(generator):
    with pytest.raises(ConfigError, match="stop must be a sequence of non-empty strings"):
        generator.generate(["Q:1+2\n"], SamplingParams(stop=("",)))
    with pytest.raises(ConfigError, match="stop must be a sequence of non-empty strings"):
        generator.generate(["Q:1+2\n"], SamplingParams(stop="</think>"))  # type: ignore[arg-type]
