"""The ``ponder`` command on the shipped embedded models: output, and clear errors for bad input."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from ponder.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


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
        (["solve", "1+2", "--tokens", "-5"], "tokens must be >= 0"),
        (["solve", "1+2", "--tokens", "10"], "needs a budget of at least 1 sample"),
        (["solve", "1+2", "--strategy", "beam_search", "--samples", "2"], "at least 4 samples"),
    ],
)
def test_bad_input_is_one_clear_line_not_a_traceback(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "limits"),
    [
        (["--strategy", "beam_search", "--tokens", "4000"], "tokens=4000"),
        (["--strategy", "dvts", "--samples", "8", "--flops", "2e9"], "samples=8, flops=2e+09"),
        (
            ["--strategy", "adaptive_majority", "--tokens", "3000", "--samples", "12"],
            "samples=12, tokens=3000",
        ),
    ],
)
def test_solve_keeps_to_token_and_flops_budgets(args, limits):
    result = run("solve", "48+27-13", *args, "--trace")
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert re.search(r"answer: (\d+|None)", output)
    assert f"budget: {limits}" in output
    m = re.search(
        r"compute: (\d+) samples, (\d+) policy tokens, (\d+) verifier tokens, ([\d.]+) GFLOPs", output
    )
    samples, policy, verifier, gflops = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    if "tokens=" in limits:
        assert policy + verifier <= int(limits.split("tokens=")[1].split(",")[0])
    if "samples=" in limits:
        assert samples <= int(limits.split("samples=")[1].split(",")[0])
    if "flops=" in limits:
        assert gflops <= 2.0
    assert "stopped:" in output  # the search / adaptive trace is printed


def test_demo_reports_accuracy_and_compute_per_strategy():
    result = run("demo", "--n-per-level", "1", "--samples", "2")
    assert result.exit_code == 0, result.output
    for name in ("greedy", "majority", "best_of_n", "weighted_best_of_n"):
        assert name in result.output
    assert "GFLOPs" in result.output and "tokens" in result.output and "compute per problem" in result.output


def test_missing_weights_are_a_clear_error(tmp_path):
    result = run("train", "rollouts", "--policy", str(tmp_path / "none.safetensors"), "--n-problems", "1")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_train_checker_names_what_is_missing(tmp_path):
    result = run(
        "train",
        "checker",
        "--samples",
        str(tmp_path / "none.jsonl"),
        "--policy",
        str(tmp_path / "p.safetensors"),
    )
    assert result.exit_code != 0
    assert "no policy weights" in result.output and "Traceback" not in result.output
    from ponder.training.weights import policy_path

    result = run(
        "train", "checker", "--samples", str(tmp_path / "none.jsonl"), "--policy", str(policy_path())
    )
    assert result.exit_code != 0
    assert "--label checked" in result.output and "Traceback" not in result.output
