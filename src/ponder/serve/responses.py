"""Search results as OpenAI bodies: choices (the top-n distinct answers), usage, the ``ponder`` field."""

from __future__ import annotations

import math
from typing import Any

from ponder.serve.models import ServedModel
from ponder.serve.routing import SearchPlan
from ponder.strategies.base import Candidate, Compute, StrategyResult


def rank_answers(result: StrategyResult, n: int) -> list[Candidate]:
    """The best candidate of each of the top ``n`` distinct answers, the strategy's answer first.

    Candidates are grouped by answer (by text when they have none); the other groups rank by their
    best verifier score when the strategy scored, then by how many candidates gave them. Partial
    search paths count only when no candidate is complete.
    """
    complete = [c for c in result.candidates if not c.partial]
    pool = complete or list(result.candidates)
    groups: dict[tuple[str, Any], list[Candidate]] = {}
    for c in pool:
        key = ("answer", c.answer) if c.answer is not None else ("text", c.text.strip())
        groups.setdefault(key, []).append(c)
    chosen = ("answer", result.answer) if result.answer is not None else None
    if chosen is not None and chosen not in groups:  # an answer the strategy read off a partial path
        members = [c for c in result.candidates if c.answer == result.answer]
        if members:
            groups[chosen] = members

    def best(members: list[Candidate]) -> float:
        return max((c.score for c in members if c.score is not None), default=-math.inf)

    # sorted() is stable, so equal groups keep the order the strategy produced them in.
    ordered = sorted(
        groups.items(),
        key=lambda kv: (kv[0] == chosen, kv[0][0] == "answer", best(kv[1]), len(kv[1])),
        reverse=True,
    )
    out = []
    for _, members in ordered[:n]:
        top = best(members)
        out.append(next(c for c in members if (c.score if c.score is not None else -math.inf) == top))
    return out


def cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def answer_texts(plan: SearchPlan, result: StrategyResult, n: int, stops: list[str]) -> list[str]:
    ranked = rank_answers(result, n)
    if not ranked:
        return [""]
    return [cut_at_stop(plan.model.render(c.text), stops) for c in ranked]


def spent(compute: Compute) -> dict[str, float]:
    tokens = compute.policy_tokens + compute.verifier_tokens
    return {
        "samples": compute.samples,
        "completions": compute.completions,
        "policy_prompt_tokens": compute.policy_prompt_tokens,
        "policy_completion_tokens": compute.policy_completion_tokens,
        "policy_cached_tokens": compute.policy_cached_tokens,  # read from a prefix cache, not computed
        "verifier_tokens": compute.verifier_tokens,
        "total_tokens": tokens,
        "policy_flops": compute.policy_flops,
        "verifier_flops": compute.verifier_flops,
        "total_flops": compute.total_flops,
    }


def total_compute(results: list[StrategyResult]) -> Compute:
    total = Compute()
    for r in results:
        total.merge(r.compute)
    return total


def usage(compute: Compute) -> dict[str, int]:
    """OpenAI usage counting everything spent, as budgets count it: the prompt tokens the policy
    computed and every token the verifier read (prompt), and every token the policy wrote
    (completion). Prompt tokens a prefix cache supplied were not computed and are not counted
    (``ponder.spent.policy_cached_tokens`` says how many)."""
    prompt = compute.policy_prompt_tokens + compute.verifier_tokens
    completion = compute.policy_completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _per_prompt(model: ServedModel, plan: SearchPlan, result: StrategyResult) -> dict[str, Any]:
    out: dict[str, Any] = {"answer": result.answer, "candidates_seen": len(result.candidates)}
    if plan.options.return_candidates:
        out["candidates"] = [
            {"text": model.render(c.text), "answer": c.answer, "score": c.score, "partial": c.partial}
            for c in result.candidates
        ]
    if plan.options.return_trace:
        out["trace"] = list(result.trace)
    return out


def ponder_info(plan: SearchPlan, results: list[StrategyResult], elapsed_s: float) -> dict[str, Any]:
    """The ``ponder`` field: strategy, budget, what was spent (and, when asked, candidates, trace)."""
    info = plan.describe()
    info["spent"] = spent(total_compute(results))
    info["elapsed_s"] = round(elapsed_s, 6)
    per = [_per_prompt(plan.model, plan, r) for r in results]
    if len(per) == 1:
        info.update(per[0])
    else:
        for p, r in zip(per, results):
            p["spent"] = spent(r.compute)
        info["prompts"] = per
    return info
