"""Strategies: the registry, compute accounting on tiny random models, and the choice each
strategy makes (checked with stub generators and verifiers whose outputs are fixed)."""

from __future__ import annotations

import pytest

from ponder.backends.base import Completion, Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies import STRATEGIES, Budget, Compute, StrategyResult, make_strategy
from ponder.strategies.registry import NEEDS_VERIFIER
from ponder.tasks import encode_number, parse_question
from ponder.verifiers.base import Verifier, VerifierScore

PROMPT = parse_question("48+27-13").prompt


def answer_text(value: int, steps: str = "84+72=57\n") -> str:
    return f"{steps}A:{encode_number(value, 2)}"


class StubGenerator:
    """Returns the given texts as the completions of every prompt (as many as asked, cycling)."""

    def __init__(self, texts: list[str], num_params: int = 1000) -> None:
        self.texts = texts
        self._num_params = num_params
        self.calls: list[tuple[list[str], SamplingParams]] = []

    @property
    def num_params(self) -> int:
        return self._num_params

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        return [
            [
                Completion(
                    text=(t := self.texts[i % len(self.texts)]),
                    token_ids=list(range(len(t))),
                    logprobs=[-0.5] * len(t),
                    finish_reason="eos",
                    prompt_tokens=len(p) + 1,
                )
                for i in range(params.n)
            ]
            for p in prompts
        ]


class StubVerifier:
    """Scores each solution by a fixed table (one step score, and the outcome given separately)."""

    def __init__(self, scores: dict[str, float], outcomes: dict[str, float] | None = None) -> None:
        self.scores = scores
        self.outcomes = outcomes or {}
        self.calls = 0

    @property
    def num_params(self) -> int:
        return 500

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        self.calls += 1
        return [
            VerifierScore(
                step_scores=[0.99, self.scores[s]], outcome=self.outcomes.get(s), tokens=len(p) + len(s) + 1
            )
            for p, s in zip(prompts, solutions)
        ]


def test_stubs_implement_the_protocols():
    assert isinstance(StubGenerator(["A:1"]), Generator)
    assert isinstance(StubVerifier({}), Verifier)


# --- registry -----------------------------------------------------------------------------------


def test_registry_makes_every_strategy():
    assert set(STRATEGIES) >= {"greedy", "majority", "best_of_n", "weighted_best_of_n"}
    assert NEEDS_VERIFIER >= {"best_of_n", "weighted_best_of_n"}
    assert not NEEDS_VERIFIER & {"greedy", "majority"}
    for name in STRATEGIES:
        assert make_strategy(name).name == name
    assert make_strategy("weighted_best_of_n").weighted is True
    assert make_strategy("best_of_n").weighted is False
    assert make_strategy("majority", temperature=0.7).temperature == 0.7
    assert make_strategy("best_of_n", aggregation="min").aggregation == "min"


def test_unknown_strategy_is_named():
    with pytest.raises(ConfigError, match=r"unknown strategy 'beam'.*best_of_n"):
        make_strategy("beam")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("majority", {"beam_width": 4}),
        ("greedy", {"temperature": 1.0}),
        ("weighted_best_of_n", {"weighted": False}),
    ],
)
def test_bad_strategy_parameters_are_refused(name, params):
    with pytest.raises(ConfigError, match=f"bad parameter for strategy '{name}'"):
        make_strategy(name, **params)


@pytest.mark.parametrize("name", ["best_of_n", "weighted_best_of_n"])
def test_verifier_strategies_need_a_verifier(name):
    with pytest.raises(ConfigError, match="needs a verifier"):
        make_strategy(name).run(PROMPT, StubGenerator([answer_text(1)]), None, Budget(samples=4), 0)


@pytest.mark.parametrize("name", ["majority", "best_of_n", "weighted_best_of_n"])
def test_a_budget_without_samples_is_refused(name):
    with pytest.raises(ConfigError, match="at least 1 sample"):
        make_strategy(name).run(
            PROMPT, StubGenerator([answer_text(1)]), StubVerifier({}), Budget(samples=0), 0
        )
    with pytest.raises(ConfigError, match="samples must be >= 0"):
        Budget(samples=-1)


