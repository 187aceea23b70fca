"""The shipped order-diverse policy (``embedded+orders``): majority vote's policy."""

from __future__ import annotations

import re

import pytest

import ponder
from ponder.backends.base import SamplingParams
from ponder.backends.spec import load_generator
from ponder.eval.metrics import greedy_correct
from ponder.tasks import make_split
from ponder.training import weights


@pytest.fixture(scope="module")
def orders_policy():
    return load_generator("embedded+orders")


def test_it_is_the_policy_size_and_solves_by_many_routes(orders_policy):
    assert orders_policy.num_params == load_generator("embedded").num_params
    problem = make_split("test", levels=[4], n_per_level=1, seed=0)[0]
    group = orders_policy.generate([problem.prompt], SamplingParams(n=16, temperature=1.0, seed=0))[0]
    # The order a sample applies the operations in shows in the right operands of its lines.
    orders = {tuple(re.findall(r"[+-]\d+=", c.text)[:3]) for c in group}
    assert len(orders) >= 4


def test_majority_vote_beats_its_greedy_answer_on_the_hard_levels(orders_policy):
    problems = make_split("test", levels=[3, 5], n_per_level=40, seed=0)
    greedy = sum(greedy_correct(orders_policy, problems))
    majority = sum(
        ponder.solve(p.question, strategy="majority", samples=16, backend=orders_policy).answer == p.answer
        for p in problems
    )
    assert majority >= greedy + 6


def test_a_missing_weights_file_names_the_command_that_makes_it(monkeypatch, tmp_path):
    from ponder.errors import ConfigError

    monkeypatch.setattr(weights, "orders_policy_path", lambda: tmp_path / "policy_orders.safetensors")
    with pytest.raises(ConfigError, match="order-shuffle 1.0"):
        load_generator("embedded+orders")


def test_the_orders_checker_spec_without_weights_names_the_command(monkeypatch, tmp_path):
    from ponder.errors import ConfigError
    from ponder.verifiers.spec import load_verifier

    monkeypatch.setattr(weights, "orders_checker_path", lambda: tmp_path / "checker_orders.safetensors")
    with pytest.raises(ConfigError, match="train checker --any-order"):
        load_verifier("embedded+orders")


def test_beam_search_against_its_checker_solves_level_5_where_greedy_does_not(orders_policy):
    from ponder.verifiers.spec import load_verifier

    checker = load_verifier("embedded+orders")
    assert checker.relative_to_best is True  # its weights say they were trained any-order
    problems = make_split("test", levels=[5], n_per_level=16, seed=0)
    greedy = sum(greedy_correct(orders_policy, problems))
    beam = sum(
        ponder.solve(
            p.question,
            strategy="beam_search",
            samples=16,
            backend=orders_policy,
            verifier=checker,
            beam_width=4,
        ).answer
        == p.answer
        for p in problems
    )
    assert beam >= greedy + 5
