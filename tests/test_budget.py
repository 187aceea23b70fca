"""Budgets: validation, the tracker's worst-case planning and accounting, budgets of every kind on the
sampling strategies, the typed strategy registry, and the API's budget options."""

from __future__ import annotations

import math
import warnings

import pytest

from ponder.api import resolve_budget
from ponder.backends.base import SamplingParams
from ponder.errors import ConfigError
from ponder.strategies import STRATEGIES, Budget, BudgetTracker, Compute, Cost, make_strategy
from ponder.strategies.budget import BudgetExhausted, derive_seed
from ponder.strategies.registry import NEEDS_VERIFIER
from stubs import PROMPT, MarkerVerifier, StepStub, one_marked_per_call

# --- the Budget -----------------------------------------------------------------------------------


def test_a_budget_needs_a_limit():
    with pytest.raises(ConfigError, match="at least one limit: samples, tokens or flops"):
        Budget()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samples": -1}, "samples must be >= 0, got -1"),
        ({"tokens": -5}, "tokens must be >= 0, got -5"),
        ({"flops": -1.0}, "flops must be >= 0"),
        ({"samples": 1.5}, "samples must be a whole number"),
        ({"tokens": True}, "tokens must be a whole number"),
        ({"flops": math.inf}, "flops must be a finite number"),
        ({"flops": math.nan}, "flops must be a finite number"),
        ({"flops": "1e9"}, "flops must be a finite number"),
    ],
)
def test_bad_budgets_are_refused_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Budget(**kwargs)


def test_budget_limits_combine():
    b = Budget(samples=4, tokens=100, flops=1e6)
    assert b.describe() == "samples=4, tokens=100, flops=1e+06"
    assert Budget(tokens=0).describe() == "tokens=0"  # zero is a valid (if useless) limit
    assert b.allows(
        Cost(samples=4, policy_tokens=60, verifier_tokens=40, policy_flops=5e5, verifier_flops=5e5)
    )
    assert not b.allows(Cost(samples=5))
    assert not b.allows(Cost(policy_tokens=60, verifier_tokens=41))
    assert not b.allows(Cost(policy_flops=6e5, verifier_flops=5e5))  # FLOPs limit the total
    assert Budget(samples=3).allows(Cost(samples=3, policy_tokens=10**9))  # unset limits do not bind
    over = Compute(policy_prompt_tokens=50, policy_completion_tokens=60, samples=5, policy_flops=2e6)
    assert b.exceeded_by(over) == ["samples 5 > 4", "tokens 110 > 100", "flops 2e+06 > 1e+06"]
    assert b.exceeded_by(Compute()) == []


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(3, "batch", 1) == derive_seed(3, "batch", 1)
    assert len({derive_seed(3, "batch", i) for i in range(50)}) == 50
    assert 0 <= derive_seed(2**40, "x") < 2**62


# --- the tracker ----------------------------------------------------------------------------------


def test_tracker_refuses_a_missing_verifier_and_a_bare_number():
    stub = StepStub(one_marked_per_call(2))
    with pytest.raises(ConfigError, match="strategy 'x' needs a verifier"):
        BudgetTracker(Budget(samples=1), "x", stub, None, needs_verifier=True)
    with pytest.raises(ConfigError, match=r"needs a Budget \(e\.g\. Budget\(samples=16\)\), got 16"):
        BudgetTracker(16, "x", stub)  # type: ignore[arg-type]


