"""The Python API: ``ponder.solve`` on the embedded default."""

from __future__ import annotations

from functools import lru_cache

from ponder.backends.embedded import EmbeddedGenerator
from ponder.errors import ConfigError
from ponder.strategies.base import StrategyResult
from ponder.strategies.budget import Budget
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
from ponder.tasks.arithmetic import parse_question
from ponder.verifiers.embedded import EmbeddedVerifier


@lru_cache(maxsize=1)
def default_models() -> tuple[EmbeddedGenerator, EmbeddedVerifier]:
    """The shipped policy and verifier, loaded once per process."""
    return EmbeddedGenerator.load(), EmbeddedVerifier.load()


DEFAULT_SAMPLES = 16


def resolve_budget(budget: Budget | None, samples: int | None) -> Budget:
    """The budget to run with: ``budget``, or ``Budget(samples=samples)``; 16 samples when neither."""
    if budget is not None and samples is not None:
        raise ConfigError("give either budget=Budget(...) or samples=, not both")
    if budget is None:
        return Budget(samples=DEFAULT_SAMPLES if samples is None else samples)
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be a ponder Budget (e.g. Budget(tokens=5000)), got {budget!r}")
    return budget


def solve(
    question: str,
    strategy: str = "majority",
    samples: int | None = None,
    seed: int = 0,
    *,
    budget: Budget | None = None,
    **params: object,
) -> StrategyResult:
    """Answer a chained-arithmetic question (e.g. ``"48+27-13"``) with the embedded models.

    The strategy spends at most ``budget`` (any of samples / tokens / FLOPs); ``samples=N`` is
    short for ``budget=Budget(samples=N)``, and 16 samples is the default. ``params`` set the
    strategy's own parameters (e.g. ``beam_width=4``).
    """
    if not question or not question.strip():
        raise ConfigError("the question is empty")
    limits = resolve_budget(budget, samples)
    problem = parse_question(question)
    runner = make_strategy(strategy, **params)
    generator, verifier = default_models()
    return runner.run(
        problem.prompt, generator, verifier if strategy in NEEDS_VERIFIER else None, limits, seed
    )
