"""Verifiers for running strategies on the real-model backends in tests: no model, known scores."""

from __future__ import annotations

import re

from ponder.tasks import ANSWER_PREFIX, check_steps, decode_number, extract_answer, parse_question
from ponder.verifiers.base import VerifierScore


def problem_of(prompt: str):
    """The problem of a ``Q:`` prompt (little-endian digits, as the model reads it)."""
    line = prompt.split("Q:", 1)[1].split("\n", 1)[0]
    return parse_question(re.sub(r"\d+", lambda m: str(decode_number(m.group())), line))


class CheckingVerifier:
    """A perfect PRM for the arithmetic task: a right step scores 0.9, a wrong one 0.1, the answer
    line 0.95 when right; one token per character."""

    num_params = 0

    def __init__(self) -> None:
        self.calls = 0

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        self.calls += 1
        out = []
        for prompt, solution in zip(prompts, solutions):
            problem = problem_of(prompt)
            lines = [line for line in solution.split("\n") if line.strip()]
            verdicts = iter(check_steps(problem, solution))
            steps = []
            for line in lines:
                if line.strip().startswith(ANSWER_PREFIX):
                    steps.append(0.95 if extract_answer(line) == problem.answer else 0.05)
                else:
                    steps.append(0.9 if next(verdicts, False) else 0.1)
            out.append(
                VerifierScore(
                    steps, outcome=steps[-1] if steps else None, tokens=len(prompt) + len(solution) + 1
                )
            )
        return out


class LengthVerifier:
    """Scores any text, of any model: longer lines score higher (a deterministic stand-in)."""

    num_params = 0

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        out = []
        for prompt, solution in zip(prompts, solutions):
            lines = [line for line in solution.split("\n") if line.strip()] or [""]
            steps = [min(1.0, len(line) / 20) for line in lines]
            out.append(VerifierScore(steps, outcome=steps[-1], tokens=len((prompt + solution).encode()) + 1))
        return out