def test_worst_case_of_a_generate_call():
    stub = StepStub(one_marked_per_call(2), num_params=1000)
    tracker = BudgetTracker(Budget(tokens=1000), "x", stub, MarkerVerifier(num_params=10))
    # Without a count_prompt_tokens hook: one token per byte plus <bos>; each prompt counted once.
    assert tracker.prompt_tokens(PROMPT) == len(PROMPT) + 1
    cost = tracker.generation_cost([PROMPT, PROMPT + "ab\n"], n=3, max_new_tokens=10, samples=6)
    assert cost.policy_tokens == (len(PROMPT) + 1) + (len(PROMPT) + 4) + 2 * 3 * 10
    assert cost.samples == 6 and cost.policy_flops == 2 * 1000 * cost.policy_tokens
    assert tracker.scoring_cost(PROMPT, ["abc"]).verifier_tokens == len(PROMPT) + 3 + 1
    est = tracker.scoring_estimate(PROMPT, "ab\n", new_tokens=10, count=2)
    assert est.verifier_tokens == 2 * (len(PROMPT) + 3 + 1 + 10)
    assert est.verifier_flops == 2 * 10 * est.verifier_tokens


def test_embedded_token_hooks_match_what_the_models_run(generator, verifier):
    tracker = BudgetTracker(Budget(tokens=10**6), "x", generator, verifier)
    groups = tracker.generate(
        [PROMPT, PROMPT + "84+"], SamplingParams(n=2, max_new_tokens=8, seed=0), samples=4
    )
    assert tracker.compute.policy_prompt_tokens == generator.last_usage.prompt_tokens
    assert tracker.compute.policy_prompt_tokens == tracker.prompt_tokens(PROMPT) + tracker.prompt_tokens(
        PROMPT + "84+"
    )
    texts = [c.text for g in groups for c in g]
    tracker.score(PROMPT, texts)
    assert tracker.compute.verifier_tokens == sum(tracker.verifier_tokens(PROMPT, t) for t in texts)
    assert tracker.compute.samples == 4 and tracker.compute.completions == 4


def test_generate_is_refused_before_spending_when_its_worst_case_does_not_fit():
    stub = StepStub(one_marked_per_call(2))
    tracker = BudgetTracker(Budget(tokens=len(PROMPT) + 1 + 2 * 10 - 1), "x", stub)
    with pytest.raises(BudgetExhausted):
        tracker.generate([PROMPT], SamplingParams(n=2, max_new_tokens=10), samples=2)
    assert stub.calls == [] and tracker.compute == Compute()
    # One token less per sample fits, even though the samples will be shorter still.
    tracker.generate([PROMPT], SamplingParams(n=2, max_new_tokens=9, seed=0), samples=2)
    assert tracker.compute.policy_tokens <= tracker.budget.tokens


def test_samples_limit_is_checked_before_generating():
    stub = StepStub(one_marked_per_call(2))
    tracker = BudgetTracker(Budget(samples=3), "x", stub)
    tracker.generate([PROMPT], SamplingParams(n=2, seed=0), samples=2)
    with pytest.raises(BudgetExhausted):
        tracker.generate([PROMPT], SamplingParams(n=2, seed=1), samples=2)
    tracker.generate([PROMPT], SamplingParams(n=1, seed=1), samples=1)
    assert tracker.compute.samples == 3


def test_largest_finds_the_biggest_affordable_size():
    tracker = BudgetTracker(Budget(tokens=100), "x", StepStub(one_marked_per_call(2)))
    assert tracker.largest(lambda k: tracker.policy_cost(7 * k), 1000) == 14
    assert tracker.largest(lambda k: tracker.policy_cost(7 * k), 5) == 5
    assert tracker.largest(lambda k: tracker.policy_cost(101 + k), 5) == 0


def test_scoring_what_does_not_fit_is_refused():
    tracker = BudgetTracker(
        Budget(tokens=2 * (len(PROMPT) + 4)), "x", StepStub(one_marked_per_call(2)), MarkerVerifier()
    )
    assert tracker.affordable_prefix(PROMPT, ["abc", "abc", "abc"]) == 2
    with pytest.raises(BudgetExhausted):
        tracker.score(PROMPT, ["abc", "abc", "abc"])
    tracker.score(PROMPT, ["abc", "abc"])
    assert tracker.compute.verifier_tokens == tracker.budget.tokens


