"""The Python API: ``ponder.solve`` on the embedded default."""

from __future__ import annotations

from functools import lru_cache

from ponder.backends.embedded import EmbeddedGenerator
from ponder.errors import ConfigError
from ponder.strategies.base import StrategyResult
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
from ponder.tasks.arithmetic import parse_question
from ponder.verifiers.embedded import EmbeddedVerifier


@lru_cache(maxsize=1)
def default_models() -> tuple[EmbeddedGenerator, EmbeddedVerifier]:
    """The shipped policy and verifier, loaded once per process."""
    return EmbeddedGenerator.load(), EmbeddedVerifier.load()


def solve(
    question: str, strategy: str = "majority", samples: int = 16, seed: int = 0, **params: object
) -> StrategyResult:
    """Answer a chained-arithmetic question (e.g. ``"48+27-13"``) with the embedded models."""
    if not question or not question.strip():
        raise ConfigError("the question is empty")
    problem = parse_question(question)
    runner = make_strategy(strategy, **params)
    generator, verifier = default_models()
    return runner.run(
        problem.prompt, generator, verifier if strategy in NEEDS_VERIFIER else None, samples, seed
    )
