"""MCTS, revision and budget forcing through ``ponder.solve`` and ``ponder solve`` on the shipped
models: they run within their budgets, reuse prefixes, and refuse bad input with one clear line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import ponder
from ponder.cli import app
from ponder.errors import ConfigError
from ponder.strategies import Budget

NEW = ["mcts", "revision", "budget_forcing"]


@pytest.mark.parametrize("name", NEW)
def test_solve_runs_each_new_strategy_within_its_budget(name):
    budget = Budget(samples=8, tokens=6000)
    result = ponder.solve("48+27-13", strategy=name, budget=budget, seed=0)
    assert budget.exceeded_by(result.compute) == []
    assert result.candidates and result.trace
    assert result.answer is None or isinstance(result.answer, int)


def test_mcts_on_the_shipped_policy_reuses_its_prefixes():
    result = ponder.solve("48+27-13", strategy="mcts", samples=8, seed=1)
    c = result.compute
    # The default policy keeps a prefix cache: each expansion prefills about one token of its path.
    assert c.policy_cached_tokens > 3 * c.policy_prompt_tokens


@pytest.mark.parametrize("name", NEW)
def test_an_empty_question_is_refused(name):
    with pytest.raises(ConfigError, match="the question is empty"):
        ponder.solve("  ", strategy=name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "", "--strategy", "mcts"], "question is empty"),
        (["solve", "1+2", "--strategy", "mcts", "--samples", "2"], "at least 4 samples"),
        (["solve", "1+2", "--strategy", "revision", "--tokens", "20"], "needs a budget of at least 1 sample"),
        (["solve", "1+2", "--strategy", "budget_forcing", "--tokens", "20"], "needs a budget of at least"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    result = CliRunner().invoke(app, args, catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
