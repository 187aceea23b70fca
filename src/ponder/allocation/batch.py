"""A batch of questions under one total budget: probe every question, allocate, answer.

The budget is in samples (the policy's unit), and it is a hard total over the batch:

1. **Probe** each question, as ``compute_optimal`` does (same samples for the same seed). The
   probes are paid from the total first: a total that cannot pay for one probe per question is
   refused before anything runs.
2. **Allocate** what is left: each question's options are the policy's grid budgets at or above
   its probe, at the expected accuracy of its predicted bin (``Policy.curve``: the coverage model
   when the policy records one, else the calibrated curve), plus "the probe alone". The allocator
   (:func:`ponder.allocation.global_budget.allocate`) picks one per question by marginal expected
   gain per sample, never over the total.
3. **Answer** each question with ``compute_optimal`` capped at its allocation, handed its probe
   so that no probe is paid twice. Every strategy stays inside its cap, so the batch spends at
   most the total.

``on_answer`` sees each answer as it is made (the CLI writes it to disk at once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.allocation.global_budget import Option, allocate, expected_value
from ponder.backends.base import Generator
from ponder.errors import ConfigError
from ponder.strategies.base import Compute
from ponder.strategies.budget import Budget
from ponder.strategies.compute_optimal import ComputeOptimal
from ponder.verifiers.base import Verifier


@dataclass
class BatchAnswer:
    index: int
    answer: Any
    predicted_bin: int
    cap: int  # samples this question may spend, its probe included
    expected_accuracy: float  # of its bin at that cap, on the allocator's curve
    chosen: str
    compute: Compute
    trace: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchPlan:
    """The allocation, before any question is answered."""

    caps: list[int]
    bins: list[int]
    expected: list[float]
    total: int
    probe_samples: int
    curves: str

    @property
    def allocated(self) -> int:
        return sum(self.caps)


def check_total(n_questions: int, total: int, probe_samples: int) -> None:
    """Refuse an empty batch, or a total that cannot pay for one probe per question."""
    if n_questions == 0:
        raise ConfigError("the batch has no questions")
    if total < n_questions * probe_samples:
        raise ConfigError(
            f"a total of {total} samples cannot pay for the batch's probes: {n_questions} questions x "
            f"{probe_samples} probe samples = {n_questions * probe_samples}"
        )


def plan_caps(
    bins: Sequence[int], policy: Any, total: int, probe_samples: int, curves: str | None = None
) -> BatchPlan:
    """Per-question sample caps from predicted bins (pure: no model). Each question first gets its
    probe; what is left goes by marginal expected gain on the bins' accuracy curves."""
    if curves is None:
        curves = "coverage" if policy.has_coverage_model else "calibrated"
    n = len(bins)
    check_total(n, total, probe_samples)
    options: list[list[Option]] = []
    caps_of: list[list[int]] = []
    for b in bins:
        curve = policy.curve(int(b), curves)
        at_probe = max((v for g, v in curve if g <= probe_samples), default=curve[0][1] if curve else 0.0)
        grid = [(int(g), v) for g, v in curve if g > probe_samples]
        # Costs are the samples on top of the probe, which every question already has.
        options.append([Option(0.0, at_probe), *(Option(float(g - probe_samples), v) for g, v in grid)])
        caps_of.append([probe_samples, *(g for g, _ in grid)])
    choice = allocate(options, float(total - n * probe_samples))
    picks = [0 if i is None else i for i in choice]
    caps = [caps_of[q][i] for q, i in enumerate(picks)]
    assert sum(caps) <= total  # allocate() never exceeds its total
    return BatchPlan(
        caps=caps,
        bins=[int(b) for b in bins],
        expected=[options[q][i].value for q, i in enumerate(picks)],
        total=total,
        probe_samples=probe_samples,
        curves=curves,
    )


def solve_batch(
    prompts: Sequence[str],
    generator: Generator,
    verifier: Verifier,
    policy_file: str,
    total_samples: int,
    *,
    seed: int = 0,
    curves: str | None = None,
    on_plan: Callable[[BatchPlan], None] | None = None,
    on_answer: Callable[[BatchAnswer], None] | None = None,
    skip: set[int] | None = None,
    plan: BatchPlan | None = None,
) -> tuple[BatchPlan, list[BatchAnswer]]:
    """Answer ``prompts`` with at most ``total_samples`` samples in all (see the module docstring).

    A resumed batch passes the ``plan`` it recorded and the indices already answered (``skip``):
    only the other questions are probed (the same samples as before) and answered, at their
    recorded caps.
    """
    from ponder.allocation.policy import load_policy

    if not isinstance(total_samples, int) or isinstance(total_samples, bool) or total_samples < 1:
        raise ConfigError(f"the total budget must be a whole number of samples >= 1, got {total_samples!r}")
    policy = load_policy(policy_file)
    policy.check_models(generator, verifier, policy_file)
    if policy.budget_unit != "samples":
        raise ConfigError(f"policy file {policy_file} is in {policy.budget_unit}, a batch total in samples")
    strategy = ComputeOptimal(policy=policy_file)
    predictor = policy.predictor
    probe_samples = predictor.probe_samples
    check_total(len(prompts), total_samples, probe_samples)  # before probing anything
    skip = skip or set()
    if plan is not None and (len(plan.caps) != len(prompts) or plan.total != total_samples):
        raise ConfigError(
            f"the recorded plan is for {len(plan.caps)} questions and {plan.total} samples, "
            f"not {len(prompts)} and {total_samples}"
        )
    todo = [i for i in range(len(prompts)) if plan is None or i not in skip]
    probes = {}
    for i in todo:
        budget = Budget(samples=probe_samples)
        probes[i] = strategy.probe(prompts[i], generator, verifier, budget, seed)
    if plan is None:
        bins = [predictor.predict(predictor.feature(p.feature, p.length)) for p, _ in probes.values()]
        plan = plan_caps(bins, policy, total_samples, probe_samples, curves)
    if on_plan is not None:
        on_plan(plan)
    answers = []
    for i in todo:
        if i in skip:
            continue
        prompt, probed = prompts[i], probes[i]
        result = strategy.run(prompt, generator, verifier, Budget(samples=plan.caps[i]), seed, probed=probed)
        answer = BatchAnswer(
            index=i,
            answer=result.answer,
            predicted_bin=plan.bins[i],
            cap=plan.caps[i],
            expected_accuracy=plan.expected[i],
            chosen=getattr(result, "chosen", ""),
            compute=result.compute,
            trace=list(result.trace),
        )
        answers.append(answer)
        if on_answer is not None:
            on_answer(answer)
    return plan, answers


def uniform_expected(plan: BatchPlan, policy: Any) -> float:
    """The batch's expected accuracy if the total were split evenly (each question the largest grid
    budget its share pays for), on the same curves: what the allocation is compared with."""
    share = plan.total // len(plan.bins)
    options = []
    for b in plan.bins:
        curve = [(g, v) for g, v in policy.curve(b, plan.curves) if g <= max(share, plan.probe_samples)]
        options.append([Option(0.0, curve[-1][1] if curve else 0.0)])
    return expected_value(options, [0] * len(options)) / len(options)
