"""Sequential revision and the parallel/sequential mix: the prompts each attempt sees, context
trimming, chains x revisions, scoring against the original prompt, selection within and across
chains, and budgets; with a stub policy that answers by the number of attempts it was shown."""

from __future__ import annotations

import pytest

from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from ponder.strategies.revision import Revision
from ponder.tasks import encode_number
from ponder.tasks.arithmetic import revision_prompt
from scripted_stubs import RecordingVerifier, RevisionStub
from stubs import PROMPT


def attempt(k: int, s: int) -> str:
    """What the stub writes as attempt k + 1 (k earlier attempts shown) of sample s."""
    return f"t{k}s{s}\nA:" + encode_number(10 + k, 2)


def answer_line(k: int) -> str:
    return "A:" + encode_number(10 + k, 2)


def test_each_attempt_sees_its_chains_earlier_attempts():
    stub, verifier = RevisionStub(), RecordingVerifier()
    result = make_strategy("revision", chains=2, revisions=3, context_attempts=3).run(
        PROMPT, stub, verifier, Budget(samples=6), 0
    )
    (p1, c1), (p2, c2), (p3, c3) = stub.calls
    assert p1 == [PROMPT] and c1.n == 2  # attempt 1: one prompt, a sample per chain
    assert p2 == [revision_prompt(PROMPT, [attempt(0, 0)]), revision_prompt(PROMPT, [attempt(0, 1)])]
    assert p3 == [
        revision_prompt(PROMPT, [attempt(0, 0), attempt(1, 0)]),
        revision_prompt(PROMPT, [attempt(0, 1), attempt(1, 0)]),
    ]
    assert c2.n == c3.n == 1 and c2.seed != c3.seed
    # The built-in format: each earlier attempt then an R: line, then the question again.
    assert p2[0] == PROMPT + "t0s0\nA:01\nR:\n" + PROMPT
    assert result.compute.samples == 6 and len(result.candidates) == 6


def test_every_attempt_is_scored_against_the_original_prompt():
    stub, verifier = RevisionStub(), RecordingVerifier()
    make_strategy("revision", chains=2, revisions=3).run(PROMPT, stub, verifier, Budget(samples=6), 0)
    assert len(verifier.seen) == 6
    assert {p for p, _ in verifier.seen} == {PROMPT}
    assert [s for _, s in verifier.seen][2:4] == [attempt(1, 0), attempt(1, 0)]


def test_only_the_last_attempts_are_shown():
    stub = RevisionStub()
    make_strategy("revision", chains=1, revisions=5, context_attempts=2).run(
        PROMPT, stub, RecordingVerifier(), Budget(samples=5), 0
    )
    last = stub.calls[-1][0][0]
    # Attempts 3 and 4 of 4 (the stub, shown two attempts, writes the same third attempt again).
    assert last == revision_prompt(PROMPT, [attempt(2, 0), attempt(2, 0)])
    # By default a revision prompt shows the chain's last attempt only.
    stub = RevisionStub()
    make_strategy("revision", chains=1, revisions=3).run(
        PROMPT, stub, RecordingVerifier(), Budget(samples=3), 0
    )
    assert [ps[0].count("R:") for ps, _ in stub.calls] == [0, 1, 1]


def test_attempts_are_dropped_oldest_first_to_fit_the_context():
    # Room for the prompt, one shown attempt and max_new_tokens, not two.
    one = len(revision_prompt(PROMPT, [attempt(0, 0)])) + 1
    stub = RevisionStub(context_length=one + 40 + 3)
    make_strategy("revision", chains=1, revisions=4, max_new_tokens=40, context_attempts=3).run(
        PROMPT, stub, RecordingVerifier(), Budget(samples=4), 0
    )
    shown = [ps[0].count("R:") for ps, _ in stub.calls]
    assert shown == [0, 1, 1, 1]
    assert stub.calls[-1][0][0] == revision_prompt(PROMPT, [attempt(1, 0)])
    # No context attribute: nothing is trimmed but context_attempts.
    stub = RevisionStub()
    make_strategy("revision", chains=1, revisions=4, max_new_tokens=40, context_attempts=3).run(
        PROMPT, stub, RecordingVerifier(), Budget(samples=4), 0
    )
    assert [ps[0].count("R:") for ps, _ in stub.calls] == [0, 1, 2, 3]


