"""LLM-as-judge over any ponder Generator, answer checkers, unit tests for code answers (passing,
failing, runaway and memory-hungry programs), the verifier spec loader, and ``--verifier`` /
``ponder.solve(verifier=...)``."""

from __future__ import annotations

import math
import re

import pytest
from typer.testing import CliRunner

import ponder
from ponder.backends.base import Completion, SamplingParams
from ponder.cli import app
from ponder.errors import ConfigError
from ponder.strategies import Budget, make_strategy
from ponder.tasks import parse_question
from ponder.verifiers.base import Verifier
from ponder.verifiers.checkers import AnswerCheckVerifier, builtin_answer, final_answer_text
from ponder.verifiers.code_tests import CodeTests, CodeTestVerifier, assemble_program
from ponder.verifiers.judge import OUTCOME_TEMPLATE, JudgeVerifier, yes_probability
from ponder.verifiers.spec import check_spec, load_verifier, parse_spec
from stubs import PROMPT

PROBLEM = parse_question("48+27-13")


class JudgeStub:
    """Answers every question with one token; P(yes) is 0.9 when the text shows "=57", else 0.2.
    With ``top`` it returns top log-probs (spread over spellings), else the emitted token only."""

    def __init__(self, top: bool = True, num_params: int = 300) -> None:
        self.top, self._num_params = top, num_params
        self.calls: list[tuple[list[str], SamplingParams]] = []

    @property
    def num_params(self) -> int:
        return self._num_params

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(prompt) + 1

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            py = 0.9 if "=57" in p.split("Is the")[0].rsplit("\n\n", 2)[-2] else 0.2
            top = [{" Yes": math.log(py * 0.75), "yes": math.log(py * 0.25), "No": math.log((1 - py) * 0.9)}]
            word = " Yes" if py > 0.5 else "No"
            c = Completion(
                text=word,
                token_ids=[7],
                logprobs=[top[0][word]],
                finish_reason="length",
                prompt_tokens=len(p) + 1,
                top_logprobs=top if self.top else None,
            )
            out.append([c])
        return out


# --- LLM-as-judge over a Generator ----------------------------------------------------------------


def test_judge_scores_the_probability_of_yes_from_top_logprobs():
    stub = JudgeStub()
    judge = JudgeVerifier(stub)
    assert isinstance(judge, Verifier) and judge.num_params == 300
    right, wrong, empty = judge.score([PROMPT] * 3, ["84+72=57\nA:57", "84+72=56\nA:56", ""])
    # P(yes) / (P(yes) + P(no)) with "No" at 0.9 of the no-mass: 0.9 / (0.9 + 0.09).
    assert (
        right.step_scores == pytest.approx([0.9 / (0.9 + 0.1 * 0.9)])
        and right.outcome == right.step_scores[0]
    )
    assert wrong.step_scores == pytest.approx([0.2 / (0.2 + 0.8 * 0.9)])
    assert empty.step_scores == [] and empty.tokens == 0
    # Budget planning adds what scoring an empty solution would cost to every text it plans for.
    assert (
        judge.count_tokens(PROMPT, "")
        == len(OUTCOME_TEMPLATE.format(question=PROMPT.strip(), solution="")) + 2
    )
    prompts, params = stub.calls[0]
    assert len(prompts) == 2 and "Is the solution correct? Answer Yes or No." in prompts[0]
    assert (params.n, params.temperature, params.max_new_tokens, params.top_logprobs) == (1, 0.0, 1, 20)
    for s, sol in zip((right, wrong), ("84+72=57\nA:57", "84+72=56\nA:56")):
        assert s.tokens == judge.count_tokens(PROMPT, sol) == len(prompts[0 if s is right else 1]) + 2