# --- on tiny random models ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["greedy", "majority", "best_of_n", "weighted_best_of_n"])
def test_compute_accounting_on_embedded_models(generator, verifier, name):
    budget = 6
    uses_verifier = name in NEEDS_VERIFIER
    result = make_strategy(name).run(
        PROMPT, generator, verifier if uses_verifier else None, Budget(samples=budget), 3
    )
    assert isinstance(result, StrategyResult)
    c = result.compute
    expected_samples = 1 if name == "greedy" else budget
    assert c.samples == len(result.candidates) == expected_samples
    # The generator's own count of what it ran: the prompt once, every emitted token.
    usage = generator.last_usage
    assert c.policy_prompt_tokens == usage.prompt_tokens == len(PROMPT) + 1
    assert c.policy_completion_tokens == usage.completion_tokens > 0
    assert c.policy_tokens == c.policy_prompt_tokens + c.policy_completion_tokens
    assert c.policy_flops == 2 * generator.num_params * c.policy_tokens
    if uses_verifier:
        # Every candidate is scored with its prompt and <bos>.
        assert c.verifier_tokens == sum(len(PROMPT) + 1 + len(cand.text) for cand in result.candidates)
        assert c.verifier_flops == 2 * verifier.num_params * c.verifier_tokens
        assert all(cand.score is not None and 0.0 <= cand.score <= 1.0 for cand in result.candidates)
    else:
        assert c.verifier_tokens == 0 and c.verifier_flops == 0
        assert all(cand.score is None for cand in result.candidates)
    assert c.total_flops == c.policy_flops + c.verifier_flops
    # The answer is one of the candidates' answers (or None when none has one).
    answers = {cand.answer for cand in result.candidates}
    assert result.answer in answers | {None}


def test_strategies_are_deterministic_for_a_seed(generator, verifier):
    for name in ("majority", "best_of_n"):
        strategy = make_strategy(name)
        a = strategy.run(PROMPT, generator, verifier, Budget(samples=5), 11)
        b = strategy.run(PROMPT, generator, verifier, Budget(samples=5), 11)
        assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
        assert a.answer == b.answer


def test_greedy_is_one_temperature_zero_sample_whatever_the_budget(generator):
    result = make_strategy("greedy").run(PROMPT, generator, None, Budget(samples=16), 0)
    expected = generator.generate([PROMPT], SamplingParams(n=1, temperature=0.0))[0][0].text
    assert [c.text for c in result.candidates] == [expected]


# --- the choices, with stubs --------------------------------------------------------------------


def test_sampling_strategies_ask_for_the_budget_at_their_temperature():
    stub = StubGenerator([answer_text(5)])
    make_strategy("majority", temperature=0.6).run(PROMPT, stub, None, Budget(samples=7), 42)
    make_strategy("greedy").run(PROMPT, stub, None, Budget(samples=7), 42)
    (prompts, params), (_, greedy_params) = stub.calls
    assert prompts == [PROMPT]
    assert (params.n, params.temperature, params.seed) == (7, 0.6, 42)
    assert (greedy_params.n, greedy_params.temperature) == (1, 0.0)


def test_majority_picks_the_most_common_answer():
    texts = [answer_text(12), answer_text(30), answer_text(30), "no answer", answer_text(12), answer_text(30)]
    stub = StubGenerator(texts)
    result = make_strategy("majority").run(PROMPT, stub, None, Budget(samples=len(texts)), 0)
    assert result.answer == 30
    assert [c.answer for c in result.candidates] == [12, 30, 30, None, 12, 30]
    assert result.compute.samples == 6
    assert result.compute.policy_prompt_tokens == len(PROMPT) + 1  # the prompt once, not six times
    assert result.compute.policy_completion_tokens == sum(len(t) for t in texts)
    assert result.compute.policy_flops == 2 * 1000 * result.compute.policy_tokens


def test_majority_ignores_missing_answers_and_breaks_ties_by_first_seen():
    many_missing = ["junk", "junk", "junk", answer_text(7)]
    assert (
        make_strategy("majority").run(PROMPT, StubGenerator(many_missing), None, Budget(samples=4), 0).answer
        == 7
    )
    none = make_strategy("majority").run(PROMPT, StubGenerator(["junk"]), None, Budget(samples=3), 0)
    assert none.answer is None
    tie = [answer_text(44), answer_text(11), answer_text(11), answer_text(44)]
    assert make_strategy("majority").run(PROMPT, StubGenerator(tie), None, Budget(samples=4), 0).answer == 44


def test_best_of_n_picks_the_highest_scoring_sample():
    texts = [answer_text(12), answer_text(30), answer_text(30), answer_text(55)]
    scores = {texts[0]: 0.3, texts[1]: 0.2, texts[3]: 0.8}
    stub_v = StubVerifier(scores)
    result = make_strategy("best_of_n").run(PROMPT, StubGenerator(texts), stub_v, Budget(samples=4), 0)
    assert result.answer == 55  # majority would say 30
    assert [c.score for c in result.candidates] == [0.3, 0.2, 0.2, 0.8]
    assert stub_v.calls == 1  # all candidates scored in one call
    assert result.compute.verifier_tokens == sum(len(PROMPT) + len(t) + 1 for t in texts)
    assert result.compute.verifier_flops == 2 * 500 * result.compute.verifier_tokens


