"""The built-in task: chained integer arithmetic solved one checkable step at a time.

A problem is a chain such as ``48+27-13``. Its reference solution has one line per operation,
each line a complete, checkable equation, and a final-answer line.

The model-facing text writes every number **least-significant digit first**, zero-padded to the
level's width, so ``48+27-13`` (answer 62) reads::

    Q:84+72-31
    84+72=57
    57-31=26
    A:26

Little-endian digits let the model emit a sum in the order carries propagate, and fixed widths
put digits of a column at fixed offsets: together they make column arithmetic learnable by a tiny
model in minutes. :func:`to_display` turns model text back into ordinary notation.

Difficulty grows with the number of operations and the size of the numbers. Every running value
stays in ``[0, max_value)`` so no step needs negative numbers.

Splits never overlap: a problem belongs to the split chosen by a hash of its question text, so
the same chain can never be drawn for two splits, whatever the seeds.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ponder.errors import ConfigError

STEP_DELIMITER = "\n"
QUESTION_PREFIX = "Q:"
ANSWER_PREFIX = "A:"
# Ends an earlier attempt shown to the model: "that was wrong, try again".
RETRY_LINE = "R:"
SPLITS = ("train", "dev", "test")
# Share of the hash space given to each split (train, dev, test).
_SPLIT_BUCKETS = {"train": range(0, 80), "dev": range(80, 90), "test": range(90, 100)}


@dataclass(frozen=True)
class LevelSpec:
    """How problems of one difficulty level are drawn."""

    level: int
    n_ops: int
    max_value: int


# Levels roughly double the digits a solution must get right (operations x 3 numbers x width):
# 12, 24, 36, 60, 96. Errors compound over digits, so the policy's accuracy falls with the level.
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(1, n_ops=2, max_value=100),
    2: LevelSpec(2, n_ops=4, max_value=100),
    3: LevelSpec(3, n_ops=4, max_value=1000),
    4: LevelSpec(4, n_ops=5, max_value=10000),
    5: LevelSpec(5, n_ops=8, max_value=10000),
}


@dataclass(frozen=True)
class Step:
    """One operation ``lhs op rhs = result``."""

    lhs: int
    op: str
    rhs: int
    result: int

    def render(self, width: int) -> str:
        return (
            f"{encode_number(self.lhs, width)}{self.op}{encode_number(self.rhs, width)}"
            f"={encode_number(self.result, width)}"
        )


@dataclass(frozen=True)
class Problem:
    """A chained-arithmetic problem with its reference solution."""

    question: str
    answer: int
    level: int
    steps: tuple[Step, ...]
    width: int

    @property
    def id(self) -> str:
        return f"L{self.level}-{_question_hash(self.question)[:10]}"

    @property
    def prompt(self) -> str:
        """What the policy model is given: the question line, ending in the step delimiter."""
        return format_prompt(self)

    @property
    def solution(self) -> str:
        """The reference solution: one line per step, then the answer line."""
        lines = [s.render(self.width) for s in self.steps]
        lines.append(f"{ANSWER_PREFIX}{encode_number(self.answer, self.width)}")
        return STEP_DELIMITER.join(lines)


def solution_in_order(problem: Problem, order: list[int] | tuple[int, ...]) -> str:
    """A solution that applies the problem's operations in ``order`` (a permutation of their
    indices), after the chain's first number.

    Additions and subtractions commute modulo ``10**width``, which is what column arithmetic on
    fixed-width numbers computes (a borrow out of the top column is dropped), so every order ends
    at the same answer: ``84+72-31`` may also be solved ``84-31=53`` then ``53+72=26``. Running values
    may wrap around (``12-50`` gives ``62`` at width 2). A policy trained on many orders reaches one
    answer by many routes, and its slips land on different wrong answers: the diversity that
    majority vote (self-consistency) needs.
    """
    if sorted(order) != list(range(len(problem.steps))):
        raise ConfigError(f"order {list(order)} is not a permutation of 0..{len(problem.steps) - 1}")
    modulus = 10**problem.width
    value = problem.steps[0].lhs
    lines = []
    for i in order:
        step = problem.steps[i]
        result = (value + step.rhs if step.op == "+" else value - step.rhs) % modulus
        lines.append(Step(value, step.op, step.rhs, result).render(problem.width))
        value = result
    assert value == problem.answer
    lines.append(f"{ANSWER_PREFIX}{encode_number(value, problem.width)}")
    return STEP_DELIMITER.join(lines)


def shuffled_solution(problem: Problem, rng: random.Random) -> str:
    """:func:`solution_in_order` with an order drawn uniformly at random."""
    order = list(range(len(problem.steps)))
    rng.shuffle(order)
    return solution_in_order(problem, order)


def encode_number(value: int, width: int) -> str:
    """``value`` zero-padded to ``width`` digits, least-significant digit first."""
    return f"{value:0{width}d}"[::-1]


def decode_number(text: str) -> int:
    """Inverse of :func:`encode_number` (``"26"`` -> 62)."""
    return int(text[::-1])


def format_prompt(problem: Problem) -> str:
    first = encode_number(problem.steps[0].lhs, problem.width)
    rest = "".join(f"{s.op}{encode_number(s.rhs, problem.width)}" for s in problem.steps)
    return f"{QUESTION_PREFIX}{first}{rest}{STEP_DELIMITER}"


def revision_prompt(prompt: str, attempts: list[str]) -> str:
    """The prompt for a new attempt after earlier (wrong) ``attempts``, oldest first.

    Each attempt is followed by a ``R:`` line, so the policy reads them as rejected tries, and the
    question comes again last, so the new attempt starts right after it as a first attempt does::

        Q:84+72-31
        84+72=56
        56-31=25
        A:25
        R:
        Q:84+72-31

    Repeating the question is what makes revision learnable for a small model: its first steps copy
    operands from the question, and a copy from a few characters back is far easier than one from
    several attempts back (a reviser trained on prompts without the repeat miscopied them).
    """
    if not attempts:
        return prompt
    retry = STEP_DELIMITER + RETRY_LINE + STEP_DELIMITER
    return prompt + "".join(a.strip(STEP_DELIMITER) + retry for a in attempts) + prompt


def corrupt_solution(problem: Problem, rng: random.Random) -> str:
    """A wrong but self-consistent solution: one step slips, the rest carry the slip forward.

    The slip is either a wrong digit in a step's result or a wrong digit in the operand copied
    from the question, the two mistakes the policy itself makes. Later steps compute correctly
    from the wrong value (modulo the level's width, as column arithmetic would), so the final
    answer is wrong. Used to teach the policy to revise.
    """
    width = problem.width
    modulus = 10**width
    k = rng.randrange(len(problem.steps))
    lines: list[str] = []
    value = problem.steps[0].lhs
    for i, step in enumerate(problem.steps):
        rhs = step.rhs
        if i == k and rng.random() < 0.3:
            rhs = _flip_digit(rhs, width, rng)
        result = (value + rhs if step.op == "+" else value - rhs) % modulus
        if i == k and rhs == step.rhs:
            result = _flip_digit(result, width, rng)
        lines.append(Step(value, step.op, rhs, result).render(width))
        value = result
    if value == problem.answer:  # the slip cancelled out (rare): force a wrong answer
        value = _flip_digit(value, width, rng)
    lines.append(f"{ANSWER_PREFIX}{encode_number(value, width)}")
    return STEP_DELIMITER.join(lines)


def _flip_digit(value: int, width: int, rng: random.Random) -> int:
    digits = list(f"{value:0{width}d}")
    i = rng.randrange(width)
    digits[i] = rng.choice([d for d in "0123456789" if d != digits[i]])
    return int("".join(digits))


def to_display(text: str) -> str:
    """Model-facing text with every number turned back to ordinary (most-significant first) order."""
    return re.sub(r"\d+", lambda m: str(decode_number(m.group())), text)


def number_width(max_value: int) -> int:
    return max(2, len(str(max_value - 1)))


def level_spec(level: int) -> LevelSpec:
    if level not in LEVELS:
        raise ConfigError(f"unknown level {level!r}: levels are {sorted(LEVELS)}")
    return LEVELS[level]


def _question_hash(question: str) -> str:
    return hashlib.sha1(question.encode()).hexdigest()


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by its text alone."""
    bucket = int(_question_hash(question)[:8], 16) % 100
    for name, buckets in _SPLIT_BUCKETS.items():
        if bucket in buckets:
            return name
    raise AssertionError("split buckets must cover 0..99")


def draw_problem(rng: random.Random, level: int) -> Problem:
    """Draw one problem of a level (any split)."""
    spec = level_spec(level)
    hi = spec.max_value
    width = number_width(hi)
    value = rng.randrange(1, hi)
    start = value
    steps: list[Step] = []
    parts = [str(value)]
    for _ in range(spec.n_ops):
        can_add = value < hi - 1
        can_sub = value > 1
        op = "+" if (can_add and (not can_sub or rng.random() < 0.5)) else "-"
        if op == "+":
            rhs = rng.randrange(1, hi - value)
            result = value + rhs
        else:
            rhs = rng.randrange(1, value)
            result = value - rhs
        steps.append(Step(value, op, rhs, result))
        parts.append(f"{op}{rhs}")
        value = result
    question = "".join(parts)
    assert steps[0].lhs == start
    return Problem(question=question, answer=value, level=level, steps=tuple(steps), width=width)


def iter_problems(split: str, level: int, seed: int) -> Iterator[Problem]:
    """An endless, deterministic stream of distinct problems of one split and level."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: splits are {list(SPLITS)}")
    level_spec(level)
    rng = random.Random(f"{split}/{level}/{seed}")
    seen: set[str] = set()
    while True:
        problem = draw_problem(rng, level)
        if problem.question in seen or split_of(problem.question) != split:
            continue
        seen.add(problem.question)
        yield problem


def make_split(
    split: str, levels: list[int] | tuple[int, ...] | None = None, n_per_level: int = 100, seed: int = 0
) -> list[Problem]:
    """A fixed list of problems: ``n_per_level`` of each level, in level order."""
    if n_per_level <= 0:
        raise ConfigError(f"n_per_level must be positive, got {n_per_level}")
    levels = tuple(sorted(LEVELS)) if levels is None else tuple(levels)
    if not levels:
        raise ConfigError("levels is empty: ask for at least one of " + str(sorted(LEVELS)))
    out: list[Problem] = []
    for level in levels:
        stream = iter_problems(split, level, seed)
        out.extend(next(stream) for _ in range(n_per_level))
    return out


def parse_question(question: str) -> Problem:
    """Rebuild a problem (with its reference solution) from a question such as ``12+5-3``."""
    text = question.strip()
    if text.startswith(QUESTION_PREFIX):
        text = text[len(QUESTION_PREFIX) :].strip()
    if not re.fullmatch(r"\d{1,9}([+-]\d{1,9})+", text):
        raise ConfigError(
            f"question {question!r} is not a chain of integer additions and subtractions "
            "such as '12+5-3' (numbers of at most 9 digits)"
        )
    tokens = re.findall(r"[+-]?\d+", text)
    value = int(tokens[0])
    steps = []
    for tok in tokens[1:]:
        op, rhs = tok[0], int(tok[1:])
        result = value + rhs if op == "+" else value - rhs
        if result < 0:
            raise ConfigError(
                f"question {question!r} goes below zero at {value}{op}{rhs}; the task has no negatives"
            )
        steps.append(Step(value, op, rhs, result))
        value = result
    max_seen = max([s.lhs for s in steps] + [s.rhs for s in steps] + [s.result for s in steps])
    level = next(
        (lv for lv, sp in sorted(LEVELS.items()) if sp.n_ops >= len(steps) and sp.max_value > max_seen),
        max(LEVELS),
    )
    # The level's own width (what the policy was trained on), wider only if a number needs it.
    width = max(number_width(LEVELS[level].max_value), len(str(max_seen)))
    canonical = str(steps[0].lhs) + "".join(f"{s.op}{s.rhs}" for s in steps)
    return Problem(question=canonical, answer=value, level=level, steps=tuple(steps), width=width)
