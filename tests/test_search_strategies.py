"""Step-level search (beam search, lookahead, DVTS) and adaptive majority: the behaviour each is meant
to have, checked with stub models whose right answer is known; budgets never exceeded (a property
test over random budgets and seeds); determinism; and runs on the tiny random models."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.backends.base import SamplingParams
from ponder.errors import ConfigError
from ponder.strategies import STRATEGIES, Budget, make_strategy
from ponder.strategies.adaptive_majority import prob_share_above_half
from ponder.strategies.registry import NEEDS_VERIFIER
from ponder.tasks import encode_number
from stubs import MARK, PROMPT, MarkerVerifier, StepStub, marker_answer, one_marked_per_call

SEARCHES = ["beam_search", "lookahead", "dvts"]


def lines_of(prompt: str) -> list[str]:
    """The solution lines a generate() prompt already holds."""
    return [line for line in prompt[len(PROMPT) :].split("\n") if line]


def step_calls(stub: StepStub) -> list[tuple[list[str], SamplingParams]]:
    """The calls that sampled candidate steps (not greedy rollouts or completions)."""
    return [(prompts, p) for prompts, p in stub.calls if p.temperature > 0]


# --- beam search ----------------------------------------------------------------------------------


def test_beam_search_finds_the_marked_path():
    # Each call marks exactly one of the n samples of a prompt; the verifier scores marked steps 0.9,
    # others 0.2. Only a search that keeps the marked step every round ends with all 3 marked.
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    result = make_strategy("beam_search", beam_width=2).run(PROMPT, stub, stub_v, Budget(samples=8), 0)
    assert result.answer == 10 + 3
    best = max((c for c in result.candidates if c.answer is not None), key=lambda c: c.score)
    assert best.text.count(MARK) == 3 and not best.partial
    # A plain sample of the same stub is marked on each line with chance 1/8: best-of-8 misses.
    assert make_strategy("best_of_n").run(PROMPT, stub, stub_v, Budget(samples=8), 0).answer != 13


def test_beam_search_expands_each_kept_beam_n_over_m_ways_from_its_prefix():
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    result = make_strategy("beam_search", beam_width=2, max_step_tokens=20).run(
        PROMPT, stub, stub_v, Budget(samples=8), 5
    )
    calls = step_calls(stub)
    assert calls[0][0] == [PROMPT] and calls[0][1].n == 8  # round 1: N first steps
    for prompts, params in calls[1:]:
        assert len(prompts) == 2 and params.n == 4  # M beams, N/M each
    for prompts, params in calls:
        assert params.stop_at_step and params.max_new_tokens == 20
        assert all(p.startswith(PROMPT) for p in prompts)
    # Each round continues exactly the top M (by score, ties in generation order) of the last.
    for r, (prompts, _) in enumerate(calls[1:], start=1):
        made = [c for c in result.candidates if c.partial and len(lines_of(PROMPT + c.text)) == r]
        top = sorted(made, key=lambda c: -c.score)[:2]
        assert [p[len(PROMPT) :] for p in prompts] == [c.text for c in top]
    assert result.compute.samples == 8  # N per round; rounds re-use the sample slots
    assert result.compute.completions == sum(p.n * len(ps) for ps, p in stub.calls)


def test_beam_search_sets_answered_beams_aside_and_stops_when_none_is_open():
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    result = make_strategy("beam_search", beam_width=2).run(PROMPT, stub, stub_v, Budget(samples=4), 0)
    answered = [c for c in result.candidates if c.answer is not None]
    assert answered and all(not c.partial and c.text.split("\n")[-1].startswith("A:") for c in answered)
    assert result.trace[-1] == "stopped: no open beams left"
    assert len(step_calls(stub)) == 3  # two step rounds, then the answer round
    assert all(c.score is not None for c in result.candidates)


def test_beam_search_weighted_sums_scores_per_answer():
    # Depth 1 and 5 beams: one beam is marked (answer 11, final score 0.9), four are not (answer 10,
    # 0.3 each). The best path says 11; the weighted vote says 10 (1.2 > 0.9).
    stub, stub_v = StepStub(one_marked_per_call(1)), MarkerVerifier()
    plain = make_strategy("beam_search", beam_width=5).run(PROMPT, stub, stub_v, Budget(samples=10), 0)
    weighted = make_strategy("beam_search", beam_width=5, weighted=True).run(
        PROMPT, stub, stub_v, Budget(samples=10), 0
    )
    assert (plain.answer, weighted.answer) == (11, 10)


def test_beam_search_aggregation_is_configurable():
    # With "min", a path is as good as its worst step, so the unmarked first step of a path sinks it.
    def rule(line: str, previous: list[str]) -> float:
        return 0.9 if MARK in line or line.startswith("A:") else 0.5

    stub = StepStub(one_marked_per_call(2))
    scores = {}
    for aggregation in ("last", "min"):
        stub_v = MarkerVerifier(rule)
        result = make_strategy("beam_search", beam_width=2, aggregation=aggregation).run(
            PROMPT, stub, stub_v, Budget(samples=4), 1
        )
        scores[aggregation] = sorted(c.score for c in result.candidates if c.answer is not None)
    assert set(scores["last"]) == {0.9}  # the answer line always scores 0.9
    assert min(scores["min"]) == 0.5


def test_a_search_out_of_rounds_completes_its_best_beam_greedily():
    stub, stub_v = StepStub(one_marked_per_call(8)), MarkerVerifier()
    result = make_strategy("beam_search", beam_width=2, max_rounds=2).run(
        PROMPT, stub, stub_v, Budget(samples=8), 0
    )
    assert result.trace[-2:] == ["stopped: 2 rounds done", "completed the best open beam greedily: answer 12"]
    (greedy,) = [p for _, p in stub.calls if p.temperature == 0]
    assert not greedy.stop_at_step and greedy.max_new_tokens == 160
    assert result.answer == 12  # the two marked steps it found, then greedy (unmarked) steps


def test_a_search_cut_short_by_its_budget_completes_with_what_is_left():
    stub, stub_v = StepStub(one_marked_per_call(8)), MarkerVerifier()
    budget = Budget(samples=8, tokens=1200)
    result = make_strategy("beam_search", beam_width=2, max_step_tokens=16).run(
        PROMPT, stub, stub_v, budget, 0
    )
    assert "stopped: budget spent" in result.trace
    assert any(line.startswith("completed the best open beam greedily") for line in result.trace)
    (greedy,) = [p for _, p in stub.calls if p.temperature == 0]
    assert greedy.max_new_tokens < 160  # capped to what the budget had left
    assert budget.exceeded_by(result.compute) == []
    assert result.compute.policy_tokens + result.compute.verifier_tokens > 1200 - 16


# --- lookahead ------------------------------------------------------------------------------------

SETUP = "+"


def delayed_reward(lines: list[str], i: int, n: int, rng: random.Random, greedy: bool) -> str:
    """Two steps then the answer (10 + the number of setup steps). Sample 0 of a prompt writes a
    "setup" step, which looks bad itself, but the step greedy decoding writes after it is marked;
    after any other step greedy decoding writes a plain step."""
    if len(lines) >= 2:
        return "A:" + encode_number(10 + sum(SETUP in line for line in lines), 2)
    if greedy:
        return f"f{MARK}" if lines and SETUP in lines[-1] else "f"
    return f"s{len(lines)}{SETUP if i == 0 else ''}v{i}"


def delayed_rule(line: str, previous: list[str]) -> float:
    if SETUP in line:
        return 0.1
    return 0.95 if MARK in line else 0.5


def test_lookahead_sees_past_a_step_that_only_looks_bad():
    budget = Budget(samples=4)
    plain = make_strategy("beam_search", beam_width=1).run(
        PROMPT, StepStub(delayed_reward), MarkerVerifier(delayed_rule), budget, 0
    )
    ahead = make_strategy("lookahead", beam_width=1, lookahead=1).run(
        PROMPT, StepStub(delayed_reward), MarkerVerifier(delayed_rule), budget, 0
    )
    assert plain.answer == 10  # beam search keeps the step that looks better now
    assert ahead.answer == 12  # lookahead keeps the setup steps its rollouts show pay off


def test_lookahead_counts_its_rollout_tokens():
    stub, stub_v = StepStub(delayed_reward), MarkerVerifier(delayed_rule)
    result = make_strategy("lookahead", beam_width=2, lookahead=2).run(
        PROMPT, stub, stub_v, Budget(samples=4), 0
    )
    rollouts = [(ps, p) for ps, p in stub.calls if p.temperature == 0]
    assert rollouts and all(p.n == 1 and p.stop_at_step for _, p in rollouts)
    c = result.compute
    # Every token the stub emitted (steps and rollouts) and every prompt it read is counted.
    assert c.policy_completion_tokens == stub.completion_tokens
    assert c.policy_prompt_tokens == sum(len(p) + 1 for ps, _ in stub.calls for p in ps)
    plain = make_strategy("beam_search", beam_width=2).run(
        PROMPT, StepStub(delayed_reward), MarkerVerifier(delayed_rule), Budget(samples=4), 0
    )
    assert c.policy_tokens > plain.compute.policy_tokens
    # The verifier scored candidates at the end of their rollouts: texts longer than any candidate.
    scored = [s for call in stub_v.calls for s in call]
    assert c.verifier_tokens == sum(len(PROMPT) + len(s) + 1 for s in scored)
    assert all(len(lines_of(PROMPT + s)) > 1 for s in stub_v.calls[0])  # round 1: 1 step + rollout
    assert c.samples == 4 and c.completions > 4  # rollouts add completions, not samples


def test_lookahead_zero_is_beam_search():
    budget = Budget(samples=8)
    a = make_strategy("lookahead", beam_width=2, lookahead=0).run(
        PROMPT, StepStub(one_marked_per_call(3)), MarkerVerifier(), budget, 4
    )
    b = make_strategy("beam_search", beam_width=2).run(
        PROMPT, StepStub(one_marked_per_call(3)), MarkerVerifier(), budget, 4
    )
    assert (a.answer, a.candidates, a.compute) == (b.answer, b.candidates, b.compute)


# --- DVTS -----------------------------------------------------------------------------------------


def test_dvts_grows_independent_subtrees():
    stub, stub_v = StepStub(one_marked_per_call(3)), MarkerVerifier()
    result = make_strategy("dvts", branching=2).run(PROMPT, stub, stub_v, Budget(samples=8), 0)
    calls = step_calls(stub)
    assert calls[0][0] == [PROMPT] and calls[0][1].n == 8  # the shared root: prefilled once
    assert result.trace[0] == "4 subtrees x 2 candidates per round"
    previous = [lines_of(p) for p in calls[1][0]]
    assert len(previous) == 4 and len({tuple(p[:1]) for p in previous}) == 4  # 4 distinct roots
    for prompts, params in calls[1:]:
        assert params.n == 2
        current = [lines_of(p) for p in prompts]
        # Every open subtree is expanded every round whatever its score (0.2 or 0.9): subtrees
        # never compete; and each continues its own path of the round before.
        assert len(current) == len(previous)
        for old, new in zip(sorted(previous), sorted(current)):
            assert new[:-1] == old or new == old
        previous = current
    assert sum(line.startswith("subtree ") for line in result.trace) == 4


def test_dvts_answers_by_best_final_or_weighted_vote_across_subtrees():
    # 5 subtrees: the one whose first step is the marked one ends at 13 with 0.9; the other four end
    # at 12 with 0.3 each.
    runs = {
        weighted: make_strategy("dvts", branching=2, weighted=weighted).run(
            PROMPT, StepStub(one_marked_per_call(3)), MarkerVerifier(), Budget(samples=10), 0
        )
        for weighted in (False, True)
    }
    finals = [line.split(": ", 1)[1] for line in runs[False].trace if line.startswith("subtree ")]
    assert sorted(finals) == ["answer 12 (score 0.300)"] * 4 + ["answer 13 (score 0.900)"]
    assert (runs[False].answer, runs[True].answer) == (13, 12)


def test_beam_search_by_contrast_lets_paths_compete():
    stub = StepStub(one_marked_per_call(3))
    make_strategy("beam_search", beam_width=2).run(PROMPT, stub, MarkerVerifier(), Budget(samples=8), 0)
    assert all(len(ps) == 2 for ps, _ in step_calls(stub)[1:])  # only M survive, not N/M subtrees


# --- adaptive majority ----------------------------------------------------------------------------


def agreeing(lines: list[str], i: int, n: int, rng: random.Random, greedy: bool) -> str:
    return "A:" + encode_number(42, 2) if lines else "s0"


def disagreeing(lines: list[str], i: int, n: int, rng: random.Random, greedy: bool) -> str:
    return "A:" + encode_number(40 + i % 2, 2) if lines else "s0"


def test_adaptive_majority_stops_early_when_samples_agree():
    stub = StepStub(agreeing)
    result = make_strategy("adaptive_majority").run(PROMPT, stub, None, Budget(samples=32), 0)
    assert result.answer == 42
    assert result.compute.samples == 4  # one batch: P(share > 1/2) = 1 - 2^-5 >= 0.95
    assert result.trace[-1] == "stopped: posterior confidence 0.969 >= 0.95 after 4 samples"
    tokens_only = make_strategy("adaptive_majority").run(
        PROMPT, StepStub(agreeing), None, Budget(tokens=10**5), 0
    )
    assert tokens_only.compute.samples == 4


def test_adaptive_majority_uses_the_full_budget_when_samples_disagree():
    stub = StepStub(disagreeing)
    result = make_strategy("adaptive_majority").run(PROMPT, stub, None, Budget(samples=32), 0)
    assert result.compute.samples == 32
    assert [p.n for _, p in stub.calls] == [4] * 8
    assert result.answer == 40  # a tie goes to the answer seen first, as in majority
    assert result.trace[-1] == "stopped: budget spent after 32 samples"


def test_adaptive_majority_margin_rule_stops_when_the_leader_cannot_be_overtaken():
    # Certainty demanded of the posterior, so only the margin rule can stop it: 4 votes to 0 with at
    # most 2 samples left.
    result = make_strategy("adaptive_majority", confidence=1.0).run(
        PROMPT, StepStub(agreeing), None, Budget(samples=6), 0
    )
    assert result.compute.samples == 4
    assert result.trace[-1] == "stopped: the leader cannot be overtaken after 4 samples"


def test_posterior_of_the_leaders_share():
    assert prob_share_above_half(4, 0) == pytest.approx(1 - 2**-5)
    assert prob_share_above_half(3, 3) == pytest.approx(0.5)
    assert prob_share_above_half(0, 0) == pytest.approx(0.5)
    for a, b in [(5, 2), (1, 0), (9, 3)]:
        assert prob_share_above_half(a, b) + prob_share_above_half(b, a) == pytest.approx(1.0)
    assert prob_share_above_half(9, 3) > prob_share_above_half(6, 2) > prob_share_above_half(3, 1)


# --- adaptive best-of-N ---------------------------------------------------------------------------


def marked_from_call(first: int, calls: list[int]):
    """Samples are unmarked (score 0.2) until generate call ``first``, marked (0.9) from then on."""

    def choose(lines: list[str], i: int, n: int, rng: random.Random, greedy: bool) -> str:
        if lines:
            return marker_answer(lines)
        return "s0*" if len(calls) >= first else "s0"

    return choose


def test_adaptive_best_of_n_stops_at_the_first_confident_sample():
    calls: list[int] = []
    stub = StepStub(marked_from_call(3, calls))
    stub.calls = calls  # the stub records its calls in the list the chooser reads
    result = make_strategy("adaptive_best_of_n").run(PROMPT, stub, MarkerVerifier(), Budget(samples=32), 0)
    assert [p.n for _, p in stub.calls] == [2, 2, 2]
    assert result.compute.samples == 6 and result.answer == 11
    assert result.trace[-1] == "stopped: best score 0.900 >= 0.5 after 6 samples"


def test_adaptive_best_of_n_spends_the_budget_when_no_sample_is_confident():
    stub = StepStub(one_marked_per_call(1))
    strategy = make_strategy("adaptive_best_of_n", threshold=0.95, batch_size=3)
    result = strategy.run(PROMPT, stub, MarkerVerifier(), Budget(samples=8), 0)
    assert [p.n for _, p in stub.calls] == [3, 3, 2]
    assert result.compute.samples == 8
    assert result.answer == 11  # the best-scoring sample: a marked one
    assert result.trace[-1] == "stopped: budget spent after 8 samples"
    with pytest.raises(ConfigError, match="threshold must be in"):
        make_strategy("adaptive_best_of_n", threshold=0)


def test_adaptive_best_of_n_gives_up_after_patience_samples_that_all_score_low():
    calls: list[int] = []
    stub = StepStub(marked_from_call(99, calls))  # no marked sample: every score is 0.2
    stub.calls = calls
    strategy = make_strategy("adaptive_best_of_n", give_up=0.3, patience=4)
    result = strategy.run(PROMPT, stub, MarkerVerifier(), Budget(samples=32), 0)
    assert [p.n for _, p in stub.calls] == [2, 2]
    assert result.compute.samples == 4 and result.answer is not None
    assert result.trace[-1] == "stopped: best score 0.200 < give_up 0.3 after 4 samples"
    # A bar the samples clear does not stop them: the budget is spent as without give_up.
    calls = []
    stub = StepStub(marked_from_call(99, calls))
    stub.calls = calls
    strategy = make_strategy("adaptive_best_of_n", give_up=0.1, patience=4)
    assert strategy.run(PROMPT, stub, MarkerVerifier(), Budget(samples=8), 0).compute.samples == 8
    with pytest.raises(ConfigError, match=r"give_up must be in \(0, threshold=0.5\)"):
        make_strategy("adaptive_best_of_n", give_up=0.5)
    with pytest.raises(ConfigError, match="patience must be >= 1"):
        make_strategy("adaptive_best_of_n", give_up=0.1, patience=0)


# --- every strategy: budgets, minimums, verifiers, determinism -----------------------------------------


@pytest.mark.parametrize("name", SEARCHES)
def test_search_strategies_need_a_verifier(name):
    with pytest.raises(ConfigError, match=f"strategy '{name}' needs a verifier"):
        make_strategy(name).run(PROMPT, StepStub(one_marked_per_call(2)), None, Budget(samples=8), 0)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_budget_below_the_minimum_is_refused_naming_strategy_minimum_and_budget(name):
    stub = StepStub(one_marked_per_call(2))
    with pytest.raises(
        ConfigError, match=rf"strategy '{name}' needs a budget of at least .* the budget is tokens=1$"
    ):
        make_strategy(name).run(PROMPT, stub, MarkerVerifier(), Budget(tokens=1), 0)
    assert stub.calls == []


@pytest.mark.parametrize(("name", "width"), [("beam_search", "beam_width"), ("dvts", "branching")])
def test_step_search_needs_at_least_one_candidate_per_beam(name, width):
    with pytest.raises(ConfigError, match=rf"at least 4 samples, .*{width}=4.* the budget is samples=3"):
        make_strategy(name, **{width: 4}).run(
            PROMPT, StepStub(one_marked_per_call(2)), MarkerVerifier(), Budget(samples=3), 0
        )


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown strategy 'beam'.*beam_search"):
        make_strategy("beam")


def budgets():
    limits = st.tuples(
        st.none() | st.integers(0, 24),
        st.none() | st.integers(0, 4000),
        st.none() | st.floats(0, 1.2e7, allow_nan=False),
    ).filter(lambda t: any(v is not None for v in t))
    return limits.map(lambda t: Budget(samples=t[0], tokens=t[1], flops=t[2]))


def ample(budget: Budget) -> bool:
    """Enough for the first round of any strategy at its defaults on the stubs."""
    return (
        (budget.samples is None or budget.samples >= 4)
        and (budget.tokens is None or budget.tokens >= 1400)
        and (budget.flops is None or budget.flops >= 4.5e6)
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=budgets(), seed=st.integers(0, 2**31), depth=st.integers(1, 6))
def test_no_strategy_ever_exceeds_its_budget(budget, seed, depth):
    for name in sorted(STRATEGIES):
        stub, stub_v = StepStub(one_marked_per_call(depth), num_params=2000), MarkerVerifier(num_params=1000)
        try:
            result = make_strategy(name).run(PROMPT, stub, stub_v, budget, seed)
        except ConfigError as exc:
            message = str(exc)
            assert f"strategy '{name}' needs a budget of at least" in message
            assert message.endswith(f"the budget is {budget.describe()}")
            assert not ample(budget), message
            assert stub.calls == []
            continue
        c = result.compute
        assert budget.exceeded_by(c) == [], (name, budget)
        # The report is what the models really ran.
        assert c.policy_completion_tokens == stub.completion_tokens
        assert c.policy_prompt_tokens == sum(len(p) + 1 for ps, _ in stub.calls for p in ps)
        scored = [s for call in stub_v.calls for s in call]
        assert c.verifier_tokens == sum(len(PROMPT) + len(s) + 1 for s in scored)
        assert (
            c.policy_flops == 2 * 2000 * c.policy_tokens and c.verifier_flops == 2 * 1000 * c.verifier_tokens
        )
        assert result.answer in {cand.answer for cand in result.candidates} | {None}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    samples=st.none() | st.integers(4, 8),
    tokens=st.none() | st.integers(1500, 4000),
    seed=st.integers(0, 1000),
)
def test_no_strategy_exceeds_its_budget_on_the_tiny_models(flat_generator, verifier, samples, tokens, seed):
    budget = Budget(samples=samples, tokens=tokens) if samples or tokens else Budget(samples=4)
    for name in sorted(STRATEGIES):
        params = {"max_step_tokens": 48} if name in SEARCHES else {}
        try:
            result = make_strategy(name, **params).run(
                PROMPT, flat_generator, verifier if name in NEEDS_VERIFIER else None, budget, seed
            )
        except ConfigError as exc:
            assert "needs a budget of at least" in str(exc)
            continue
        assert budget.exceeded_by(result.compute) == [], (name, budget)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_same_seed_same_result_on_the_tiny_models(flat_generator, verifier, name):
    params = {"max_step_tokens": 64} if name in SEARCHES else {}
    runs = [
        make_strategy(name, **params).run(
            PROMPT, flat_generator, verifier if name in NEEDS_VERIFIER else None, Budget(samples=8), seed
        )
        for seed in (7, 7, 8)
    ]
    a, b, other = runs
    assert (a.answer, a.candidates, a.compute, a.trace) == (b.answer, b.candidates, b.compute, b.trace)
    if name not in {"greedy", "budget_forcing"}:  # both decode greedily by default
        assert [c.text for c in a.candidates] != [c.text for c in other.candidates]


@pytest.mark.parametrize("name", SEARCHES)
def test_search_on_the_tiny_models_reuses_prefixes_and_counts_what_ran(flat_generator, verifier, name):
    calls = []

    class Recording:
        num_params = flat_generator.num_params
        context_length = flat_generator.context_length
        count_prompt_tokens = staticmethod(flat_generator.count_prompt_tokens)

        def generate(self, prompts, params):
            out = flat_generator.generate(prompts, params)
            calls.append((prompts, params, flat_generator.last_usage))
            return out

    result = make_strategy(name, max_step_tokens=64, n=8, **({"branching": 2} if name == "dvts" else {})).run(
        PROMPT, Recording(), verifier, Budget(tokens=6000), 3
    )
    c = result.compute
    assert c.policy_prompt_tokens == sum(u.prompt_tokens for _, _, u in calls)
    assert c.policy_completion_tokens == sum(u.completion_tokens for _, _, u in calls)
    assert c.policy_tokens + c.verifier_tokens <= 6000
    texts = {cand.text for cand in result.candidates}
    for prompts, params, _ in calls:
        for p in prompts:
            # Every prompt is the question plus a path the search produced (or the bare question).
            assert p == PROMPT or p[len(PROMPT) :] in texts or params.temperature == 0
    assert all(cand.score is None or 0.0 <= cand.score <= 1.0 for cand in result.candidates)
    assert result.trace and result.trace[-1] != ""


# --- other datasets' answer formats -----------------------------------------------------------------


class BoxedStub(StepStub):
    """A MATH-style writer: two plain steps, then "So it is \\boxed{7}." and the end of its text (no
    ``A:`` line), as real models answer MATH problems."""

    def __init__(self) -> None:
        def choose(lines, i, n, rng, greedy):
            return f"step {len(lines)}{MARK if i == 0 else ''}" if len(lines) < 2 else "So it is \\boxed{7}."

        super().__init__(choose)

    def _continue(self, lines, i, params, rng):
        line = self.chooser(lines, i, params.n, rng, params.temperature == 0)
        if "\\boxed" in line:
            return line, "eos"
        if params.stop_at_step:
            return line + "\n", "stop"
        return line + "\n" + self._continue([*lines, line], i, params, rng)[0], "eos"


@pytest.mark.parametrize("name", [*SEARCHES, "mcts"])
def test_step_search_answers_in_a_datasets_own_format(name):
    """With MATH's answer format in force, a path the model ends with a readable final answer is
    answered; the built-in task's rule (an A: line) would leave every such path unanswered."""
    from ponder.eval.datasets import AnswerFormat

    with AnswerFormat("math").strategy_context():
        result = make_strategy(name).run(PROMPT, BoxedStub(), MarkerVerifier(), Budget(samples=4), seed=0)
    assert result.answer == "7"
    assert any(c.answer == "7" and not c.partial for c in result.candidates)
    builtin = make_strategy(name).run(PROMPT, BoxedStub(), MarkerVerifier(), Budget(samples=4), seed=0)
    assert builtin.answer is None
