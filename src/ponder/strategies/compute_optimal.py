"""Compute-optimal scaling (Snell et al., 2024): estimate how hard the question is, then run the
strategy a calibrated policy chose for that difficulty and budget.

1. **Probe**: draw ``probe_samples`` solutions (fewer when the budget is small) and score them; the
   mean score (with a policy calibrated on ``score+length``, also the samples' mean length) predicts
   the difficulty bin (:mod:`ponder.allocation.difficulty`). The probe is paid from the run's budget.
2. **Choose**: the policy file (``ponder calibrate``) gives, for the bin and the budget, a
   registered strategy and its parameters, and where a smaller budget did as well in calibration,
   the samples to stop at (a budget is a cap, not a target).
3. **Run** it on what the budget has left. When the choice is a sampling strategy (majority,
   best-of-N, weighted best-of-N) the probe's samples are not wasted: they join its samples in the
   final vote, so the question gets the budget's worth of samples in total. When the rest of the
   budget cannot pay for the choice's smallest run, the probe's own samples answer.

With ``accept`` set, a probe sample whose score (the lowest step score) reaches it answers at once,
whatever the policy chose: the calibration measures each candidate on its own and cannot see that
a verifier this sure of a sample already has the answer (greedy decoding, the cheap choice for easy
bins, would ignore it). Off by default: the threshold only means something for a verifier whose
scores are calibrated (the shipped step checker's are; 0.5 is adaptive best-of-N's threshold).

With ``choice`` (a strategy label, e.g. ``adaptive_best_of_n`` or ``dvts:branching=4``) instead of
a policy file, every question probes and then runs that choice: this is how ``ponder calibrate``
measures a candidate, so the policy is chosen on what a choice is worth *after* the probe (a
sampling choice reuses the probe's samples; adaptive best-of-N costs nothing more when a probe
sample is already confident), not on what it is worth run alone.

Without a policy file, every bin gets weighted best-of-N and the bins come from fixed cut points
on the probe's mean score (a fallback; calibrate for real use). A policy calibrated for other
model weights is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ponder.backends.base import Generator
from ponder.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ponder.strategies.base import Candidate, Compute, Strategy, StrategyResult
from ponder.strategies.best_of_n import pick_by_score
from ponder.strategies.budget import Budget, BudgetTooSmall, BudgetTracker, derive_seed
from ponder.strategies.majority import vote
from ponder.strategies.sampling import check_param, require_one_sample, score_value
from ponder.verifiers.base import Verifier

if TYPE_CHECKING:  # ponder.allocation builds on the strategies: imported when a run starts
    from ponder.allocation.difficulty import DifficultyPredictor, Probe
    from ponder.allocation.policy import Policy, PolicyEntry

SAMPLING = ("majority", "best_of_n", "weighted_best_of_n", "adaptive_best_of_n")
FALLBACK = "weighted_best_of_n"  # every bin's choice without a policy file


@dataclass
class ComputeOptimalResult(StrategyResult):
    predicted_bin: int = 0
    probe_feature: float | None = None
    chosen: str = ""


def remaining(budget: Budget, tracker: BudgetTracker) -> Budget:
    """What ``budget`` has left after what ``tracker`` spent (each limit set, never below 0)."""
    spent = tracker.spent
    return Budget(
        samples=None if budget.samples is None else max(0, budget.samples - spent.samples),
        tokens=None if budget.tokens is None else max(0, budget.tokens - spent.tokens),
        flops=None if budget.flops is None else max(0.0, budget.flops - spent.flops),
        seconds=None if budget.seconds is None else max(0.0, budget.seconds - spent.seconds),
        throughput=budget.throughput,
    )


@dataclass
class ComputeOptimal:
    policy: str | None = None  # policy file from `ponder calibrate`; None: the fallback above
    probe_samples: int = 4  # without a policy file (a policy file sets its own)
    aggregation: str = "auto"  # probe scores: "auto" (ORM head if any, else last step) or as best_of_n
    temperature: float = 1.0
    max_new_tokens: int = 160
    accept: float | None = None  # a probe sample scoring >= this (min over steps) answers at once
    choice: str | None = None  # a fixed choice (strategy label) for every bin instead of a policy
    name: str = "compute_optimal"

    def __post_init__(self) -> None:
        check_param(
            self.probe_samples >= 1, self.name, f"probe_samples must be >= 1, got {self.probe_samples}"
        )
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )
        check_param(
            self.aggregation in ("auto", "last", "min", "prod", "mean", "orm"),
            self.name,
            f"aggregation must be auto, last, min, prod, mean or orm, got {self.aggregation!r}",
        )
        check_param(
            self.accept is None or 0.0 < self.accept <= 1.0,
            self.name,
            f"accept must be in (0, 1], got {self.accept}",
        )
        if self.choice is not None:
            check_param(self.policy is None, self.name, "give a policy file or a fixed choice, not both")
            self._fixed_choice()  # refuse an unknown strategy or parameter now

    def _fixed_choice(self) -> PolicyEntry:
        from ponder.allocation.policy import PolicyEntry
        from ponder.strategies.registry import make_strategy, parse_label

        name, params = parse_label(str(self.choice))
        check_param(name != self.name, self.name, "compute_optimal cannot be its own choice")
        make_strategy(name, **params)
        return PolicyEntry(name, params)

    def _policy(self, generator: Generator, verifier: Verifier | None) -> Policy | None:
        if self.policy is None:
            return None
        from ponder.allocation.policy import load_policy

        policy = load_policy(self.policy)
        policy.check_models(generator, verifier, self.policy)
        return policy

    def _predictor(self, policy: Policy | None) -> DifficultyPredictor:
        """What reads a question's difficulty: the policy file's, or the fallback's fixed cut points."""
        from ponder.allocation.difficulty import DifficultyPredictor

        if policy is not None:
            return policy.predictor
        return DifficultyPredictor(
            probe_samples=self.probe_samples,
            aggregation=self.aggregation,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
        )

    def probe(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> tuple[Probe, Compute]:
        """Step 1 alone, as :meth:`run` does it (same samples for the same seed): the probe and what
        it spent. A batch allocator probes every question first, then hands each probe back to
        :meth:`run` with that question's budget, so no probe is paid twice."""
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        probe = self._probe(prompt, tracker, self._predictor(self._policy(generator, verifier)), seed)
        compute = tracker.compute
        compute.wall_seconds = tracker.elapsed()
        return probe, compute

    @staticmethod
    def _probe(prompt: str, tracker: BudgetTracker, predictor: DifficultyPredictor, seed: int) -> Probe:
        from ponder.allocation.difficulty import run_probe

        require_one_sample(tracker, prompt, predictor.max_new_tokens, scored=True)
        return run_probe(
            prompt,
            tracker,
            predictor.probe_samples,
            predictor.temperature,
            predictor.max_new_tokens,
            derive_seed(seed, "probe"),
            predictor.aggregation,
        )

    def run(
        self,
        prompt: str,
        generator: Generator,
        verifier: Verifier | None,
        budget: Budget,
        seed: int,
        *,
        probed: tuple[Probe, Compute] | None = None,
    ) -> StrategyResult:
        """Probe, choose, run (module docstring). ``probed``: a probe :meth:`probe` already ran for
        this prompt and seed; its compute counts in ``budget`` and in the result, once."""
        from ponder.allocation.policy import PolicyEntry

        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        policy = self._policy(generator, verifier)
        predictor = self._predictor(policy)
        probe_seconds = 0.0
        if probed is None:
            probe = self._probe(prompt, tracker, predictor, seed)
        else:  # paid already: it counts in this run's budget and compute, its time too
            probe, probe_compute = probed
            probe_seconds = probe_compute.wall_seconds
            tracker.compute.merge(dataclasses.replace(probe_compute, wall_seconds=0.0))
        value = predictor.feature(probe.feature, probe.length)
        bin_ = predictor.predict(value)
        if policy is not None:
            grid_budget, entry = policy.entry(bin_, budget)
            where = f"policy: bin {bin_}, budget {grid_budget:g}"
        elif self.choice is not None:
            entry, where = self._fixed_choice(), "fixed choice"
        else:
            entry, where = PolicyEntry(FALLBACK), "no policy file: fallback"
        feature = "-" if probe.feature is None else f"{probe.feature:.3f}"
        if predictor.weights is not None and value is not None:
            feature += f", mean length {probe.length:.0f} chars -> feature {value:.3f}"
        trace = [
            f"probe: {len(probe.candidates)} samples, mean score {feature} -> predicted bin {bin_} of "
            f"{predictor.n_bins}",
            f"chose {entry.label} ({where})",
        ]
        rest = remaining(budget, tracker)
        if entry.budget is not None and rest.samples is not None:
            # Calibration found that this bin gains nothing from more than entry.budget samples.
            rest = dataclasses.replace(
                rest, samples=max(0, min(rest.samples, int(entry.budget) - tracker.spent.samples))
            )
            trace.append(
                f"spends at most {entry.budget:g} samples in all (more gained nothing in calibration)"
            )
        sub_result: StrategyResult | None = None
        from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy

        sub = make_strategy(entry.strategy, **entry.params)
        accepted = self._accepted(probe)
        if accepted is not None:
            trace.append(
                f"a probe sample scores {accepted.score:.3f} >= accept {self.accept}: it answers, "
                f"{entry.label} is not run"
            )
        elif isinstance(sub, AdaptiveBestOfN) and sub.confident(self._rescored(probe, sub.aggregation)):
            # The probe's samples already hold a confident answer: adaptive sampling would stop after
            # its first batch, so do not pay for one.
            trace.append(f"a probe sample already scores >= {sub.threshold}: no more sampling")
        else:
            try:
                sub_result = sub.run(
                    prompt,
                    generator,
                    verifier if entry.strategy in NEEDS_VERIFIER else None,
                    rest,
                    derive_seed(seed, "main"),
                )
            except BudgetTooSmall:
                rest_text = rest.describe()
                trace.append(f"the rest of the budget ({rest_text}) cannot pay for it: the probe answers")
        compute = tracker.compute
        candidates: list[Candidate] = list(probe.candidates)
        if sub_result is not None:
            compute = dataclasses.replace(compute)
            compute.merge(sub_result.compute)
            candidates += sub_result.candidates
            trace += ["  " + line for line in sub_result.trace]
        compute.wall_seconds = tracker.elapsed() + probe_seconds
        answer = (
            accepted.answer
            if accepted is not None
            else self._answer(entry, sub, probe, sub_result, candidates)
        )
        return ComputeOptimalResult(
            answer=answer,
            candidates=candidates,
            compute=compute,
            trace=trace,
            predicted_bin=bin_,
            probe_feature=value,
            chosen=entry.label,
        )

    def _accepted(self, probe: Probe) -> Candidate | None:
        """The probe's best sample when ``accept`` is set and its score reaches it."""
        if self.accept is None:
            return None
        answered = [c for c in self._rescored(probe, "min") if c.answer is not None and c.score is not None]
        best = max(answered, key=lambda c: c.score or 0.0, default=None)
        return best if best is not None and (best.score or 0.0) >= self.accept else None

    @staticmethod
    def _rescored(probe: Probe, aggregation: str) -> list[Candidate]:
        """The probe's candidates with their scores read by ``aggregation``."""
        from ponder.allocation.difficulty import resolve_aggregation

        how = resolve_aggregation(aggregation, probe.scores)
        rescored = [
            dataclasses.replace(c, score=score_value(s, how)) for c, s in zip(probe.candidates, probe.scores)
        ]
        return rescored + [dataclasses.replace(c) for c in probe.candidates[len(probe.scores) :]]

    @staticmethod
    def _answer(
        entry: PolicyEntry,
        sub: Strategy,
        probe: Probe,
        sub_result: StrategyResult | None,
        candidates: list[Candidate],
    ) -> object:
        """The final answer: sampling choices vote over the probe's samples and their own."""

        if entry.strategy in SAMPLING:
            if entry.strategy == "majority":
                return vote(candidates)
            # The probe's samples are read as the chosen strategy reads its own, so one score scale
            # ranks them all.
            rescored = ComputeOptimal._rescored(probe, str(getattr(sub, "aggregation", "min")))
            own = sub_result.candidates if sub_result is not None else []
            return pick_by_score(rescored + list(own), bool(getattr(sub, "weighted", False)))
        if sub_result is not None and sub_result.answer is not None:
            return sub_result.answer
        return pick_by_score(probe.candidates, weighted=True)
