"""Diverse verifier tree search (DVTS; Beeching et al. 2024, HF search-and-learn).

The generation budget N is split into N/M independent subtrees. Each subtree is a beam of width 1
grown greedily by the verifier: every round its path is continued M ways (``branching``), and the
best-scoring candidate becomes its path; the subtree ends when that candidate is an answer (or when
all its candidates die). Subtrees never compete for survival, so one strong early step cannot pull
every path into the same region of the tree as it can in beam search. A subtree's final solution is
its best-scoring answered path; the answer is the best final (or, ``weighted``, the answer whose
finals' scores sum highest). When the budget cannot pay for every open subtree in a round, the
best-scoring ones go first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    expand,
    new_samples,
    ranked,
    retire_unfittable,
    round_cost,
    score_paths,
)
from ponder.verifiers.base import Verifier


@dataclass(eq=False)
class _Subtree:
    index: int
    path: Path
    finals: list[Path] = field(default_factory=list)  # answered paths it produced
    open: bool = True


def _group(subtrees: list[_Subtree]) -> tuple[list[Path], list[list[_Subtree]]]:
    """Distinct current paths (by identity: all subtrees start at the shared root) and their subtrees,
    so that a prompt several subtrees share is prefilled once."""
    paths: list[Path] = []
    members: list[list[_Subtree]] = []
    for s in subtrees:
        for i, p in enumerate(paths):
            if p is s.path:
                members[i].append(s)
                break
        else:
            paths.append(s.path)
            members.append([s])
    return paths, members


@dataclass
class DVTS(StepSearch):
    branching: int = 4  # M: candidate next steps per subtree per round
    name: str = "dvts"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param(self.branching >= 1, self.name, f"branching must be >= 1, got {self.branching}")
        check_param(
            self.n is None or self.n >= self.branching,
            self.name,
            f"n ({self.n}) must be at least branching ({self.branching}): a subtree needs {self.branching}",
        )

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        branching, step = self.branching, self.max_step_tokens
        root = Path("")
        tracker.require_minimum(
            round_cost(tracker, prompt, [root], [branching], step, branching),
            f"one subtree's first round: branching={branching} candidate steps of up to {step} tokens, "
            "scored",
        )
        subtrees = [_Subtree(i, root) for i in range(max(1, self.width(budget) // branching))]
        reported: list[Path] = []
        trace = [f"{len(subtrees)} subtrees x {branching} candidates per round"]
        stop = f"{self.max_rounds} rounds done"
        for r in range(self.max_rounds):
            # Best-scoring open subtrees first: they get the budget when it cannot pay for all.
            alive = sorted(
                (s for s in subtrees if s.open),
                key=lambda s: -(s.path.score if s.path.score is not None else -1.0),
            )
            if not alive:
                stop = "every subtree finished"
                break

            def cost(k: int, alive: list[_Subtree] = alive) -> Cost:
                paths, members = _group(alive[:k])
                counts = [branching * len(m) for m in members]
                return round_cost(tracker, prompt, paths, counts, step, new_samples(tracker, k * branching))

            k = tracker.largest(cost, len(alive))
            if k == 0:
                stop = "budget spent"
                break
            paths, members = _group(alive[:k])
            kids: dict[int, list[Path]] = {}
            try:
                children = expand(
                    tracker,
                    prompt,
                    paths,
                    [branching * len(m) for m in members],
                    self,
                    derive_seed(seed, "round", r),
                )
                # A shared path's samples are dealt out M at a time, one share per subtree.
                for group, subs in zip(children, members):
                    for t, s in enumerate(subs):
                        kids[s.index] = dedupe(group[t * branching : (t + 1) * branching])
                cands = [c for s in alive[:k] for c in kids[s.index]]
                retire_unfittable(tracker, prompt, cands)
                score_paths(tracker, prompt, cands, self.aggregation)  # one verifier call for all subtrees
            except BudgetExhausted:  # only when a backend needs more tokens than the plan assumed
                reported.extend(c for cs in kids.values() for c in cs)
                stop = "budget spent mid-round"
                break
            reported.extend(cands)
            for s in alive[:k]:
                s.finals.extend(c for c in kids[s.index] if c.status == "answered")
                live = ranked([c for c in kids[s.index] if c.status != "dead"])
                if not live or live[0].status == "answered":
                    s.open = False
                else:
                    s.path = live[0]
            n_open = sum(s.open for s in subtrees)
            n_done = sum(bool(s.finals) and not s.open for s in subtrees)
            trace.append(
                f"round {r + 1}: {k} subtree(s) expanded, {len(cands)} distinct candidates; "
                f"{n_done} subtree(s) answered, {n_open} open"
            )
        trace.append(f"stopped: {stop}")
        finals = [ranked(s.finals)[0] for s in subtrees if s.finals]
        if not finals:
            best_open = ranked([s.path for s in subtrees if s.open and s.path is not root])
            if best_open:
                done = complete_greedily(tracker, prompt, best_open[0], self, derive_seed(seed, "complete"))
                if done is not None:
                    reported.append(done)
                    finals = [done] if done.status == "answered" else []
                    trace.append(f"completed the best open path greedily: answer {done.answer}")
        for s in subtrees:
            best = ranked(s.finals)[0] if s.finals else None
            if best is not None:
                score = "-" if best.score is None else f"{best.score:.3f}"
                trace.append(f"subtree {s.index}: answer {best.answer} (score {score})")
            else:
                trace.append(f"subtree {s.index}: no answer")
        answer = pick_by_score([p.candidate() for p in finals], self.weighted)
        return StrategyResult(
            answer=answer, candidates=[p.candidate() for p in reported], compute=tracker.compute, trace=trace
        )
