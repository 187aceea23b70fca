"""The ``ponder`` command on the shipped embedded models: output, and clear errors for bad input."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from ponder.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_solve_prints_answer_and_compute():
    result = run("solve", "12+5-3", "--strategy", "majority", "--samples", "4")
    assert result.exit_code == 0, result.output
    assert re.search(r"answer: \d+", result.output)
    assert "4 samples" in result.output and "GFLOPs" in result.output


def test_solve_trace_lists_every_candidate_with_scores():
    result = run("solve", "48+27-13", "--strategy", "best_of_n", "--samples", "3", "--trace")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if re.match(r"^\S*\s*[0-2]\s", line.strip("│ "))]
    assert len(rows) >= 3
    assert re.search(r"0\.\d{3}", result.output)  # verifier scores shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", ""], "question is empty"),
        (["solve", "abc"], "not a chain"),
        (["solve", "5-9"], "below zero"),
        (["solve", "1+2", "--strategy", "nope"], "unknown strategy 'nope'"),
        (["solve", "1+2", "--samples", "0"], "at least 1"),
    ],
)
def test_bad_input_is_one_clear_line_not_a_traceback(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_demo_reports_accuracy_and_compute_per_strategy():
    result = run("demo", "--n-per-level", "1", "--samples", "2")
    assert result.exit_code == 0, result.output
    for name in ("greedy", "majority", "best_of_n", "weighted_best_of_n"):
        assert name in result.output
    assert "GFLOPs/problem" in result.output


def test_missing_weights_are_a_clear_error(tmp_path):
    result = run("train", "rollouts", "--policy", str(tmp_path / "none.safetensors"), "--n-problems", "1")
    assert result.exit_code == 2
    assert "does not exist" in result.output
