"""The cascade strategy: keep a confident cheap answer, escalate a doubtful one to a stronger
strategy and/or a second backend, within the budget, with the cost of each backend reported."""

from __future__ import annotations

import pytest

from ponder.backends.base import Completion, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies import STRATEGIES, Budget, make_strategy
from ponder.strategies.cascade import CascadeResult
from ponder.tasks import encode_number, parse_question
from ponder.verifiers.base import VerifierScore

PROMPT = parse_question("48+27-13").prompt


def text(answer: int) -> str:
    return f"84+72=57\nA:{encode_number(answer, 2)}"


class AnswerStub:
    """Sample ``i`` of every prompt answers ``answers[i % len(answers)]``; one token per character."""

    def __init__(self, answers: list[int], name: str, num_params: int) -> None:
        self.answers, self.name, self._num_params = answers, name, num_params
        self.calls: list[SamplingParams] = []

    @property
    def num_params(self) -> int:
        return self._num_params

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append(params)
        out = []
        for p in prompts:
            group = []
            for i in range(params.n):
                t = text(self.answers[i % len(self.answers)])[: params.max_new_tokens]
                group.append(Completion(t, list(range(len(t))), [-0.1] * len(t), "eos", len(p) + 1))
            out.append(group)
        return out


class AnswerVerifier:
    """Scores a solution by a table of answers (0.5 for unknown ones)."""

    def __init__(self, table: dict[int, float]) -> None:
        self.table, self.num_params, self.calls = table, 7, 0

    def score(self, prompts, solutions):
        from ponder.tasks import extract_answer

        self.calls += 1
        return [
            VerifierScore(step_scores=[self.table.get(extract_answer(s), 0.5)], tokens=len(p) + len(s) + 1)
            for p, s in zip(prompts, solutions)
        ]


def test_cascade_is_registered_and_checks_its_parameters():
    assert "cascade" in STRATEGIES
    c = make_strategy("cascade", small_samples=2, threshold=0.6, large_cost_per_token=30)
    assert (c.small_samples, c.threshold, c.large_cost_per_token) == (2, 0.6, 30.0)
    large = AnswerStub([62], "big", 100)
    assert make_strategy("cascade", large=large).large is large
    for params, message in [
        ({"small_strategy": "cascade"}, "small_strategy cannot be 'cascade'"),
        ({"large_strategy": "nope"}, "unknown strategy 'nope'"),
        ({"threshold": 1.5}, r"threshold must be in \[0, 1\]"),
        ({"confidence": "vibes"}, "'confidence' must be"),
        ({"large": 3}, "'large' must be Generator or str or None"),
        ({"small_cost_per_token": -1.0}, "small_cost_per_token must be >= 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make_strategy("cascade", **params)


def test_a_confident_small_answer_is_kept_and_costs_only_the_small_backend():
    small, large = AnswerStub([62], "small", 10), AnswerStub([61], "large", 1000)
    result = make_strategy("cascade", large=large, small_samples=4).run(
        PROMPT, small, None, Budget(samples=16), 0
    )
    assert isinstance(result, CascadeResult)
    assert result.answer == 62 and not result.escalated and result.confidence == 1.0
    assert large.calls == [] and [p.n for p in small.calls] == [4]
    (stage,) = result.stages
    c = result.compute
    assert (stage.backend, stage.policy_tokens) == ("small", c.policy_tokens)
    assert result.cost == stage.cost == c.policy_tokens * 1.0
    assert c.samples == 4 and c.policy_flops == 2 * 10 * c.policy_tokens


def test_a_doubtful_answer_escalates_to_the_larger_backend_within_the_budget():
    small = AnswerStub([62, 61, 60, 59], "small", 10)  # four samples, four answers: agreement 1/4
    large = AnswerStub([26], "large", 1000)
    cascade = make_strategy("cascade", large=large, small_samples=4, large_cost_per_token=10.0)
    result = cascade.run(PROMPT, small, None, Budget(samples=10), 0)
    assert result.escalated and result.confidence == 0.25 and result.answer == 26
    assert [p.n for p in small.calls] == [4] and [p.n for p in large.calls] == [6]  # the rest of N
    assert result.compute.samples == 10 and len(result.candidates) == 10
    small_stage, large_stage = result.stages
    assert (small_stage.backend, large_stage.backend) == ("small", "large")
    assert large_stage.cost == 10.0 * large_stage.policy_tokens
    assert result.cost == small_stage.cost + large_stage.cost
    # FLOPs are charged at each backend's own size.
    c = result.compute
    assert c.policy_flops == 2 * 10 * small_stage.policy_tokens + 2 * 1000 * large_stage.policy_tokens
    assert any("escalated" in line for line in result.trace)


def test_without_a_second_backend_it_escalates_to_a_stronger_strategy_on_the_same_one():
    gen = AnswerStub([62, 61], "embedded", 10)
    result = make_strategy("cascade", small_strategy="greedy", large_strategy="majority", threshold=1.0).run(
        PROMPT, gen, None, Budget(samples=8), 0
    )
    # Greedy's single sample agrees with itself: confidence 1, kept even at threshold 1.
    assert not result.escalated
    result = make_strategy("cascade", small_samples=2, threshold=0.9).run(
        PROMPT, gen, None, Budget(samples=8), 0
    )
    assert result.escalated and [p.n for p in gen.calls[-2:]] == [2, 6]
    assert {s.backend for s in result.stages} == {"embedded"}


def test_verifier_confidence_scores_the_answer_and_counts_it():
    gen, large = AnswerStub([62], "small", 10), AnswerStub([26], "large", 100)
    verifier = AnswerVerifier({62: 0.3})
    cascade = make_strategy("cascade", large=large, confidence="verifier", threshold=0.5)
    result = cascade.run(PROMPT, gen, verifier, Budget(samples=8), 0)
    assert result.confidence == pytest.approx(0.3) and result.escalated and result.answer == 26
    assert result.compute.verifier_tokens > 0 and verifier.calls == 1
    result = make_strategy("cascade", large=large, confidence="min", threshold=0.2).run(
        PROMPT, gen, AnswerVerifier({62: 0.9}), Budget(samples=8), 0
    )
    assert not result.escalated and result.confidence == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="strategy 'cascade' needs a verifier"):
        cascade.run(PROMPT, gen, None, Budget(samples=8), 0)


def test_a_budget_too_small_to_escalate_keeps_the_small_answer():
    small, large = AnswerStub([62, 61], "small", 10), AnswerStub([26], "large", 10)
    result = make_strategy("cascade", large=large, small_samples=4).run(
        PROMPT, small, None, Budget(samples=4), 0
    )
    assert not result.escalated and result.answer == 62 and large.calls == []
    assert any("could not escalate" in line for line in result.trace)


def test_the_budget_is_refused_below_one_small_sample():
    small = AnswerStub([62], "small", 10)
    with pytest.raises(ConfigError, match="strategy 'cascade' needs a budget of at least"):
        make_strategy("cascade").run(PROMPT, small, None, Budget(tokens=5), 0)
    assert small.calls == []


def test_a_backend_spec_is_resolved_through_the_spec_loader():
    with pytest.raises(ConfigError, match="backend spec"):
        make_strategy("cascade", large="nope://nowhere")