def test_best_of_n_never_picks_a_sample_without_an_answer():
    texts = ["84+72=57\n57-31=26\n", answer_text(30)]
    result = make_strategy("best_of_n").run(
        PROMPT, StubGenerator(texts), StubVerifier({texts[0]: 0.99, texts[1]: 0.01}), Budget(samples=2), 0
    )
    assert result.answer == 30


@pytest.mark.parametrize(
    ("aggregation", "answer"),
    [("last", 12), ("min", 30), ("prod", 30), ("mean", 30), ("orm", 30)],
)
def test_best_of_n_aggregation_decides_the_score(aggregation, answer):
    # Step scores are [0.99, s]; "min" and friends see a weak first step differently.
    a, b = answer_text(12), answer_text(30)

    class WeakFirstStep(StubVerifier):
        def score(self, prompts, solutions):
            out = super().score(prompts, solutions)
            for s, sol in zip(out, solutions):
                if sol == a:
                    s.step_scores[0] = 0.05
            return out

    stub_v = WeakFirstStep({a: 0.7, b: 0.6}, outcomes={a: 0.1, b: 0.9})
    result = make_strategy("best_of_n", aggregation=aggregation).run(
        PROMPT, StubGenerator([a, b]), stub_v, Budget(samples=2), 0
    )
    assert result.answer == answer


def test_weighted_best_of_n_sums_scores_per_answer():
    # One confident sample says 55; three middling ones say 30. Plain best-of-N takes the single
    # best sample, the weighted vote takes the answer with the largest total score.
    texts = [
        answer_text(55),
        answer_text(30, "84+72=57\n"),
        answer_text(30, "84+72=67\n"),
        answer_text(30, ""),
    ]
    scores = {texts[0]: 0.9, texts[1]: 0.4, texts[2]: 0.35, texts[3]: 0.3}
    plain = make_strategy("best_of_n").run(
        PROMPT, StubGenerator(texts), StubVerifier(scores), Budget(samples=4), 0
    )
    weighted = make_strategy("weighted_best_of_n").run(
        PROMPT, StubGenerator(texts), StubVerifier(scores), Budget(samples=4), 0
    )
    assert plain.answer == 55
    assert weighted.answer == 30  # 0.4 + 0.35 + 0.3 = 1.05 > 0.9
    # And the weights matter: it is not a plain vote.
    scores_low = {texts[0]: 0.9, texts[1]: 0.2, texts[2]: 0.2, texts[3]: 0.2}
    weighted_low = make_strategy("weighted_best_of_n").run(
        PROMPT, StubGenerator(texts), StubVerifier(scores_low), Budget(samples=4), 0
    )
    assert weighted_low.answer == 55  # 0.6 < 0.9
    assert (
        make_strategy("majority").run(PROMPT, StubGenerator(texts), None, Budget(samples=4), 0).answer == 30
    )


def test_weighted_best_of_n_without_any_answer_gives_none():
    texts = ["junk", "more junk"]
    result = make_strategy("weighted_best_of_n").run(
        PROMPT, StubGenerator(texts), StubVerifier(dict.fromkeys(texts, 0.5)), Budget(samples=2), 0
    )
    assert result.answer is None


# --- compute bookkeeping ------------------------------------------------------------------------


def test_compute_merge_adds_everything():
    a = Compute(1, 2, 3, 4.0, 5.0, 6)
    b = Compute(10, 20, 30, 40.0, 50.0, 60)
    a.merge(b)
    assert (a.policy_prompt_tokens, a.policy_completion_tokens, a.verifier_tokens, a.samples) == (
        11,
        22,
        33,
        66,
    )
    assert (a.policy_flops, a.verifier_flops, a.total_flops) == (44.0, 55.0, 99.0)


def test_compute_counts_each_prompt_once_per_generation_call():
    c = Compute()
    stub = StubGenerator(["abc", "de"], num_params=10)
    groups = stub.generate(["p1", "prompt2"], SamplingParams(n=3))
    c.add_generation(stub, groups)
    assert c.policy_prompt_tokens == 3 + 8
    assert c.policy_completion_tokens == 2 * (3 + 2 + 3)
    assert c.samples == 6
    assert c.policy_flops == 2 * 10 * (11 + 16)