def test_the_prompt_builder_is_a_parameter():
    seen = []

    def chat_template(prompt: str, attempts: list[str]) -> str:
        seen.append(list(attempts))
        return prompt + "".join(f"[previous answer: {a}]" for a in attempts)

    stub = RevisionStub()
    make_strategy("revision", chains=1, revisions=3, prompt_builder=chat_template, context_attempts=3).run(
        PROMPT, stub, RecordingVerifier(), Budget(samples=3), 0
    )
    assert seen == [[attempt(0, 0)], [attempt(0, 0), attempt(0, 0)]]
    assert stub.calls[1][0] == [PROMPT + f"[previous answer: {attempt(0, 0)}]"]
    with pytest.raises(ConfigError, match="prompt_builder returned int, not a string"):
        make_strategy("revision", chains=1, revisions=2, prompt_builder=lambda p, a: 3).run(
            PROMPT, RevisionStub(), RecordingVerifier(), Budget(samples=2), 0
        )


@pytest.mark.parametrize(
    ("params", "samples", "plan"),
    [
        ({"chains": 3, "revisions": 4}, 16, (3, 4)),
        ({}, 16, (4, 4)),  # ratio 1: balanced
        ({"ratio": 4.0}, 16, (2, 8)),  # sequential-heavy
        ({"ratio": 0.25}, 16, (8, 2)),  # parallel-heavy
        ({"ratio": 100.0}, 16, (1, 16)),
        ({"chains": 2}, 16, (2, 8)),
        ({"revisions": 5}, 16, (3, 5)),
        ({}, None, (4, 4)),  # no samples limit: N = 16
    ],
)
def test_chains_and_revisions_from_the_budget(params, samples, plan):
    strategy = make_strategy("revision", **params)
    assert isinstance(strategy, Revision)
    budget = Budget(samples=samples) if samples is not None else Budget(tokens=10**6)
    assert strategy.plan(budget) == plan


@pytest.mark.parametrize(("chains", "revisions"), [(1, 4), (4, 1), (3, 3)])
def test_n_is_chains_times_revisions(chains, revisions):
    stub = RevisionStub()
    result = make_strategy("revision", chains=chains, revisions=revisions).run(
        PROMPT, stub, RecordingVerifier(), Budget(samples=chains * revisions), 0
    )
    assert len(stub.calls) == revisions
    assert [len(ps) * p.n for ps, p in stub.calls] == [chains] * revisions
    assert result.compute.samples == chains * revisions == len(result.candidates)
    assert result.trace[-1 - chains].startswith(f"stopped: {revisions} attempt(s) per chain done")


def test_the_best_attempt_of_each_chain_then_across_chains():
    # Attempt k answers 10 + k in every chain. The verifier likes attempt 2 (answer 11) best.
    table = {answer_line(0): 0.3, answer_line(1): 0.8, answer_line(2): 0.6}
    results = {
        sel: make_strategy("revision", chains=3, revisions=3, selection=sel).run(
            PROMPT, RevisionStub(), RecordingVerifier(table), Budget(samples=9), 0
        )
        for sel in ("weighted", "majority", "best")
    }
    assert {r.answer for r in results.values()} == {11}
    chain_lines = [line for line in results["best"].trace if line.startswith("chain ")]
    assert chain_lines == [f"chain {i}: best attempt 2 of 3: answer 11 (score 0.800)" for i in range(3)]


def test_within_last_trusts_each_chains_last_attempt():
    # Same chains, but each chain answers with its last attempt (12) whatever the verifier says.
    table = {answer_line(0): 0.3, answer_line(1): 0.8, answer_line(2): 0.6}
    result = make_strategy("revision", chains=3, revisions=3, within="last", context_attempts=3).run(
        PROMPT, RevisionStub(), RecordingVerifier(table), Budget(samples=9), 0
    )
    assert result.answer == 12
    chain_lines = [line for line in result.trace if line.startswith("chain ")]
    assert chain_lines == [f"chain {i}: last attempt 3 of 3: answer 12 (score 0.600)" for i in range(3)]


def test_unknown_within_is_named():
    with pytest.raises(ConfigError, match="within must be one of"):
        make_strategy("revision", within="first")


