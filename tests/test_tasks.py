"""The built-in arithmetic task: levels, splits, reference solutions, answer reading."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.errors import ConfigError
from ponder.tasks import (
    ANSWER_PREFIX,
    LEVELS,
    SPLITS,
    STEP_DELIMITER,
    Step,
    check_steps,
    decode_number,
    draw_problem,
    encode_number,
    extract_answer,
    is_correct,
    iter_problems,
    level_spec,
    make_split,
    parse_question,
    split_of,
    split_steps,
    to_display,
)
from ponder.tasks.answers import expected_chars, first_slip
from ponder.tasks.arithmetic import number_width

ALL_LEVELS = sorted(LEVELS)


def _evaluate(question: str) -> int:
    tokens = re.findall(r"[+-]?\d+", question)
    return sum(int(t) for t in tokens)


def _digits(spec) -> int:
    return spec.n_ops * number_width(spec.max_value)


# --- levels -------------------------------------------------------------------------------------


def test_there_are_five_levels_of_growing_difficulty():
    assert ALL_LEVELS == [1, 2, 3, 4, 5]
    specs = [LEVELS[lv] for lv in ALL_LEVELS]
    for lv, spec in zip(ALL_LEVELS, specs):
        assert spec.level == lv
        assert spec.n_ops >= 1 and spec.max_value >= 10
    # Each level is at least as hard as the one before: no fewer operations, no smaller numbers,
    # and strictly more digits to get right.
    for easier, harder in zip(specs, specs[1:]):
        assert harder.n_ops >= easier.n_ops and harder.max_value >= easier.max_value
        assert _digits(harder) > _digits(easier)


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_problems_respect_their_level(level):
    spec = LEVELS[level]
    width = number_width(spec.max_value)
    for problem in make_split("train", levels=[level], n_per_level=60, seed=1):
        assert problem.level == level
        assert problem.width == width
        assert len(problem.steps) == spec.n_ops
        for step in problem.steps:
            for value in (step.lhs, step.rhs, step.result):
                assert 1 <= value < spec.max_value
            assert step.result == (step.lhs + step.rhs if step.op == "+" else step.lhs - step.rhs)
        for prev, nxt in zip(problem.steps, problem.steps[1:]):
            assert nxt.lhs == prev.result
        assert problem.answer == problem.steps[-1].result == _evaluate(problem.question)
        assert problem.id.startswith(f"L{level}-")


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_reference_solution_is_correct_and_every_step_checks(level):
    for problem in make_split("dev", levels=[level], n_per_level=30, seed=2):
        solution = problem.solution
        assert is_correct(problem, solution)
        assert extract_answer(solution) == problem.answer
        verdicts = check_steps(problem, solution)
        assert verdicts == [True] * len(problem.steps)
        # One line per operation, then the answer line, each number at the level's width.
        lines = split_steps(solution)
        assert len(lines) == len(problem.steps) + 1
        assert lines[-1] == ANSWER_PREFIX + encode_number(problem.answer, problem.width)
        for line, step in zip(lines, problem.steps):
            assert re.fullmatch(
                rf"\d{{{problem.width}}}[+-]\d{{{problem.width}}}=\d{{{problem.width}}}", line
            )
            assert line == step.render(problem.width)
        # The prompt is the question line, in model (little-endian) notation, ending in a delimiter.
        assert problem.prompt.startswith("Q:") and problem.prompt.endswith(STEP_DELIMITER)
        assert to_display(problem.prompt) == f"Q:{problem.question}\n"


def test_wrong_answers_and_wrong_steps_are_caught():
    problem = make_split("test", levels=[2], n_per_level=1, seed=0)[0]
    lines = problem.solution.split(STEP_DELIMITER)
    wrong_answer = (problem.answer + 1) % LEVELS[2].max_value
    bad_final = STEP_DELIMITER.join(lines[:-1] + [ANSWER_PREFIX + encode_number(wrong_answer, problem.width)])
    assert not is_correct(problem, bad_final)
    assert check_steps(problem, bad_final) == [True] * len(problem.steps)

    # A false equation in step 2, and every step after it no longer chains from the right value.
    s = problem.steps[1]
    wrong = encode_number((s.result + 1) % 10**problem.width, problem.width)
    lines[1] = f"{encode_number(s.lhs, problem.width)}{s.op}{encode_number(s.rhs, problem.width)}={wrong}"
    verdicts = check_steps(problem, STEP_DELIMITER.join(lines))
    assert verdicts[0] is True and verdicts[1] is False
    # A true equation with the wrong operand is wrong too.
    first = problem.steps[0]
    other_rhs = first.rhs + 1 if first.op == "+" else first.rhs - 1
    other_result = first.lhs + other_rhs if first.op == "+" else first.lhs - other_rhs
    line = Step(first.lhs, first.op, other_rhs, other_result).render(problem.width)
    assert check_steps(problem, line) == [False]
    # More step lines than the problem has operations: the extra ones are wrong.
    extra = problem.solution.replace(ANSWER_PREFIX, lines[0] + STEP_DELIMITER + ANSWER_PREFIX)
    assert check_steps(problem, extra)[-1] is False


# --- determinism and splits ---------------------------------------------------------------------


def test_same_seed_same_problems_different_seed_different():
    a = make_split("train", levels=[1, 3], n_per_level=20, seed=5)
    b = make_split("train", levels=[1, 3], n_per_level=20, seed=5)
    c = make_split("train", levels=[1, 3], n_per_level=20, seed=6)
    assert [p.question for p in a] == [p.question for p in b]
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    assert [p.level for p in a] == [1] * 20 + [3] * 20


def test_problems_in_a_split_are_distinct():
    problems = make_split("dev", levels=[1], n_per_level=300, seed=0)
    assert len({p.question for p in problems}) == 300


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_splits_never_overlap(level):
    questions = {
        split: {p.question for p in make_split(split, levels=[level], n_per_level=250, seed=0)}
        for split in SPLITS
    }
    for split, qs in questions.items():
        assert len(qs) == 250
        assert all(split_of(q) == split for q in qs)
    assert not questions["train"] & questions["dev"]
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]
    # Whatever the seeds: another seed's test problems are still not train problems.
    other = {p.question for p in make_split("test", levels=[level], n_per_level=250, seed=99)}
    assert not other & questions["train"]


def test_split_of_depends_on_the_question_only():
    rng = random.Random(0)
    problems = [draw_problem(rng, 1) for _ in range(400)]
    seen = {split_of(p.question) for p in problems}
    assert seen == set(SPLITS)
    assert all(split_of(p.question) == split_of(p.question) for p in problems)


# --- number encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "width", "text"),
    [(62, 2, "26"), (5, 2, "50"), (7, 4, "7000"), (1234, 4, "4321"), (0, 3, "000")],
)
def test_encode_number_is_little_endian_zero_padded(value, width, text):
    assert encode_number(value, width) == text
    assert decode_number(text) == value


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=1, max_value=14))
def test_encode_decode_roundtrip(value, width):
    text = encode_number(value, width)
    assert len(text) == max(width, len(str(value)))
    assert decode_number(text) == value


def test_to_display_turns_model_text_into_ordinary_notation():
    assert to_display("Q:84+72-31\n84+72=57\n57-31=26\nA:26") == "Q:48+27-13\n48+27=75\n75-13=62\nA:62"
    assert to_display("no numbers here") == "no numbers here"


# --- parsing user questions ---------------------------------------------------------------------


def test_parse_question_rebuilds_the_problem():
    problem = parse_question("48+27-13")
    assert problem.answer == 62
    assert problem.question == "48+27-13"
    assert [(s.lhs, s.op, s.rhs, s.result) for s in problem.steps] == [(48, "+", 27, 75), (75, "-", 13, 62)]
    assert problem.prompt == "Q:84+72-31\n"
    assert problem.solution == "84+72=57\n57-31=26\nA:26"
    assert check_steps(problem, problem.solution) == [True, True]
    # Whitespace and a "Q:" prefix are accepted; the canonical question drops them.
    assert parse_question("  Q: 48+27-13 \n").question == "48+27-13"
    assert parse_question("007+3").question == "7+3"


def test_parse_question_matches_drawn_problems_of_the_same_level():
    problems = make_split("test", n_per_level=40, seed=4)
    recovered = 0
    for problem in problems:
        parsed = parse_question(problem.question)
        assert parsed.answer == problem.answer and parsed.steps == problem.steps
        if parsed.level == problem.level:
            recovered += 1
            assert parsed.prompt == problem.prompt
            assert parsed.solution == problem.solution
    assert recovered >= len(problems) // 2


def test_parse_question_uses_the_width_its_level_was_trained_with():
    # Many operations on small numbers: the level is chosen by the operation count, and the
    # numbers must be written at that level's width, as in the problems the policy learned from.
    n_ops = LEVELS[max(LEVELS)].n_ops
    problem = parse_question("+".join(["1"] * (n_ops + 1)))
    assert len(problem.steps) == n_ops
    assert problem.width == number_width(LEVELS[problem.level].max_value)
    # Numbers too big for every level still fit: the width grows to the widest number.
    big = parse_question("123456+1")
    assert big.width == 6 and big.solution.endswith(ANSWER_PREFIX + encode_number(123457, 6))


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "not a chain"),
        ("abc", "not a chain"),
        ("12", "not a chain"),
        ("1+", "not a chain"),
        ("1*2", "not a chain"),
        ("-1+2", "not a chain"),
        ("5-9", "below zero at 5-9"),
        ("10-3-8", "below zero at 7-8"),
    ],
)
def test_parse_question_rejects_bad_input(question, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_question(question)
    assert repr(question) in str(info.value)


# --- bad configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 6, -1, "1"])
def test_unknown_level_is_named(level):
    with pytest.raises(ConfigError, match=re.escape(f"unknown level {level!r}")):
        level_spec(level)
    with pytest.raises(ConfigError, match="unknown level"):
        make_split("train", levels=[1, level], n_per_level=2)
    with pytest.raises(ConfigError, match="unknown level"):
        draw_problem(random.Random(0), level)


def test_unknown_split_is_named():
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        next(iter_problems("validation", 1, 0))
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        make_split("validation", levels=[1], n_per_level=2)


def test_empty_levels_and_bad_counts_are_refused():
    with pytest.raises(ConfigError, match="levels is empty"):
        make_split("train", levels=[], n_per_level=2)
    with pytest.raises(ConfigError, match="n_per_level must be positive, got 0"):
        make_split("train", levels=[1], n_per_level=0)


# --- reading model output -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("84+72=57\n57-31=26\nA:26", 62),
        ("A:26\n", 62),
        ("A: 26  \n\n", 62),
        ("A:11\nA:26", 62),  # the last answer line counts
        ("A:26\nA:x", None),
        ("84+72=57\n", None),
        ("A:", None),
        ("A:-5", None),
        ("A:2 6", None),
        ("", None),
        ("A:" + "9" * 19, None),  # longer than any answer: not a number
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_check_steps_never_raises_on_huge_numbers():
    problem = parse_question("12+5-3")
    assert check_steps(problem, "1" * 5000 + "+1=1\nA:1") == [False]
    assert extract_answer("A:" + "1" * 5000) is None


def test_check_steps_on_malformed_lines():
    problem = parse_question("12+5-3")
    assert check_steps(problem, "") == []
    # Steps are judged by position: line i must be the problem's operation i.
    assert check_steps(problem, "21+50=71\ngarbage\n\nA:41") == [True, False]
    assert check_steps(problem, "garbage\n21+50=71\nA:41") == [False, False]
    assert check_steps(problem, "21+50=71\n71-30=41\n") == [True, True]  # partial, no answer yet


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_answer_reading_never_raises(text):
    problem = parse_question("48+27-13")
    answer = extract_answer(text)
    assert answer is None or (isinstance(answer, int) and answer >= 0)
    verdicts = check_steps(problem, text)
    assert isinstance(verdicts, list) and all(isinstance(v, bool) for v in verdicts)
    assert len(verdicts) <= len(split_steps(text))
    assert isinstance(is_correct(problem, text), bool)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["A:", "1", "2", "+", "-", "=", "\n", " ", "x"]), max_size=40).map("".join))
def test_answer_reading_never_raises_on_near_miss_text(text):
    problem = parse_question("48+27-13")
    answer = extract_answer(text)
    assert answer is None or isinstance(answer, int)
    assert all(isinstance(v, bool) for v in check_steps(problem, text))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.sampled_from(ALL_LEVELS))
def test_a_corrupted_solution_is_wrong_but_carries_its_slip_forward(seed, level):
    from ponder.tasks.arithmetic import corrupt_solution

    rng = random.Random(seed)
    problem = draw_problem(rng, level)
    bad = corrupt_solution(problem, rng)
    assert not is_correct(problem, bad)
    lines = bad.split("\n")
    assert len(lines) == len(problem.steps) + 1 and lines[-1].startswith("A:")
    verdicts = check_steps(problem, bad)
    first_wrong = verdicts.index(False)
    assert all(verdicts[:first_wrong])
    # After the slip each line starts from the previous line's (wrong) result.
    for prev, line in zip(lines[first_wrong:-2], lines[first_wrong + 1 : -1]):
        assert line.split("+")[0].split("-")[0] == prev.split("=")[1]


def test_revision_prompt_lists_attempts_each_closed_by_a_retry_line_then_the_question_again():
    from ponder.tasks.arithmetic import revision_prompt

    assert revision_prompt("Q:21+3\n", ["a\nA:1", "b\nA:2\n"]) == "Q:21+3\na\nA:1\nR:\nb\nA:2\nR:\nQ:21+3\n"
    assert revision_prompt("Q:21+3\n", []) == "Q:21+3\n"


@pytest.mark.parametrize("level", ALL_LEVELS)
def test_first_slip_finds_the_first_wrong_character(level):
    problem = make_split("dev", levels=[level], n_per_level=1, seed=3)[0]
    solution = problem.solution
    assert first_slip(problem, solution) is None
    assert first_slip(problem, solution + STEP_DELIMITER) is None
    for cut in range(len(solution)):  # a solution cut short breaks nothing yet
        assert first_slip(problem, solution[:cut]) is None
    rng = random.Random(level)
    for k in rng.sample(range(len(solution)), min(40, len(solution))):
        wrong = rng.choice([c for c in "0123456789+-=\nA:" if c != solution[k]])
        assert first_slip(problem, solution[:k] + wrong + solution[k + 1 :]) == k


def test_first_slip_judges_each_step_on_what_was_written():
    problem = parse_question("12+5-3")  # width 2: "21+50=71", "71-30=41"
    assert problem.solution == "21+50=71\n71-30=41\nA:41"
    # A wrong result (18) is the first break; the next step, chaining from 18 correctly, adds none.
    assert first_slip(problem, "21+50=81\n81-30=51\nA:51") == 6
    # Copying the wrong operand breaks at the copied digit.
    assert first_slip(problem, "21+50=71\n71-40=31\nA:31") == 12
    # Stopping early with an answer, or going on after it, is a break.
    assert first_slip(problem, "21+50=71\nA:71") == 9
    assert first_slip(problem, "21+50=71\n71-30=41\nA:41\n9") == 23


def test_expected_chars_follow_what_was_written():
    problem = parse_question("12+5-3")

    def shown(solution: str) -> str:
        return "".join("_" if c is None else c for c in expected_chars(problem, solution))

    assert shown("21+50=71\n71-30=41\nA:41") == "21+50=71\n71-30=41\nA:41"
    # After a wrong result the next step should chain from it; after a wrong operand the result
    # should be that of the operands as written.
    assert shown("21+50=81\n81-30=51\nA:51") == "21+50=71\n81-30=51\nA:51"
    assert shown("21+50=71\n71-40=31\nA:31") == "21+50=71\n71-30=31\nA:31"
    # A malformed line has no rule for its result; the next step chains from what it wrote.
    assert shown("21+5x=71\n71-30=41") == "21+50=__\n71-30=41"
    assert shown("21+50=71\n71-30=41\nA:41\n9") == "21+50=71\n71-30=41\nA:41\n_"
    assert len(expected_chars(problem, "21+5")) == 4


@given(st.integers(1, 5), st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_every_order_of_the_operations_reaches_the_answer(level, seed):
    from ponder.tasks.arithmetic import shuffled_solution

    problem = make_split("test", levels=[level], n_per_level=1, seed=seed % 7)[0]
    text = shuffled_solution(problem, random.Random(seed))
    assert extract_answer(text) == problem.answer
    lines = text.split("\n")
    assert len(lines) == len(problem.steps) + 1
    # Each line is a true equation modulo the width, chained on the previous result, and the
    # operations used are exactly the problem's, each once.
    width, prev, used = problem.width, problem.steps[0].lhs, []
    for line in lines[:-1]:
        m = re.fullmatch(rf"(\d{{{width}}})([+-])(\d{{{width}}})=(\d{{{width}}})", line)
        assert m, line
        lhs, op, rhs, res = (int(m[1][::-1]), m[2], int(m[3][::-1]), int(m[4][::-1]))
        assert lhs == prev and res == (lhs + rhs if op == "+" else lhs - rhs) % 10**width
        used.append((op, rhs))
        prev = res
    assert sorted(used) == sorted((s.op, s.rhs) for s in problem.steps)


def test_an_order_may_wrap_around_and_a_bad_order_is_named():
    from ponder.tasks.arithmetic import solution_in_order

    problem = parse_question("12+50-55")
    assert solution_in_order(problem, [1, 0]).split("\n")[0] == "21-55=75"  # 12-55 wraps to 57
    assert extract_answer(solution_in_order(problem, [1, 0])) == 7
    with pytest.raises(ConfigError, match="not a permutation"):
        solution_in_order(problem, [0, 0])