def test_judge_without_top_logprobs_reads_the_emitted_token():
    judge = JudgeVerifier(JudgeStub(top=False))
    right, wrong = judge.score([PROMPT] * 2, ["84+72=57\nA:57", "84+72=56\nA:56"])
    assert right.step_scores == pytest.approx([0.9 * 0.75])  # said " Yes" with that probability
    assert wrong.step_scores == pytest.approx([1 - 0.8 * 0.9])  # said "No": the rest counts as yes
    odd = Completion(text="Maybe", token_ids=[1], logprobs=[-0.1], finish_reason="length", prompt_tokens=3)
    assert yes_probability(odd) == 0.5 and yes_probability(odd, undecided=0.0) == 0.0


def test_step_judge_asks_once_per_step_about_the_solution_so_far():
    stub = JudgeStub()
    judge = JudgeVerifier(stub, mode="steps")
    s = judge.score([PROMPT], ["84+72=57\n57-31=26\nA:26"])[0]
    assert len(s.step_scores) == 3 and s.outcome is None
    prompts = stub.calls[0][0]
    assert [p.count("\n", p.index("Steps so far:"), p.index("Is the last")) for p in prompts] == [3, 4, 5]
    assert prompts[1].split("Steps so far:\n")[1].startswith("84+72=57\n57-31=26\n\n")
    assert s.tokens == judge.count_tokens(PROMPT, "84+72=57\n57-31=26\nA:26")


def test_judge_runs_on_a_real_generator_within_a_budget(generator):
    # The tiny embedded model's context is 128 characters: short questions and solutions.
    judge = JudgeVerifier(generator, template="{question}\n{solution}\nok?")
    result = make_strategy("best_of_n", max_new_tokens=24).run(PROMPT, generator, judge, Budget(samples=3), 0)
    scores = [c.score for c in result.candidates]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.compute.verifier_flops == pytest.approx(
        2 * generator.num_params * result.compute.verifier_tokens
    )


def test_judge_rejects_bad_settings():
    with pytest.raises(ConfigError, match="unknown judge mode 'both'"):
        JudgeVerifier(JudgeStub(), mode="both")
    with pytest.raises(ConfigError, match="needs a ponder Generator"):
        JudgeVerifier(object())
    with pytest.raises(ConfigError, match="must contain"):
        JudgeVerifier(JudgeStub(), template="Is it right?")


# --- answer checkers ----------------------------------------------------------------------------


def test_builtin_oracle_computes_the_answer_from_the_prompt():
    assert builtin_answer(PROBLEM.prompt) == 62 and builtin_answer("What is 2+2?") is None
    v = AnswerCheckVerifier()
    wrong = PROBLEM.solution.replace("A:26", "A:36")
    partial = PROBLEM.solution.split("A:")[0]
    scores = v.score([PROBLEM.prompt] * 3, [PROBLEM.solution, wrong, partial])
    assert [s.outcome for s in scores] == [1.0, 0.0, 0.5]
    assert all(s.step_scores == [s.outcome] and s.tokens == 0 for s in scores) and v.num_params == 0


