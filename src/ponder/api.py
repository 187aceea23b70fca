"""The Python API: ``ponder.solve`` on the embedded default."""

from __future__ import annotations

from functools import lru_cache

from ponder.backends.base import Generator
from ponder.backends.embedded import DEFAULT_PREFIX_CACHE_MB, EmbeddedGenerator
from ponder.errors import ConfigError
from ponder.strategies.base import StrategyResult
from ponder.strategies.budget import Budget
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
from ponder.tasks.arithmetic import parse_question
from ponder.verifiers.base import Verifier
from ponder.verifiers.embedded import load_embedded_verifier
from ponder.verifiers.spec import check_spec


@lru_cache(maxsize=1)
def default_models() -> tuple[EmbeddedGenerator, Verifier]:
    """The shipped policy and default verifier (the step checker), loaded once per process. The
    policy keeps a prefix cache, so tree searches do not recompute the paths they continue."""
    return EmbeddedGenerator.load(prefix_cache_mb=DEFAULT_PREFIX_CACHE_MB), load_embedded_verifier()


@lru_cache(maxsize=4)
def _generator_for(spec: str) -> Generator:
    from ponder.backends.spec import load_generator

    return load_generator(spec)


def resolve_generator(backend: str | Generator | None) -> Generator:
    """The generator a backend spec names (loaded once per process), or ``backend`` itself."""
    if backend is None or backend == "embedded":
        return default_models()[0]
    if isinstance(backend, str):
        return _generator_for(backend.strip())
    if not isinstance(backend, Generator):
        raise ConfigError(f"backend must be a backend spec string or a Generator, got {backend!r}")
    return backend


@lru_cache(maxsize=4)
def _verifier_for(spec: str) -> Verifier:
    from ponder.verifiers.spec import load_verifier

    return load_verifier(spec)


def resolve_verifier(verifier: str | Verifier | None) -> Verifier:
    """The verifier a verifier spec names (loaded once per process), or ``verifier`` itself."""
    if verifier is None or verifier == "embedded":
        return default_models()[1]
    if isinstance(verifier, str):
        return _verifier_for(verifier.strip())
    if not isinstance(verifier, Verifier):
        raise ConfigError(f"verifier must be a verifier spec string or a Verifier, got {verifier!r}")
    return verifier


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
    backend: str | Generator | None = None,
    verifier: str | Verifier | None = None,
    **params: object,
) -> StrategyResult:
    """Answer a chained-arithmetic question (e.g. ``"48+27-13"``) with the embedded models.

    The strategy spends at most ``budget`` (any of samples / tokens / FLOPs); ``samples=N`` is
    short for ``budget=Budget(samples=N)``, and 16 samples is the default. ``params`` set the
    strategy's own parameters (e.g. ``beam_width=4``). ``backend`` is the policy: a backend spec
    (``"embedded"``, ``"openai://host:port/model"``, ``"hf:/dir"``, ``"gguf:/file.gguf"``, see
    :mod:`ponder.backends.spec`) or a Generator; the embedded policy by default. ``verifier`` is
    what scores solutions for the strategies that use one: a verifier spec (``"embedded"``,
    ``"hf-prm:/dir"``, ``"vllm-reward://host:port/model"``, ``"judge:<backend spec>"``,
    ``"answer-check"``, ..., see :mod:`ponder.verifiers.spec`) or a Verifier; the embedded step
    checker by default (``"embedded+prm"``: the embedded PRM). A strategy that uses no verifier
    leaves it unloaded (a malformed spec is still refused).
    """
    if not question or not question.strip():
        raise ConfigError("the question is empty")
    limits = resolve_budget(budget, samples)
    problem = parse_question(question)
    runner = make_strategy(strategy, **params)
    if strategy in NEEDS_VERIFIER:
        scorer = resolve_verifier(verifier)
    else:
        if isinstance(verifier, str):
            check_spec(verifier)
        scorer = None
    generator = resolve_generator(backend)
    if limits.seconds is not None and limits.throughput is None:
        # A deadline predicts each call's time: measure this machine's speed once per process.
        import dataclasses

        from ponder.allocation.deadline import cached_throughput

        limits = dataclasses.replace(limits, throughput=cached_throughput(generator, scorer))
    return runner.run(problem.prompt, generator, scorer, limits, seed)
