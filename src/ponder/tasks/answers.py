"""Reading answers and steps out of model output. Malformed output is wrong, never an exception."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ponder.tasks.arithmetic import ANSWER_PREFIX, STEP_DELIMITER, Problem, decode_number

_DIGITS = re.compile(r"\d{1,18}")
_EQUATION = re.compile(r"^(\d{1,18})([+-])(\d{1,18})=(\d{1,18})$")


def split_steps(solution: str) -> list[str]:
    """The non-empty lines of a solution (steps and the answer line), in order."""
    return [line for line in solution.split(STEP_DELIMITER) if line.strip()]


# How strategies read a final answer out of a solution. The built-in task's rule by default; a
# dataset with another answer format (GSM8K's "#### N", MATH's \boxed{}) installs its own for the
# duration of a run with :func:`answer_extractor` (see ponder.eval.datasets).
_EXTRACTOR: ContextVar[Callable[[str], Hashable | None] | None] = ContextVar("answer_extractor", default=None)


@contextmanager
def answer_extractor(extract: Callable[[str], Hashable | None]) -> Iterator[None]:
    """Within the block, :func:`extract_answer` (and so every strategy's vote) uses ``extract``: text
    -> a hashable answer key (equal keys are the same answer) or None."""
    token = _EXTRACTOR.set(extract)
    try:
        yield
    finally:
        _EXTRACTOR.reset(token)


def custom_answers() -> bool:
    """Whether an :func:`answer_extractor` block (a dataset's own answer format) is in force."""
    return _EXTRACTOR.get() is not None


def extract_answer(text: str) -> int | None:
    """The number on the last ``A:`` line (little-endian digits), or None when there is none or
    it is not a number. Inside :func:`answer_extractor`, that block's rule instead."""
    if not isinstance(text, str):
        return None
    custom = _EXTRACTOR.get()
    if custom is not None:
        return custom(text)  # type: ignore[return-value]
    for line in reversed(text.split(STEP_DELIMITER)):
        line = line.strip()
        if line.startswith(ANSWER_PREFIX):
            body = line[len(ANSWER_PREFIX) :].strip()
            return decode_number(body) if _DIGITS.fullmatch(body) else None
    return None


def is_correct(problem: Problem, solution: str) -> bool:
    """True when the solution's final answer equals the problem's answer."""
    return extract_answer(solution) == problem.answer


def check_steps(problem: Problem, solution: str) -> list[bool]:
    """Per step line: is it the right equation for that point in the chain?

    A step is right when it is a true equation whose left operand is the previous step's result
    (the chain's start for the first step) and whose operation and right operand are the
    problem's. Used for analysis and tests; the PRM is trained from rollouts, not from this.
    """
    verdicts: list[bool] = []
    expected = problem.steps
    lines = [line for line in split_steps(solution) if not line.startswith(ANSWER_PREFIX)]
    prev = expected[0].lhs if expected else None
    for i, line in enumerate(lines):
        m = _EQUATION.match(line.strip())
        ok = False
        if m and i < len(expected):
            lhs, op, rhs, res = decode_number(m[1]), m[2], decode_number(m[3]), decode_number(m[4])
            true_eq = res == (lhs + rhs if op == "+" else lhs - rhs)
            ok = true_eq and lhs == prev and op == expected[i].op and rhs == expected[i].rhs
            prev = res
        verdicts.append(ok)
    return verdicts
