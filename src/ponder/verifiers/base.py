"""The verifier seam: per-step scores (PRM) and one score per solution (ORM)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ponder.errors import ConfigError

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod", "mean")


@dataclass
class VerifierScore:
    """Scores of one (possibly partial) solution.

    ``step_scores[i]`` is the probability that the solution is still on track after step ``i``;
    ``outcome`` is the outcome reward of the whole solution (None for a pure PRM).
    """

    step_scores: list[float]
    outcome: float | None = None
    tokens: int = 0  # tokens the verifier ran over to produce this

    def aggregate(self, how: Aggregation = "last") -> float:
        return aggregate_steps(self.step_scores, how)


def aggregate_steps(scores: list[float], how: str = "last") -> float:
    """Reduce step scores to one number. An empty solution scores 0."""
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown step aggregation {how!r}: choose one of {list(AGGREGATIONS)}")
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    return sum(scores) / len(scores)


@runtime_checkable
class Verifier(Protocol):
    """Scores solutions (full or partial) to prompts.

    Optional, used by budgeted strategies when present (see :mod:`ponder.strategies.budget`):
    ``count_tokens(prompt, solution) -> int``, the tokens ``score`` runs one pair through (without
    it one token per UTF-8 byte plus one is assumed), and ``context_length``.
    """

    def score(self, prompts: list[str], solutions: list[str]) -> list[VerifierScore]:
        """One score per (prompt, solution) pair."""
        ...

    @property
    def num_params(self) -> int:
        """Non-embedding parameters, for FLOPs accounting."""
        ...