def test_a_backend_that_undercounts_its_prompts_is_reported():
    class Undercounting(StepStub):
        def count_prompt_tokens(self, prompt: str) -> int:
            return 1

    tracker = BudgetTracker(Budget(tokens=10**6), "x", Undercounting(one_marked_per_call(2)))
    with pytest.warns(RuntimeWarning, match="undercounts"):
        tracker.generate([PROMPT], SamplingParams(n=1, max_new_tokens=4, seed=0), samples=1)


def test_the_minimum_names_strategy_minimum_and_budget():
    tracker = BudgetTracker(Budget(samples=2, tokens=50), "beam_search", StepStub(one_marked_per_call(2)))
    with pytest.raises(ConfigError) as info:
        tracker.require_minimum(Cost(samples=4, policy_tokens=120, policy_flops=3e5), "a first round")
    message = str(info.value)
    assert "strategy 'beam_search' needs a budget of at least 4 samples, 120 tokens, 3e+05 FLOPs" in message
    assert "(a first round); the budget is samples=2, tokens=50" in message


# --- sampling strategies under every kind of budget --------------------------------------------------


def spent_tokens(c: Compute) -> int:
    return c.policy_tokens + c.verifier_tokens


@pytest.mark.parametrize("name", ["majority", "best_of_n", "adaptive_majority"])
def test_a_token_budget_is_spent_in_batches_and_never_exceeded(name):
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    budget = Budget(tokens=2500)
    # adaptive_majority would stop once settled; ask for certainty so it spends the budget.
    params = {"confidence": 1.0} if name == "adaptive_majority" else {}
    result = make_strategy(name, max_new_tokens=40, **params).run(PROMPT, stub, stub_v, budget, 0)
    c = result.compute
    assert spent_tokens(c) <= 2500
    assert len(stub.calls) >= 2  # samples stop before max_new_tokens, so further batches use the slack
    assert c.samples == len(result.candidates) == sum(p.n for _, p in stub.calls)
    # What is left cannot pay for one more worst-case sample.
    one_more = (len(PROMPT) + 1 + 40) + ((len(PROMPT) + 1 + 40) if name == "best_of_n" else 0)
    assert 2500 - spent_tokens(c) < one_more
    assert stub.completion_tokens == c.policy_completion_tokens


def test_a_flops_budget_limits_policy_and_verifier_flops_together():
    stub, stub_v = StepStub(one_marked_per_call(3), num_params=2000), MarkerVerifier(num_params=3000)
    result = make_strategy("best_of_n", max_new_tokens=40).run(PROMPT, stub, stub_v, Budget(flops=2e6), 0)
    c = result.compute
    assert c.policy_flops == 2 * 2000 * c.policy_tokens
    assert c.verifier_flops == 2 * 3000 * c.verifier_tokens
    assert 0 < c.total_flops <= 2e6
    assert c.samples >= 2


def test_the_tightest_of_several_limits_binds():
    stub = StepStub(one_marked_per_call(3))
    loose_tokens = make_strategy("majority").run(PROMPT, stub, None, Budget(samples=5, tokens=10**6), 0)
    assert loose_tokens.compute.samples == 5
    tight_tokens = make_strategy("majority", max_new_tokens=20).run(
        PROMPT, stub, None, Budget(samples=50, tokens=200), 0
    )
    assert tight_tokens.compute.samples < 50 and spent_tokens(tight_tokens.compute) <= 200


@pytest.mark.parametrize("name", ["greedy", "majority", "best_of_n", "adaptive_majority"])
def test_a_token_budget_below_one_worst_case_sample_is_refused(name):
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    one = len(PROMPT) + 1 + 20 + ((len(PROMPT) + 1 + 20) if name == "best_of_n" else 0)
    with pytest.raises(
        ConfigError, match=rf"strategy '{name}' needs a budget of at least 1 sample, {one} tokens"
    ):
        make_strategy(name, max_new_tokens=20).run(PROMPT, stub, stub_v, Budget(tokens=one - 1), 0)
    assert stub.calls == []  # refused before spending anything
    result = make_strategy(name, max_new_tokens=20).run(PROMPT, stub, stub_v, Budget(tokens=one), 0)
    assert result.compute.samples == 1 and spent_tokens(result.compute) <= one