def test_reference_answers_in_each_match_mode():
    q = "How many apples?"
    assert AnswerCheckVerifier("1000").check(q, "So she has $1,000.\n#### 1,000") == 1.0
    assert AnswerCheckVerifier("62").check(q, "The answer is 61.") == 0.0
    assert AnswerCheckVerifier("62").check(q, "Let me think") == 0.5  # no number yet: pending
    assert (
        AnswerCheckVerifier("Paris", match="exact").check(q, "It is the capital.\nThe answer is paris.")
        == 1.0
    )
    assert AnswerCheckVerifier("Paris", match="exact").check(q, "The answer is Lyon") == 0.0
    assert final_answer_text("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    pytest.importorskip("math_verify")
    assert AnswerCheckVerifier("\\frac{1}{2}", match="math").check(q, "Half: \\boxed{0.5}") == 1.0
    assert AnswerCheckVerifier("\\frac{1}{2}", match="math").check(q, "\\boxed{\\frac{1}{3}}") == 0.0


def test_references_by_prompt_and_missing_references():
    v = AnswerCheckVerifier(references={"q1": "3", "q2": "4"})
    assert [s.outcome for s in v.score(["q1", "q2"], ["#### 3", "#### 3"])] == [1.0, 0.0]
    with pytest.raises(ConfigError, match="no reference answer for the prompt 'q3'"):
        v.score(["q3"], ["#### 3"])
    with pytest.raises(ConfigError, match="unknown answer match 'fuzzy'"):
        AnswerCheckVerifier("3", match="fuzzy")


def test_user_checker_functions():
    v = AnswerCheckVerifier(checker=lambda prompt, solution: "57" in solution)
    assert [s.outcome for s in v.score([PROMPT] * 2, ["84+72=57", "84+72=56"])] == [1.0, 0.0]
    assert AnswerCheckVerifier(checker=lambda p, s: 1.7).check(PROMPT, "x") == 1.0  # clipped

    def broken(prompt, solution):
        raise KeyError("answer")

    with pytest.raises(ConfigError, match="answer checker broken failed on a solution: KeyError"):
        AnswerCheckVerifier(checker=broken).score([PROMPT], ["x"])


# --- unit tests for code answers ----------------------------------------------------------------

CODE_PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'
CODE_TEST = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n    assert candidate([]) == 0\n"


def test_code_answers_pass_fail_time_out_or_run_out_of_memory():
    v = CodeTestVerifier(CodeTests(CODE_TEST), timeout_s=3.0, memory_mb=256, workers=2)
    solutions = [
        "    return sum(xs)\n",  # a HumanEval completion of the prompt's function
        "Here you go:\n```python\ndef total(xs: List[int]) -> int:\n    return sum(x for x in xs)\n```",
        "    return len(xs)\n",
        "    while True:\n        pass\n",
        "    hog = bytearray(4 * 1024 ** 3)\n    return sum(xs)\n",
        "    hog = []\n    while True:\n        hog.append(' ' * 10 ** 7)\n",
        "    return sum(xs\n",
        "",
    ]
    scores = v.score([CODE_PROMPT] * len(solutions), solutions)
    assert [s.outcome for s in scores] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [r.status for r in v.last_runs] == [
        "passed",
        "passed",
        "failed",
        "timeout",
        "memory",
        "memory",
        "failed",
        "no_code",
    ]
    assert v.last_runs[2].detail == "AssertionError" and "SyntaxError" in v.last_runs[6].detail
    assert all(s.tokens == 0 for s in scores) and v.num_params == 0


def test_a_full_function_gets_the_prompts_imports_and_the_tests_call_check():
    program = assemble_program(
        CODE_PROMPT, "```py\ndef total(xs):\n    return sum(xs)\n```", CodeTests(CODE_TEST)
    )
    assert program.startswith("from typing import List\n\ndef total(xs):")
    assert program.rstrip().endswith("check(total)")
    with pytest.raises(ConfigError, match="no entry point"):
        assemble_program("Write a function.", "x = 1", CodeTests(CODE_TEST))
    assert "check(f)" in assemble_program("Write f.", "def f(): pass", CodeTests(CODE_TEST, entry_point="f"))


def test_code_tests_spec(tmp_path):
    tests = tmp_path / "tests.py"
    tests.write_text(CODE_TEST)
    v = load_verifier(f"code-tests:{tests}?timeout=2&memory_mb=300")
    assert isinstance(v, CodeTestVerifier) and (v.timeout_s, v.memory_mb) == (2.0, 300)
    assert v.score([CODE_PROMPT], ["    return sum(xs)\n"])[0].outcome == 1.0
    with pytest.raises(ConfigError, match="code tests file not found"):
        load_verifier(f"code-tests:{tmp_path / 'none.py'}")
    (tmp_path / "bad.py").write_text("assert True\n")
    with pytest.raises(ConfigError, match="defines no check"):
        load_verifier(f"code-tests:{tmp_path / 'bad.py'}")
    with pytest.raises(ConfigError, match="memory limit must be at least 32 MB"):
        load_verifier(f"code-tests:{tests}?memory_mb=1")


# --- specs ----------------------------------------------------------------------------------------


def test_spec_syntax():
    assert parse_spec("hf-prm+qwen:/m?x=1") == ("hf-prm", "qwen", "/m?x=1")
    assert parse_spec("answer-check") == ("answer-check", None, "")
    assert parse_spec("vllm-reward://h:1/m") == ("vllm-reward", None, "//h:1/m")
    for bad in ("", "   ", "prm:/x", "HF-PRM:/x"):
        with pytest.raises(ConfigError, match="verifier spec"):
            parse_spec(bad)
    check_spec("hf-prm+shepherd:/anywhere")  # syntax only: nothing loaded
    with pytest.raises(ConfigError, match=r"unknown hf-prm variant \+llama"):
        check_spec("hf-prm+llama:/x")
    with pytest.raises(ConfigError, match=r"takes no \+x variant"):
        check_spec("hf-orm+x:/x")


def test_answer_check_checker_and_judge_specs(tmp_path):
    assert isinstance(load_verifier("answer-check"), AnswerCheckVerifier)
    v = load_verifier("answer-check+exact:Paris")
    assert (v.reference, v.match) == ("Paris", "exact")
    assert load_verifier("answer-check:62").check("q", "#### 62") == 1.0
    with pytest.raises(ConfigError, match="needs a reference"):
        load_verifier("answer-check+number")
    module = tmp_path / "my_checks.py"
    module.write_text("def has_57(prompt, solution):\n    return '57' in solution\n")
    checker = load_verifier(f"checker:{module}:has_57")
    assert checker.check(PROMPT, "84+72=57") == 1.0
    for bad, message in (
        (f"checker:{module}:missing", "has no function 'missing'"),
        (f"checker:{tmp_path / 'none.py'}:f", "checker file not found"),
        ("checker:no_such_module_xyz:f", "cannot import the checker module 'no_such_module_xyz'"),
        ("checker:justaname", "must be checker:package.module:function"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_verifier(bad)
    judge = load_verifier("judge+steps:embedded")
    assert isinstance(judge, JudgeVerifier) and judge.mode == "steps"
    with pytest.raises(ConfigError, match="names no model"):
        load_verifier("judge:")
    with pytest.raises(ConfigError, match="unknown backend spec"):
        load_verifier("judge:nowhere://x")
    with pytest.raises(ConfigError, match="embedded verifier: no verifier weights"):
        load_verifier(f"embedded:{tmp_path / 'none.safetensors'}")


# --- ponder.solve(verifier=...) and ponder solve --verifier ---------------------------------------------


def test_solve_with_a_verifier_spec_or_object():
    result = ponder.solve("48+27-13", strategy="best_of_n", samples=3, verifier="answer-check")
    for c in result.candidates:
        assert c.score == (1.0 if c.answer == 62 else 0.0 if c.answer is not None else 0.5)
    result = ponder.solve(
        "48+27-13", strategy="best_of_n", samples=2, verifier=AnswerCheckVerifier(checker=lambda p, s: 0.25)
    )
    assert [c.score for c in result.candidates] == [0.25, 0.25]
    with pytest.raises(ConfigError, match="verifier must be a verifier spec string or a Verifier"):
        ponder.solve("48+27-13", strategy="best_of_n", samples=2, verifier=42)
    # A strategy without a verifier loads none, but a malformed spec is still refused.
    ponder.solve("48+27-13", strategy="greedy", samples=1, verifier="hf-prm:/nowhere")
    with pytest.raises(ConfigError, match="unknown verifier spec 'bogus'"):
        ponder.solve("48+27-13", strategy="greedy", samples=1, verifier="bogus")


def test_cli_verifier_option():
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "solve",
            "48+27-13",
            "--strategy",
            "best_of_n",
            "--samples",
            "2",
            "--verifier",
            "answer-check",
            "--trace",
        ],
        env={"COLUMNS": "200"},
    )
    assert ok.exit_code == 0, ok.output
    assert re.search(r"answer: \d+", ok.output) and "0 verifier tokens" in ok.output
    bad = runner.invoke(
        app, ["solve", "48+27-13", "--strategy", "best_of_n", "--verifier", "hf-prm:/nowhere/prm"]
    )
    assert bad.exit_code == 2
    assert "model directory not found: /nowhere/prm" in bad.output and "Traceback" not in bad.output
