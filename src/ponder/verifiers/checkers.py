"""Programmatic answer verifiers: a solution scores 1 when its final answer is right, else 0.

Right by one of:

- the built-in task, with no reference given: the answer is computed from the prompt itself
  (``Q:84+72-31`` -> 62) and read from the solution's ``A:`` line (an oracle, for measuring how
  far a search is from a perfect verifier);
- a reference answer (one for every prompt, or a dict prompt -> reference), compared in an
  answer format of :mod:`ponder.eval.datasets` (``number``, ``gsm8k``, ``math`` with math-verify,
  ``arithmetic``) or ``exact`` (the final answer -- the last ``\\boxed{}``, else the text after the
  last "answer is" / "####", else the last line -- equal to the reference up to case, spaces and
  a trailing full stop);
- a user function ``checker(prompt, solution) -> bool | float``.

A solution with no final answer yet (a partial path in step search) scores ``pending`` (0.5 by
default): it is not known to be wrong. These verifiers run no model: 0 tokens, 0 parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ponder.errors import ConfigError
from ponder.verifiers.base import VerifierScore

MATCH_MODES = ("auto", "exact", "number", "gsm8k", "math", "arithmetic")
Checker = Callable[[str, str], Any]


def builtin_answer(prompt: str) -> int | None:
    """The answer of a built-in task prompt (``Q:`` then a little-endian chain), or None."""
    text = prompt.strip()
    if not text.startswith("Q:"):
        return None
    body = text[2:].splitlines()[0].strip() if text[2:].strip() else ""
    if not re.fullmatch(r"\d+([+-]\d+)+", body):
        return None
    tokens = re.findall(r"[+-]?\d+", body)
    value = int(tokens[0][::-1])
    for tok in tokens[1:]:
        n = int(tok[1:][::-1])
        value = value + n if tok[0] == "+" else value - n
    return value


def final_answer_text(solution: str) -> str | None:
    """The final answer as written: the last ``\\boxed{}``, else after "####" or "answer is", else
    the last non-blank line; None for an empty solution."""
    from ponder.eval.datasets import last_boxed

    boxed = last_boxed(solution)
    if boxed is not None:
        return boxed
    if "####" in solution:
        tail = solution.rsplit("####", 1)[1].strip()
        return tail.splitlines()[0].strip() if tail else None
    m = re.findall(r"answer is[:\s]*(.+)", solution, flags=re.IGNORECASE)
    if m:
        return m[-1].strip()
    lines = [line.strip() for line in solution.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("$").strip()).rstrip(".").lower()


class AnswerCheckVerifier:
    """Scores 1 / 0 by checking the final answer (see the module docstring)."""

    def __init__(
        self,
        reference: Any = None,
        references: Mapping[str, Any] | None = None,
        *,
        match: str = "auto",
        checker: Checker | None = None,
        pending: float = 0.5,
    ) -> None:
        if match not in MATCH_MODES:
            raise ConfigError(f"unknown answer match {match!r}: choose one of {list(MATCH_MODES)}")
        if checker is not None and not callable(checker):
            raise ConfigError(
                f"the answer checker must be a function (prompt, solution) -> bool, got {checker!r}"
            )
        if not 0.0 <= pending <= 1.0:
            raise ConfigError(f"pending must be a probability, got {pending}")
        self.reference = reference
        self.references = dict(references or {})
        self.match = match
        self.checker = checker
        self.pending = pending
        self.name = "checker" if checker is not None else "answer-check"

    @property
    def num_params(self) -> int:
        return 0

    def count_tokens(self, prompt: str, solution: str) -> int:
        return 0

    def reference_for(self, prompt: str) -> Any:
        if prompt in self.references:
            return self.references[prompt]
        if self.reference is not None:
            return self.reference
        answer = builtin_answer(prompt)
        if answer is None:
            raise ConfigError(
                f"no reference answer for the prompt {prompt[:60]!r}: give answer-check:REFERENCE "
                "(or references= in Python); only built-in task prompts carry their own answer"
            )
        return answer

    def check(self, prompt: str, solution: str) -> float:
        """1.0 right, 0.0 wrong, ``pending`` when the solution gives no final answer yet."""
        if self.checker is not None:
            try:
                verdict = self.checker(prompt, solution)
            except Exception as exc:  # a user function: report it, never a traceback
                name = getattr(self.checker, "__name__", repr(self.checker))
                raise ConfigError(f"answer checker {name} failed on a solution: {exc!r}") from exc
            if isinstance(verdict, bool) or verdict is None:
                return 1.0 if verdict else 0.0
            try:
                return min(1.0, max(0.0, float(verdict)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"answer checker returned {verdict!r}, not a bool or a number") from exc
        reference = self.reference_for(prompt)
        mode = self.match
        if mode == "auto":
            mode = self._auto_mode(prompt, reference)
        return self._compare(mode, reference, solution)

    def _auto_mode(self, prompt: str, reference: Any) -> str:
        from ponder.eval.datasets import normalize_number

        if prompt not in self.references and self.reference is None:
            return "arithmetic"  # the built-in oracle
        return "number" if normalize_number(str(reference)) is not None else "exact"

    def _compare(self, mode: str, reference: Any, solution: str) -> float:
        from ponder.eval.datasets import answer_format, normalize_number

        if mode == "exact":
            got = final_answer_text(solution)
            return self.pending if got is None else float(_norm(got) == _norm(str(reference)))
        fmt = answer_format(mode)
        key = fmt.key(solution)
        if key is None:
            return self.pending
        if mode == "arithmetic":
            return float(int(key) == int(reference))
        gold = normalize_number(str(reference)) if mode in ("number", "gsm8k") else str(reference)
        if gold is None:
            raise ConfigError(f"reference {reference!r} is not a number (answer match {mode})")
        return float(fmt.is_correct(key, gold))

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        if len(prompts) != len(solutions):
            raise ConfigError(f"{len(prompts)} prompts but {len(solutions)} solutions to score")
        out = []
        for p, s in zip(prompts, solutions):
            value = self.check(p, s)
            out.append(VerifierScore(step_scores=[value], outcome=value, tokens=0))
        return out