def test_greedy_caps_nothing_and_draws_one_sample():
    stub = StepStub(one_marked_per_call(3))
    result = make_strategy("greedy", max_new_tokens=50).run(PROMPT, stub, None, Budget(tokens=10**5), 0)
    ((_, params),) = stub.calls
    assert (params.n, params.temperature, params.max_new_tokens) == (1, 0.0, 50)
    assert result.answer == 10  # the stub's greedy path has no marked step


# --- the registry: typed parameters -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_names_its_unknown_parameters(name):
    with pytest.raises(ConfigError, match=rf"bad parameter for strategy '{name}': unknown parameter 'nope'"):
        make_strategy(name, nope=1)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("majority", {"temperature": "hot"}, "'temperature' must be float, got 'hot'"),
        ("beam_search", {"beam_width": 2.0}, "'beam_width' must be int, got 2.0"),
        ("beam_search", {"weighted": 1}, "'weighted' must be bool, got 1"),
        ("dvts", {"n": "8"}, "'n' must be int or None, got '8'"),
        ("weighted_best_of_n", {"weighted": False}, "'weighted' is fixed to True"),
        ("beam_search", {"beam_width": 0}, "beam_width must be >= 1"),
        ("beam_search", {"n": 2, "beam_width": 4}, r"n \(2\) must be at least beam_width \(4\)"),
        ("dvts", {"n": 2, "branching": 4}, r"n \(2\) must be at least branching \(4\)"),
        ("lookahead", {"lookahead": -1}, "lookahead must be >= 0"),
        ("best_of_n", {"aggregation": "median"}, "aggregation must be one of"),
        ("adaptive_majority", {"confidence": 0.4}, r"confidence must be in \(0.5, 1\]"),
        ("greedy", {"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ],
)
def test_bad_parameter_values_are_refused_by_name(name, params, message):
    with pytest.raises(ConfigError, match=rf"bad parameter for strategy '{name}': .*{message}"):
        make_strategy(name, **params)


def test_typed_parameters_are_set():
    assert make_strategy("beam_search", beam_width=2, n=8, aggregation="min").beam_width == 2
    assert make_strategy("majority", temperature=1).temperature == 1.0  # an int is a fine float
    assert isinstance(make_strategy("majority", temperature=1).temperature, float)
    assert make_strategy("lookahead", lookahead=3).lookahead == 3
    assert make_strategy("dvts", branching=2, weighted=True).weighted is True
    assert STRATEGIES["dvts"].parameters()["branching"] is int
    assert "name" not in STRATEGIES["beam_search"].parameters()
    assert "weighted" not in STRATEGIES["weighted_best_of_n"].parameters()
    assert NEEDS_VERIFIER >= {"best_of_n", "weighted_best_of_n", "beam_search", "lookahead", "dvts"}
    assert "compute_optimal" in NEEDS_VERIFIER  # its probe is scored


# --- the API's budget options ---------------------------------------------------------------------


def test_resolve_budget():
    assert resolve_budget(None, None) == Budget(samples=16)
    assert resolve_budget(None, 4) == Budget(samples=4)
    assert resolve_budget(Budget(tokens=9), None) == Budget(tokens=9)
    with pytest.raises(ConfigError, match="not both"):
        resolve_budget(Budget(tokens=9), 4)
    with pytest.raises(ConfigError, match="must be a ponder Budget"):
        resolve_budget({"tokens": 9}, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="samples must be >= 0"):
        resolve_budget(None, -2)


def test_budget_is_importable_from_the_package_root():
    import ponder

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ponder.Budget is Budget
