"""The word-problem generator: deterministic draws, answers that follow from each template's values,
worked solutions whose every equation holds, disjoint splits, the JSONL file read back by the eval
loader (GSM8K format), the shipped file and its packaging, and the chat revision prompt."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

from ponder.errors import ConfigError
from ponder.eval.datasets import AnswerFormat, load_dataset
from ponder.strategies import Budget, make_strategy
from ponder.strategies.revision import chat_revision_prompt
from ponder.tasks.word_problems import (
    SPLITS,
    TEMPLATES,
    data_path,
    make_split,
    split_of,
    to_jsonl,
    write_jsonl,
)
from scripted_stubs import RecordingVerifier, RevisionStub

ROOT = Path(__file__).resolve().parents[1]
EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def evaluate(formula: str, values: dict[str, int]) -> Fraction:
    """``formula`` (+ - * / over names and integers) computed exactly, independently of the generator."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.Name):
            return Fraction(values[node.id])
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if isinstance(node.op, ast.Div):
                return a / b
            return ops[type(node.op)]
        raise AssertionError(f"unexpected syntax in formula {formula!r}: {ast.dump(node)}")

    return walk(ast.parse(formula, mode="eval"))


@pytest.fixture(scope="module")
def shipped():
    return make_split("test", 64, seed=0)


def test_same_seed_same_problems_and_prefixes_are_stable():
    a, b = make_split("test", 40, seed=3), make_split("test", 40, seed=3)
    assert a == b
    assert make_split("test", 12, seed=3) == a[:12]  # the first k do not depend on n
    other = make_split("test", 40, seed=4)
    assert [p.question for p in other] != [p.question for p in a]


@pytest.mark.parametrize(("split", "seed"), [("test", 0), ("dev", 1), ("train", 7)])
def test_answers_follow_from_the_templates_values_and_every_step_holds(split, seed):
    problems = make_split(split, 80, seed=seed)
    for p in problems:
        formula = TEMPLATES[p.template][1]
        assert p.formula == formula
        expected = evaluate(formula, p.values)
        assert expected.denominator == 1 and expected >= 0, p
        assert p.answer == int(expected), p
        # Each operation of the worked solution is a true equation; their count is the level.
        lines = p.solution.split("\n")
        assert lines[-1] == f"#### {p.answer}"
        equations = EQUATION.findall(p.solution)
        assert len(equations) == p.level == len(lines) - 1, p.solution
        for a, op, b, r in equations:
            x, y = Fraction(int(a)), Fraction(int(b))
            assert {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op] == int(r), p.solution
        assert int(equations[-1][3]) == p.answer  # the last step gives the answer
        # Every number the template drew is one the question or solution states (bar constants
        # such as legs per animal or a fraction written in words).
        stated = set(re.findall(r"\d+", p.question))
        assert {str(v) for k, v in p.values.items() if k not in ("a_legs", "b_legs", "denom")} <= stated


def test_problems_cycle_through_the_templates_and_cover_every_difficulty(shipped):
    names = list(TEMPLATES)
    assert [p.template for p in shipped] == [names[i % len(names)] for i in range(64)]
    assert {p.level for p in shipped} == {1, 2, 3, 4}
    assert [p.id for p in shipped] == [f"wp-test-{i:03d}" for i in range(64)]


def test_splits_are_disjoint_and_hold_no_duplicates():
    questions = {}
    for split in SPLITS:
        problems = make_split(split, 64, seed=0) + make_split(split, 64, seed=1)
        assert all(split_of(p.question) == split for p in problems)
        one_seed = [p.question for p in problems[:64]]
        assert len(set(one_seed)) == len(one_seed)
        questions[split] = {p.question for p in problems}
    assert not questions["train"] & questions["dev"]
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        make_split("val", 4)
    with pytest.raises(ConfigError, match="n must be a positive whole number, got 0"):
        make_split("test", 0)
    with pytest.raises(ConfigError, match=r"unknown template\(s\) \['nope'\]"):
        make_split("test", 4, templates=["ages", "nope"])
    with pytest.raises(ConfigError, match="templates is empty"):
        make_split("test", 4, templates=[])


