"""Shared pieces of the sampling strategies: draw N full solutions, score them, read answers."""

from __future__ import annotations

from ponder.backends.base import Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies.base import Candidate, Compute
from ponder.tasks.answers import extract_answer
from ponder.verifiers.base import Verifier


def sample_candidates(
    prompt: str, generator: Generator, n: int, temperature: float, seed: int, compute: Compute
) -> list[Candidate]:
    if n < 1:
        raise ConfigError(f"the budget allows {n} samples; this strategy needs at least 1")
    groups = generator.generate([prompt], SamplingParams(n=n, temperature=temperature, seed=seed))
    compute.add_generation(generator, groups)
    return [Candidate(text=c.text, answer=extract_answer(c.text)) for c in groups[0]]


def score_candidates(
    prompt: str, candidates: list[Candidate], verifier: Verifier | None, aggregation: str, compute: Compute
) -> None:
    if verifier is None:
        raise ConfigError("this strategy needs a verifier")
    scores = verifier.score([prompt] * len(candidates), [c.text for c in candidates])
    compute.add_verification(verifier, sum(s.tokens for s in scores))
    for cand, s in zip(candidates, scores):
        if aggregation == "orm":
            if s.outcome is None:
                raise ConfigError("aggregation 'orm' needs a verifier with an outcome head")
            cand.score = s.outcome
        else:
            cand.score = s.aggregate(aggregation)  # type: ignore[arg-type]
