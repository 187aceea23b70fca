"""``ponder ttt``: test-time fine-tuning from the command line, on the shipped policy."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from ponder.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def test_ttt_prints_the_selection_the_answer_and_the_compute():
    result = run("ttt", "48+27-13", "--k", "3", "--corpus-per-level", "5")
    assert result.exit_code == 0, result.output
    assert "selected 3 of 25 examples (sift)" in result.output
    assert len(re.findall(r"posterior variance after: \d\.\d{3}", result.output)) == 3
    assert re.search(r"answer: (\d+|None)", result.output)
    assert re.search(r"fine-tuning: 3 steps, \d+ tokens", result.output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "30", "--corpus-per-level", "5"], "k=30 is larger than the corpus (25 examples)"),
        (["--select", "bayes"], "select must be one of"),
        (["--corpus", "/nonexistent/corpus.jsonl"], "corpus file /nonexistent/corpus.jsonl does not exist"),
        (["--embedder", "glove"], "unknown embedder 'glove'"),
    ],
)
def test_ttt_bad_input_is_one_clear_line(args, message):
    result = run("ttt", "12+5", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
