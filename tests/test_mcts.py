"""MCTS over steps with the PRM as value: the path it finds, the width limit per depth, rollouts,
selection rules, budgets and determinism, on stub models whose right path is known."""

from __future__ import annotations

import random

import pytest

from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from ponder.strategies.mcts import MCTS, _priors
from ponder.tasks import encode_number
from stubs import MARK, PROMPT, MarkerVerifier, StepStub, one_marked_per_call

SETUP = "+"


def depth_of(prompt: str) -> int:
    return len([line for line in prompt[len(PROMPT) :].split("\n") if line])


def step_calls(stub: StepStub):
    return [(ps, p) for ps, p in stub.calls if p.temperature > 0]


@pytest.mark.parametrize("selection", ["puct", "uct"])
def test_mcts_finds_the_marked_path(selection):
    # Each call marks exactly one of its n samples, and the verifier scores marked steps 0.9, others
    # 0.2: only a search that follows the high-value child every time ends with all 3 marked.
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    result = make_strategy("mcts", selection=selection).run(PROMPT, stub, stub_v, Budget(samples=8), 0)
    assert result.answer == 13
    best = max((c for c in result.candidates if c.answer is not None), key=lambda c: c.score)
    assert best.text.count(MARK) == 3 and best.score == 0.9
    assert make_strategy("best_of_n").run(PROMPT, stub, stub_v, Budget(samples=8), 0).answer != 13


def test_each_expansion_samples_branching_steps_from_a_node_of_the_tree():
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    result = make_strategy("mcts", branching=3, max_step_tokens=20).run(
        PROMPT, stub, stub_v, Budget(samples=9), 1
    )
    calls = step_calls(stub)
    assert calls[0][0] == [PROMPT]
    texts = {c.text for c in result.candidates}
    for prompts, params in calls:
        assert len(prompts) == 1 and params.n == 3  # one leaf, branching candidates
        assert params.stop_at_step and params.max_new_tokens == 20
        assert prompts[0] == PROMPT or prompts[0][len(PROMPT) :] in texts  # the root or a node it grew
    # One trace line per expansion.
    assert sum(line.startswith("expansion ") for line in result.trace) == len(calls)


def test_samples_bound_the_width_of_each_depth_not_the_tree():
    stub, stub_v = StepStub(one_marked_per_call(4)), MarkerVerifier()
    result = make_strategy("mcts", branching=2).run(PROMPT, stub, stub_v, Budget(samples=6), 0)
    per_depth: dict[int, int] = {}
    for prompts, params in step_calls(stub):
        d = depth_of(prompts[0]) + 1
        per_depth[d] = per_depth.get(d, 0) + params.n
    assert max(per_depth.values()) == 6  # N candidates at the widest depth ...
    assert sum(per_depth.values()) > 6  # ... and more than N in the tree
    assert result.compute.samples == 6  # samples counts the widest depth, as N does for beam search
    assert "by width" in result.trace[-2] or "by width" in result.trace[-3]


def test_a_bigger_budget_grows_a_bigger_tree():
    sizes = []
    for n in (4, 8, 16):
        stub = StepStub(one_marked_per_call(4))
        make_strategy("mcts").run(PROMPT, stub, MarkerVerifier(), Budget(samples=n), 0)
        sizes.append(sum(p.n for _, p in step_calls(stub)))
    assert sizes[0] < sizes[1] < sizes[2]


def delayed_reward(lines: list[str], i: int, n: int, rng: random.Random, greedy: bool) -> str:
    """Two steps then the answer (10 + the setup steps). Sample 0 writes a setup step, which looks
    bad itself, but the greedy step after it is marked (see test_search_strategies)."""
    if len(lines) >= 2:
        return "A:" + encode_number(10 + sum(SETUP in line for line in lines), 2)
    if greedy:
        return f"f{MARK}" if lines and SETUP in lines[-1] else "f"
    return f"s{len(lines)}{SETUP if i == 0 else ''}v{i}"


def delayed_rule(line: str, previous: list[str]) -> float:
    if SETUP in line:
        return 0.1
    return 0.95 if MARK in line else 0.5


def test_rollouts_evaluate_a_step_by_where_it_leads():
    # With N = branching = 4 each depth has room for one expansion: the search follows its values.
    plain = make_strategy("mcts").run(
        PROMPT, StepStub(delayed_reward), MarkerVerifier(delayed_rule), Budget(samples=4), 0
    )
    stub = StepStub(delayed_reward)
    rolled = make_strategy("mcts", rollout=1).run(
        PROMPT, stub, MarkerVerifier(delayed_rule), Budget(samples=4), 0
    )
    assert plain.answer == 10  # the setup step looks worse now
    assert rolled.answer == 12  # its rollout shows it pays off
    rollouts = [p for _, p in stub.calls if p.temperature == 0]
    assert rollouts and all(p.n == 1 and p.stop_at_step for p in rollouts)
    assert rolled.compute.samples == 4 and rolled.compute.completions > 12  # rollouts add no samples