def test_jsonl_round_trips_through_the_eval_loader_in_gsm8k_format(tmp_path):
    problems = make_split("dev", 20, seed=5)
    path = write_jsonl(tmp_path / "sub" / "wp.jsonl", n=20, seed=5, split="dev")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in records] == [p.id for p in problems]
    for fmt in ("gsm8k", "auto"):
        data = load_dataset(str(path), answer_format=fmt, prompt_template="Q: {question}\nA:")
        assert data.answer_format == "gsm8k"
        assert [e.id for e in data.problems] == [p.id for p in problems]
        assert [e.question for e in data.problems] == [p.question for p in problems]
        assert [e.answer for e in data.problems] == [str(p.answer) for p in problems]
        assert [e.level for e in data.problems] == [p.level for p in problems]
        assert data.problems[0].prompt == f"Q: {problems[0].question}\nA:"
    # The reference solution is graded right, and one with another final answer wrong.
    gsm8k = AnswerFormat("gsm8k")
    for p in problems:
        assert gsm8k.is_correct(gsm8k.key(p.solution), str(p.answer))
        assert not gsm8k.is_correct(gsm8k.key(f"... #### {p.answer + 1}"), str(p.answer))
    assert len(load_dataset(str(path), answer_format="gsm8k", limit=3).problems) == 3


def test_the_shipped_file_is_the_generators_output_and_is_packaged(shipped):
    path = data_path()
    assert path == ROOT / "src/ponder/tasks/data/word_problems.jsonl"
    assert path.read_text(encoding="utf-8") == to_jsonl(shipped)
    assert len(load_dataset(str(path), answer_format="gsm8k").problems) == 64
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license_name = pyproject["project"]["license"]["text"]
    readme = (path.parent / "README.md").read_text()
    assert license_name in readme and "written for ponder" in readme
    patterns = pyproject["tool"]["setuptools"]["package-data"]["ponder.tasks"]
    shipped_files = {f.name for pattern in patterns for f in (ROOT / "src/ponder/tasks").glob(pattern)}
    assert shipped_files == {"word_problems.jsonl", "README.md"}


def test_the_module_writes_a_file_from_the_command_line(tmp_path, capsys):
    from ponder.tasks.word_problems import main

    main(["--out", str(tmp_path / "wp.jsonl"), "--n", "5", "--seed", "2", "--split", "train"])
    assert (tmp_path / "wp.jsonl").read_text() == to_jsonl(make_split("train", 5, seed=2))
    assert "wrote 5 problems" in capsys.readouterr().out


class ChatRevisionStub(RevisionStub):
    """A chat backend: records which prompts go out as new questions and which as continuations."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: list[tuple[list[str], list[str]]] = []

    def generate_continuations(self, questions, responses, params):
        self.turns.append((list(questions), list(responses)))
        return self.generate([q + r for q, r in zip(questions, responses)], params)


def test_chat_revision_prompts_go_out_as_new_user_turns_showing_earlier_attempts():
    prompt = make_split("test", 1)[0].question + '\nEnd with "The answer is: <number>".'
    assert chat_revision_prompt(prompt, []) == prompt
    text = chat_revision_prompt(prompt, ["first try\nThe answer is: 3", "second try"])
    assert not text.startswith(prompt) and prompt.strip() in text
    assert text.index("first try") < text.index("second try")
    stub = ChatRevisionStub()
    result = make_strategy("revision_chat", chains=1, revisions=3, context_attempts=3).run(
        prompt, stub, RecordingVerifier(), Budget(samples=3), 0
    )
    assert len(stub.turns) == 3 and stub.turns[0] == ([prompt], [""])
    attempts = [c.text for c in result.candidates]
    for j, (questions, responses) in enumerate(stub.turns[1:], 1):
        assert responses == [""]  # a fresh user turn, not a continuation of the model's answer
        assert questions == [chat_revision_prompt(prompt, attempts[:j])]