def test_selection_across_chains_weighted_majority_best():
    # One attempt per chain: chain 0 answers 50 (score 0.9), chains 1 and 2 answer 60 (0.5 each).
    class PerChain(RevisionStub):
        answers = {0: (50, 0.9), 1: (60, 0.5), 2: (60, 0.5)}

        def generate(self, prompts, params):
            groups = super().generate(prompts, params)
            for c in groups[0]:
                s = int(c.text.split("s")[1].split("\n")[0])
                c.text = f"x\nA:{encode_number(self.answers[s][0], 2)}"
            return groups

    table = {f"A:{encode_number(a, 2)}": score for a, score in PerChain.answers.values()}
    answers = {
        sel: make_strategy("revision", chains=3, revisions=1, selection=sel)
        .run(PROMPT, PerChain(), RecordingVerifier(table), Budget(samples=3), 0)
        .answer
        for sel in ("weighted", "majority", "best")
    }
    # weighted: 60 has 0.5 + 0.5 = 1.0 > 0.9; majority: 60 twice; best: 50's single 0.9.
    assert answers == {"weighted": 60, "majority": 60, "best": 50}


def test_a_token_budget_narrows_the_chains_and_is_never_exceeded():
    stub, verifier = RevisionStub(), RecordingVerifier()
    budget = Budget(tokens=900)
    result = make_strategy("revision", chains=4, revisions=8, max_new_tokens=40).run(
        PROMPT, stub, verifier, budget, 0
    )
    c = result.compute
    assert budget.exceeded_by(c) == []
    assert c.policy_completion_tokens == stub.completion_tokens
    assert c.policy_prompt_tokens == sum(len(p) + 1 for ps, _ in stub.calls for p in ps)
    assert c.verifier_tokens == sum(len(p) + len(s) + 1 for p, s in verifier.seen)
    widths = [len(ps) * p.n for ps, p in stub.calls]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 4  # chains drop out as it runs low
    assert "stopped: budget spent" in result.trace


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"chains": 0}, "chains must be >= 1"),
        ({"revisions": 0}, "revisions must be >= 1"),
        ({"ratio": 0.0}, "ratio must be > 0"),
        ({"selection": "vote"}, "selection must be one of"),
        ({"context_attempts": 0}, "context_attempts must be >= 1"),
        ({"aggregation": "median"}, "aggregation must be one of"),
        ({"prompt_builder": "revision_prompt"}, "'prompt_builder' must be Callable"),
        ({"attempts": 3}, "unknown parameter 'attempts'"),
    ],
)
def test_bad_revision_parameters_are_refused(params, message):
    with pytest.raises(ConfigError, match=rf"bad parameter for strategy 'revision': .*{message}"):
        make_strategy("revision", **params)


def test_revision_refuses_a_tiny_budget_a_missing_verifier_and_an_empty_prompt():
    stub = RevisionStub()
    with pytest.raises(ConfigError, match="strategy 'revision' needs a budget of at least 1 sample"):
        make_strategy("revision").run(PROMPT, stub, RecordingVerifier(), Budget(tokens=50), 0)
    with pytest.raises(ConfigError, match="strategy 'revision' needs a verifier"):
        make_strategy("revision").run(PROMPT, stub, None, Budget(samples=4), 0)
    with pytest.raises(ConfigError, match="got an empty prompt"):
        make_strategy("revision").run("\n", stub, RecordingVerifier(), Budget(samples=4), 0)
    assert stub.calls == []


def test_revision_on_the_tiny_models_keeps_prompts_in_the_context(generator, verifier):
    # The tiny policy's context is 128 tokens: with 40 new tokens, few attempts fit.
    calls = []

    class Recording:
        num_params = generator.num_params
        context_length = generator.context_length
        count_prompt_tokens = staticmethod(generator.count_prompt_tokens)

        def generate(self, prompts, params):
            calls.append(list(prompts))
            return generator.generate(prompts, params)

    result = make_strategy("revision", chains=2, revisions=4, max_new_tokens=40).run(
        PROMPT, Recording(), verifier, Budget(samples=8), 0
    )
    assert len(calls) == 4 and result.compute.samples == 8
    for prompts in calls:
        assert all(generator.count_prompt_tokens(p) + 40 <= 128 or p == PROMPT for p in prompts)
    assert any("R:" in p for prompts in calls[1:] for p in prompts)
