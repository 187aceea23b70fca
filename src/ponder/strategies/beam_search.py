"""PRM beam search (Snell et al. 2024; HF search-and-learn).

Each round generates N candidate next steps: every kept beam is continued N/M ways from
``prompt + beam`` (``stop_at_step``), the candidates are scored as partial solutions by the verifier,
candidates that reach an answer line are set aside, and the best M open ones are kept. Here M is
the number of beams kept (``beam_width``); Snell et al. call N/M the beam width. The search stops
after ``max_rounds``, when no beam is open, when N answered paths have been set aside, or when the
budget cannot pay for one more candidate. The answer is that of the best-scoring answered path (or,
``weighted``, the answer whose answered paths' scores sum highest).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.base import Generator
from ponder.strategies.base import StrategyResult
from ponder.strategies.best_of_n import pick_by_score
from ponder.strategies.budget import Budget, BudgetExhausted, BudgetTracker, Cost, derive_seed
from ponder.strategies.sampling import check_param
from ponder.strategies.search import (
    Path,
    StepSearch,
    complete_greedily,
    dedupe,
    distribute,
    expand,
    new_samples,
    ranked,
    retire_unfittable,
    round_cost,
    round_summary,
    score_paths,
)
from ponder.verifiers.base import Verifier


@dataclass
class BeamSearch(StepSearch):
    beam_width: int = 4  # M: open beams kept after each round
    name: str = "beam_search"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param(self.beam_width >= 1, self.name, f"beam_width must be >= 1, got {self.beam_width}")
        check_param(
            self.n is None or self.n >= self.beam_width,
            self.name,
            f"n ({self.n}) must be at least beam_width ({self.beam_width}): each kept beam needs a candidate",
        )

    # Lookahead overrides these two: how many greedy steps score a candidate, and the scoring.
    def rollout_steps(self) -> int:
        return 0

    def score_candidates(
        self, tracker: BudgetTracker, prompt: str, cands: list[Path], seed: int
    ) -> str | None:
        """Score the round's candidates; returns a note for the trace, if any."""
        score_paths(tracker, prompt, cands, self.aggregation)
        return None

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        width, keep, step = self.width(budget), self.beam_width, self.max_step_tokens
        rollout = self.rollout_steps()
        root = Path("")
        tracker.require_minimum(
            round_cost(tracker, prompt, [root], [keep], step, keep, rollout),
            f"a first round of beam_width={keep} candidate steps of up to {step} tokens"
            + (f", each rolled out {rollout} steps" if rollout else "")
            + ", scored",
        )
        beams, answered, reported, trace = [root], [], [], []
        stop = f"{self.max_rounds} rounds done"
        for r in range(self.max_rounds):
            if not beams:
                stop = "no open beams left"
                break
            if len(answered) >= width:
                stop = f"{len(answered)} answered paths (N={width})"
                break

            def cost(k: int, beams: list[Path] = beams) -> Cost:
                counts = distribute(k, len(beams))
                return round_cost(tracker, prompt, beams, counts, step, new_samples(tracker, k), rollout)

            k = tracker.largest(cost, width)
            if k == 0:
                stop = "budget spent"
                break
            counts = distribute(k, len(beams))
            round_seed = derive_seed(seed, "round", r)
            cands: list[Path] = []
            note = None
            try:
                children = expand(tracker, prompt, beams, counts, self, round_seed)
                cands = dedupe([c for group in children for c in group])
                retire_unfittable(tracker, prompt, cands)
                note = self.score_candidates(tracker, prompt, cands, round_seed)
            except BudgetExhausted:  # only when a backend needs more tokens than the plan assumed
                reported.extend(cands)
                stop = "budget spent mid-round"
                break
            reported.extend(cands)
            answered.extend(c for c in cands if c.status == "answered")
            beams = ranked([c for c in cands if c.status == "open"])[:keep]
            trace.append(round_summary(r, k, sum(1 for c in counts if c), cands, beams))
            if note:
                trace.append(note)
        trace.append(f"stopped: {stop}")
        if not answered and beams:
            done = complete_greedily(tracker, prompt, beams[0], self, derive_seed(seed, "complete"))
            if done is not None:
                reported.append(done)
                answered.extend([done] if done.status == "answered" else [])
                trace.append(f"completed the best open beam greedily: answer {done.answer}")
        answer = pick_by_score([p.candidate() for p in answered], self.weighted)
        return StrategyResult(
            answer=answer, candidates=[p.candidate() for p in reported], compute=tracker.compute, trace=trace
        )
