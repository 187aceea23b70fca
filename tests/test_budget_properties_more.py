"""Property tests: MCTS, revision and budget forcing never exceed any budget, for any seed and any
of their parameters, and report exactly what their stub models ran (the registry-wide property
test in test_search_strategies.py covers them at their defaults)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from scripted_stubs import OPEN, RecordingVerifier, RevisionStub, ThinkStub
from stubs import PROMPT, MarkerVerifier, StepStub, one_marked_per_call


def budgets():
    limits = st.tuples(
        st.none() | st.integers(0, 24),
        st.none() | st.integers(0, 4000),
        st.none() | st.floats(0, 1.2e7, allow_nan=False),
    ).filter(lambda t: any(v is not None for v in t))
    return limits.map(lambda t: Budget(samples=t[0], tokens=t[1], flops=t[2]))


def check(result, budget, stub, scored):
    c = result.compute
    assert budget.exceeded_by(c) == [], budget
    assert c.policy_completion_tokens == stub.completion_tokens
    assert c.policy_prompt_tokens == sum(len(p) + 1 for ps, _ in stub.calls for p in ps)
    assert c.verifier_tokens == sum(len(p) + len(s) + 1 for p, s in scored)
    assert c.policy_flops == 2 * 2000 * c.policy_tokens and c.verifier_flops == 2 * 1000 * c.verifier_tokens
    assert result.answer in {cand.answer for cand in result.candidates} | {None}


def refused(exc: ConfigError, name: str, budget: Budget, stub) -> None:
    message = str(exc)
    assert f"strategy '{name}' needs a budget of at least" in message
    assert message.endswith(f"the budget is {budget.describe()}")
    assert stub.calls == []


class Recorded(MarkerVerifier):
    """MarkerVerifier that also keeps the (prompt, solution) pairs, for the accounting check."""

    def __init__(self) -> None:
        super().__init__(num_params=1000)
        self.pairs: list[tuple[str, str]] = []

    def score(self, prompts, solutions):
        self.pairs.extend(zip(prompts, solutions))
        return super().score(prompts, solutions)


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    budget=budgets(),
    seed=st.integers(0, 2**31),
    depth=st.integers(1, 6),
    branching=st.integers(1, 5),
    rollout=st.integers(0, 2),
    selection=st.sampled_from(["puct", "uct"]),
    step=st.integers(4, 24),
)
def test_mcts_never_exceeds_its_budget(budget, seed, depth, branching, rollout, selection, step):
    stub, verifier = StepStub(one_marked_per_call(depth), num_params=2000), Recorded()
    strategy = make_strategy(
        "mcts", branching=branching, rollout=rollout, selection=selection, max_step_tokens=step
    )
    try:
        result = strategy.run(PROMPT, stub, verifier, budget, seed)
    except ConfigError as exc:
        refused(exc, "mcts", budget, stub)
        return
    check(result, budget, stub, verifier.pairs)
    if budget.samples is not None:
        assert result.compute.samples <= budget.samples


@SETTINGS
@given(
    budget=budgets(),
    seed=st.integers(0, 2**31),
    chains=st.none() | st.integers(1, 6),
    revisions=st.none() | st.integers(1, 6),
    context=st.none() | st.integers(60, 300),
    max_new=st.integers(8, 60),
    selection=st.sampled_from(["weighted", "majority", "best"]),
)
def test_revision_never_exceeds_its_budget(budget, seed, chains, revisions, context, max_new, selection):
    stub = RevisionStub(num_params=2000, context_length=context)
    verifier = RecordingVerifier(num_params=1000)
    strategy = make_strategy(
        "revision", chains=chains, revisions=revisions, max_new_tokens=max_new, selection=selection
    )
    try:
        result = strategy.run(PROMPT, stub, verifier, budget, seed)
    except ConfigError as exc:
        refused(exc, "revision", budget, stub)
        return
    check(result, budget, stub, verifier.seen)
    assert {p for p, _ in verifier.seen} == {PROMPT}  # scored against the original prompt
    n_chains, n_revisions = strategy.plan(budget)
    assert result.compute.samples <= n_chains * n_revisions


@SETTINGS
@given(
    budget=budgets(),
    seed=st.integers(0, 2**31),
    think_chars=st.integers(0, 80),
    low=st.integers(0, 120),
    extra=st.integers(0, 120),
    max_extensions=st.integers(0, 4),
    answer_tokens=st.integers(1, 40),
    honour=st.booleans(),
)
def test_budget_forcing_never_exceeds_its_budget(
    budget, seed, think_chars, low, extra, max_extensions, answer_tokens, honour
):
    stub = ThinkStub(think_chars=think_chars, honour_stop=honour, num_params=2000)
    strategy = make_strategy(
        "budget_forcing",
        think_start=OPEN,
        min_thinking_tokens=low,
        max_thinking_tokens=low + extra,
        max_extensions=max_extensions,
        max_answer_tokens=answer_tokens,
    )
    try:
        result = strategy.run(PROMPT, stub, None, budget, seed)
    except ConfigError as exc:
        refused(exc, "budget_forcing", budget, stub)
        return
    check(result, budget, stub, [])
    (summary,) = [line for line in result.trace if line.startswith("thinking: ")]
    assert int(summary.split()[1]) <= low + extra  # the cap holds
    assert stub.calls[-1][0][0].count("Wait") <= max_extensions
    assert result.compute.samples == 1
