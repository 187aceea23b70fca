"""Shared pieces of the sampling strategies: draw full solutions within a budget, score them, read answers."""

from __future__ import annotations

from ponder.backends.base import SamplingParams
from ponder.errors import ConfigError
from ponder.strategies.base import Candidate
from ponder.strategies.budget import MAX_BATCH, MAX_SAMPLES, BudgetTracker, Cost, derive_seed
from ponder.tasks.answers import extract_answer
from ponder.verifiers.base import AGGREGATIONS, VerifierScore

SCORE_AGGREGATIONS = (*AGGREGATIONS, "orm")


def check_param(ok: bool, strategy: str, message: str) -> None:
    """Refuse a bad strategy parameter value with the same wording the registry uses."""
    if not ok:
        raise ConfigError(f"bad parameter for strategy {strategy!r}: {message}")


def check_aggregation(strategy: str, aggregation: str) -> None:
    check_param(
        aggregation in SCORE_AGGREGATIONS,
        strategy,
        f"aggregation must be one of {list(SCORE_AGGREGATIONS)}, got {aggregation!r}",
    )


def score_value(score: VerifierScore, aggregation: str) -> float:
    """One number from a verifier score: step scores aggregated, or the outcome head ("orm")."""
    if aggregation == "orm":
        if score.outcome is None:
            raise ConfigError("aggregation 'orm' needs a verifier with an outcome head")
        return score.outcome
    return score.aggregate(aggregation)  # type: ignore[arg-type]


def sample_cost(tracker: BudgetTracker, prompt: str, k: int, max_new_tokens: int, scored: bool) -> Cost:
    """Worst case of drawing ``k`` full solutions in one call (and scoring them, if ``scored``)."""
    cost = tracker.generation_cost([prompt], k, max_new_tokens, samples=k)
    if scored:
        cost = cost + tracker.scoring_estimate(prompt, "", max_new_tokens, count=k)
    return cost


def require_one_sample(tracker: BudgetTracker, prompt: str, max_new_tokens: int, scored: bool) -> None:
    what = f"one sample of up to {max_new_tokens} new tokens" + (", scored" if scored else "")
    tracker.require_minimum(sample_cost(tracker, prompt, 1, max_new_tokens, scored), what)


def sample_batch(
    prompt: str, tracker: BudgetTracker, k: int, temperature: float, max_new_tokens: int, seed: int
) -> list[Candidate]:
    params = SamplingParams(n=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    groups = tracker.generate([prompt], params, samples=k)
    return [Candidate(text=c.text, answer=extract_answer(c.text)) for c in groups[0]]


def affordable_batch(
    tracker: BudgetTracker, prompt: str, upper: int, max_new_tokens: int, scored: bool
) -> int:
    """The most samples (at most ``upper``) the next call can draw with its worst case in budget."""
    upper = min(upper, MAX_BATCH, MAX_SAMPLES - tracker.compute.samples)
    return tracker.largest(lambda k: sample_cost(tracker, prompt, k, max_new_tokens, scored), upper)


def sample_within_budget(
    prompt: str,
    tracker: BudgetTracker,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    aggregation: str | None = None,
) -> list[Candidate]:
    """Draw full solutions in batches until the budget is spent (scored when ``aggregation`` is set).

    A samples-only budget is one call of exactly that many samples with ``seed``. Token and FLOPs
    budgets are sized by the worst case (every sample at ``max_new_tokens``); samples usually stop
    sooner, so further batches spend what the first left over.
    """
    scored = aggregation is not None
    limit = tracker.budget.samples if tracker.budget.samples is not None else MAX_SAMPLES
    candidates: list[Candidate] = []
    batch = 0
    while len(candidates) < limit:
        k = affordable_batch(tracker, prompt, limit - len(candidates), max_new_tokens, scored)
        if k == 0:
            break
        drawn = sample_batch(
            prompt,
            tracker,
            k,
            temperature,
            max_new_tokens,
            seed if batch == 0 else derive_seed(seed, "batch", batch),
        )
        if aggregation is not None:
            score_candidates(prompt, drawn, tracker, aggregation)
        candidates.extend(drawn)
        batch += 1
    return candidates


def score_candidates(
    prompt: str, candidates: list[Candidate], tracker: BudgetTracker, aggregation: str
) -> None:
    """Score candidates in one verifier call. Planning made room for all of them; should the
    verifier need more tokens than planned, the ones past the budget stay unscored (None)."""
    if tracker.verifier is None:
        raise ConfigError(f"strategy {tracker.strategy!r} needs a verifier")
    k = tracker.affordable_prefix(prompt, [c.text for c in candidates])
    scores = tracker.score(prompt, [c.text for c in candidates[:k]])
    for cand, s in zip(candidates, scores):
        cand.score = score_value(s, aggregation)