def test_the_value_is_backed_up_to_the_root():
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    strategy = make_strategy("mcts")
    assert isinstance(strategy, MCTS)
    result = strategy.run(PROMPT, stub, stub_v, Budget(samples=4), 0)
    # With N = branching the tree is one chain of expansions; the most-visited path is its spine and
    # ends in the answered leaf.
    expansions = sum(line.startswith("expansion ") for line in result.trace)
    assert expansions == 3
    assert any(line.startswith("most-visited path: depth 3, 1 visits") for line in result.trace)
    assert "best 0.900" in result.trace[1]


def test_exploration_widens_the_search():
    order = {}
    for exploration in (0.0, 10.0):
        stub = StepStub(one_marked_per_call(3))
        make_strategy("mcts", exploration=exploration, branching=2).run(
            PROMPT, stub, MarkerVerifier(), Budget(samples=8), 0
        )
        order[exploration] = [depth_of(ps[0]) for ps, _ in step_calls(stub)][:3]
    # Without exploration the search follows the best child straight down; with a lot, the third
    # expansion goes back to the unvisited first step (its bonus now outweighs its low value).
    assert order[0.0] == [0, 1, 2]
    assert order[10.0] == [0, 1, 1]


def test_priors_are_the_policys_length_normalised_probabilities():
    priors = _priors([-0.1, -1.0, -1.0])
    assert sum(priors) == pytest.approx(1.0)
    assert priors[0] > priors[1] == priors[2]
    assert _priors([-0.5, -0.5]) == [0.5, 0.5]


def test_a_token_budget_is_never_exceeded_and_ends_the_search():
    stub, stub_v = StepStub(one_marked_per_call(6)), MarkerVerifier()
    budget = Budget(tokens=2500)
    result = make_strategy("mcts", max_step_tokens=16).run(PROMPT, stub, stub_v, budget, 0)
    c = result.compute
    assert budget.exceeded_by(c) == []
    assert c.policy_tokens + c.verifier_tokens > 2500 - 200  # most of it spent
    assert "by budget" in " ".join(result.trace)


def test_same_seed_same_search_other_seed_other_search():
    def go(seed: int):
        return make_strategy("mcts", branching=2).run(
            PROMPT, StepStub(one_marked_per_call(3)), MarkerVerifier(), Budget(samples=6), seed
        )

    a, b, other = go(4), go(4), go(5)
    assert (a.answer, a.candidates, a.compute, a.trace) == (b.answer, b.candidates, b.compute, b.trace)
    assert [c.text for c in a.candidates] != [c.text for c in other.candidates]


def test_an_unanswered_search_completes_its_most_visited_path():
    stub, stub_v = StepStub(one_marked_per_call(8)), MarkerVerifier()
    result = make_strategy("mcts", max_rounds=2).run(PROMPT, stub, stub_v, Budget(samples=4), 0)
    assert result.trace[-1].startswith("completed the most-visited open path greedily")
    assert result.answer == 12  # two marked steps, then greedy (unmarked) ones


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"branching": 0}, "branching must be >= 1"),
        ({"n": 2, "branching": 4}, r"n \(2\) must be at least branching \(4\)"),
        ({"selection": "ucb"}, "selection must be one of"),
        ({"exploration": -1.0}, "exploration must be >= 0"),
        ({"rollout": -1}, "rollout must be >= 0"),
        ({"rollouts": 1}, "unknown parameter 'rollouts'"),
    ],
)
def test_bad_mcts_parameters_are_refused(params, message):
    with pytest.raises(ConfigError, match=rf"bad parameter for strategy 'mcts': .*{message}"):
        make_strategy("mcts", **params)


def test_mcts_refuses_a_budget_below_one_expansion_and_an_empty_prompt():
    stub = StepStub(one_marked_per_call(2))
    with pytest.raises(ConfigError, match=r"at least 4 samples, .*one expansion: branching=4.* samples=3"):
        make_strategy("mcts").run(PROMPT, stub, MarkerVerifier(), Budget(samples=3), 0)
    with pytest.raises(ConfigError, match="strategy 'mcts' needs a verifier"):
        make_strategy("mcts").run(PROMPT, stub, None, Budget(samples=4), 0)
    with pytest.raises(ConfigError, match="got an empty prompt"):
        make_strategy("mcts").run("", stub, MarkerVerifier(), Budget(samples=4), 0)
    assert stub.calls == []
