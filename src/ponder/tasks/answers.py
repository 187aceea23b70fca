"""Reading answers and steps out of model output. Malformed output is wrong, never an exception."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ponder.tasks.arithmetic import ANSWER_PREFIX, STEP_DELIMITER, Problem, decode_number, encode_number

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


def check_steps(problem: Problem, solution: str, any_order: bool = False) -> list[bool]:
    """Per step line: is it the right equation for that point in the chain?

    A step is right when it is a true equation whose left operand is the previous step's result
    (the chain's start for the first step) and whose operation and right operand are the
    problem's. Used for analysis and tests; the PRM is trained from rollouts, not from this.

    With ``any_order`` the operations may come in any order (as
    :func:`~ponder.tasks.arithmetic.solution_in_order` writes them): a step's operation and right
    operand must be one of the problem's not used yet, and equations hold modulo ``10**width``.
    """
    verdicts: list[bool] = []
    expected = problem.steps
    lines = [line for line in split_steps(solution) if not line.startswith(ANSWER_PREFIX)]
    prev = expected[0].lhs if expected else None
    unused = list(range(len(expected)))
    modulus = 10**problem.width
    for i, line in enumerate(lines):
        m = _EQUATION.match(line.strip())
        ok = False
        if m and i < len(expected):
            lhs, op, rhs, res = decode_number(m[1]), m[2], decode_number(m[3]), decode_number(m[4])
            value = lhs + rhs if op == "+" else lhs - rhs
            if any_order:
                match = next((k for k in unused if (expected[k].op, expected[k].rhs) == (op, rhs)), None)
                if match is not None:
                    unused.remove(match)
                ok = res == value % modulus and lhs == prev and match is not None
            else:
                ok = res == value and lhs == prev and op == expected[i].op and rhs == expected[i].rhs
            prev = res
        verdicts.append(ok)
    return verdicts


def expected_chars(problem: Problem, solution: str, any_order: bool = False) -> list[str | None]:
    """Per character of ``solution``: what a careful calculator writes there, given the text
    before it (None where no rule applies: inside a malformed line, or past the last step).

    Each step is judged on what was written, as :func:`check_steps` does: its left operand should
    be the previous *written* result (the chain's start for the first step), its operation and
    right operand the problem's, its result the true value of the operands as written; after the
    last step comes ``A:`` with the last written result, and nothing after it. Results are
    little-endian, so every character's expectation depends only on characters before it: a causal
    model can learn to predict it, and the first character that differs from it is the first slip.

    With ``any_order`` a step may apply any operation not used yet (see :func:`check_steps`): each
    character of the operation and right operand is right while some unused operation still
    starts with what was written; at the first one that fits none, the expectation is the next
    character of the first operation that fitted until then, which that step is then taken to
    mean. Results are modulo ``10**width``.
    """
    w, steps = problem.width, problem.steps
    out: list[str | None] = []
    lines = solution.split(STEP_DELIMITER)
    prev: int | None = steps[0].lhs if steps else None
    unused = list(range(len(steps)))
    for i, line in enumerate(lines):
        template: list[str | None] = []
        if i < len(steps) and prev is not None:
            if any_order:
                operation, chosen = _operation_template(line[w : 2 * w + 1], unused, problem)
                unused.remove(chosen)
            else:
                operation = list(f"{steps[i].op}{encode_number(steps[i].rhs, w)}")
            template = [*encode_number(prev, w), *operation, "="]
            value = _written_value(line, w)
            if any_order and value is not None:
                value %= 10**w
            fits = value is not None and 0 <= value < 10**w
            template += list(encode_number(value, w)) if fits else [None] * w  # type: ignore[arg-type]
            template.append(STEP_DELIMITER)
            result = line[2 * w + 2 : 3 * w + 2]
            prev = decode_number(result) if len(result) == w and result.isdigit() else None
        elif i == len(steps) and prev is not None:
            template = list(f"{ANSWER_PREFIX}{encode_number(prev, w)}{STEP_DELIMITER}")
            prev = None
        else:
            prev = None
        text = line if i == len(lines) - 1 else line + STEP_DELIMITER
        out += [template[j] if j < len(template) else None for j in range(len(text))]
    return out


def _operation_template(written: str, unused: list[int], problem: Problem) -> tuple[list[str], int]:
    """Expected characters of a step's operation and right operand when any unused operation may
    come next, and the operation the step is taken to apply (see :func:`expected_chars`)."""
    rendered = {
        k: f"{problem.steps[k].op}{encode_number(problem.steps[k].rhs, problem.width)}" for k in unused
    }
    fitting = list(unused)
    chars: list[str] = []
    for j in range(problem.width + 1):
        wrote = written[j] if j < len(written) else None
        still = [k for k in fitting if rendered[k][j] == wrote]
        if still:
            fitting = still
            chars.append(rendered[still[0]][j])
        else:
            # The first slip: expect the operation that fitted so far, and hold to it.
            fitting = fitting[:1]
            chars.append(rendered[fitting[0]][j])
    return chars, fitting[0]


def _written_value(line: str, width: int) -> int | None:
    """The true value of a step line's operands as written (None if they are not numbers)."""
    lhs, op, rhs = line[:width], line[width : width + 1], line[width + 1 : 2 * width + 1]
    if not (len(lhs) == len(rhs) == width and lhs.isdigit() and rhs.isdigit() and op in ("+", "-")):
        return None
    return decode_number(lhs) + (decode_number(rhs) if op == "+" else -decode_number(rhs))


def first_slip(problem: Problem, solution: str, any_order: bool = False) -> int | None:
    """Index of the first character that differs from :func:`expected_chars` (None: no slip)."""
    for j, (got, want) in enumerate(zip(solution, expected_chars(problem, solution, any_order))):
        if got != want:
            return j
    return None
