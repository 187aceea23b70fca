"""One total budget over a batch: the coverage model of accuracy curves, the allocation of sample
caps, ``solve_batch`` (probes paid once, never over the total) and ``ponder batch`` (written as it
goes, resumable, clear errors)."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ponder.allocation.batch import plan_caps, solve_batch, uniform_expected
from ponder.allocation.coverage import (
    coverage_curve,
    expected_coverage,
    fit_beta_prior,
    scaled_coverage_curve,
)
from ponder.allocation.difficulty import DifficultyPredictor
from ponder.allocation.global_budget import global_vs_uniform
from ponder.allocation.policy import Policy, PolicyEntry, load_policy
from ponder.api import default_models
from ponder.cli import app
from ponder.errors import ConfigError
from ponder.eval.identity import models_identity
from ponder.tasks.arithmetic import parse_question
from stubs import MarkerVerifier, StepStub, one_marked_per_call

GRID = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]

# --- the coverage model -------------------------------------------------------------------------------


def test_the_beta_prior_is_recovered_from_beta_binomial_counts():
    rng = random.Random(0)
    a, b = 0.4, 1.5
    counts = []
    for _ in range(600):
        p = rng.betavariate(a, b)
        counts.append((sum(rng.random() < p for _ in range(32)), 32))
    fa, fb = fit_beta_prior(counts)
    assert abs(fa - a) / a < 0.25 and abs(fb - b) / b < 0.35
    assert abs(fa / (fa + fb) - a / (a + b)) < 0.03  # the mean success rate


def test_coverage_rises_with_samples_only_where_questions_are_rarely_solved():
    prior = (0.2, 0.4)
    solved = [(32, 32)] * 10
    rare = [(1, 32), (0, 32), (2, 32)] * 4
    easy = coverage_curve(solved, GRID, prior)
    hard = coverage_curve(rare, GRID, prior)
    assert all(v > 0.98 for _, v in easy) and easy[-1][1] - easy[0][1] < 0.02  # flat at the top
    values = [v for _, v in hard]
    assert values == sorted(values) and values[-1] - values[-3] > 0.05  # still gains from 64 to 256
    assert expected_coverage(0, 32, 0, *prior) == 0.0
    assert expected_coverage(0, 32, 256, *prior) < expected_coverage(3, 32, 256, *prior) < 1.0


def test_the_scaled_curve_follows_the_calibrated_level_and_the_coverage_shape():
    prior = (0.3, 0.5)
    counts = [(1, 32), (4, 32), (32, 32), (0, 32)]
    cov = coverage_curve(counts, GRID, prior)
    # A calibrated curve that is 0.8 x coverage up to 16 samples, then flat (saturated on dev).
    calibrated = [(b, 0.8 * c if b <= 16 else 0.8 * cov[4][1]) for b, c in cov]
    scaled = scaled_coverage_curve(calibrated, counts, prior)
    assert [b for b, _ in scaled] == GRID
    values = [v for _, v in scaled]
    assert values == sorted(values) and values[-1] > calibrated[-1][1]  # it keeps rising past the flat part
    assert all(0.0 <= v <= 1.0 for v in values)
    # Scaled into [0, 1]: a calibrated curve above coverage is not scaled past it.
    assert scaled_coverage_curve([(b, 1.0) for b in GRID], [(0, 32)], prior)[-1][1] <= 1.0
    assert scaled_coverage_curve([(b, 0.0) for b in GRID], counts, prior) == [(b, 0.0) for b in GRID]


@pytest.mark.parametrize("counts", [[(3, 2)], [(-1, 4)], [(1, 0)], [(1.5, 4)], []])
def test_bad_oracle_counts_are_clear_errors(counts):
    with pytest.raises(ConfigError, match="oracle counts|at least one"):
        fit_beta_prior(counts)


# --- the policy's curves ------------------------------------------------------------------------------


def policy_with_counts(models: dict, counts: dict[int, list[list[int]]] | None, probe: int = 2) -> Policy:
    """Bin 1 saturated (every dev question always solved), bin 2 rarely solved and flat on dev
    above 8 samples, bin 3 never solved."""
    budgets = [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    level = {1: lambda b: 1.0, 2: lambda b: min(0.6, 0.15 * b), 3: lambda b: 0.0}
    table = {k: {b: PolicyEntry("best_of_n", cv_accuracy=f(b)) for b in budgets} for k, f in level.items()}
    return Policy(
        models=models,
        budgets=budgets,
        predictor=DifficultyPredictor(
            edges=(0.7, 0.25), probe_samples=probe, aggregation="last", max_new_tokens=40
        ),
        table=table,
        calibration={} if counts is None else {"oracle_counts": {str(k): v for k, v in counts.items()}},
    )


COUNTS = {1: [[32, 32]] * 6, 2: [[1, 32], [0, 32], [3, 32], [2, 32]] * 2, 3: [[0, 32]] * 6}


def test_a_policy_with_oracle_counts_has_a_coverage_curve_that_keeps_rising_where_dev_went_flat():
    policy = policy_with_counts({}, COUNTS)
    assert policy.has_coverage_model
    calibrated = dict(policy.curve(2))
    smooth = dict(policy.curve(2, "coverage"))
    assert calibrated[16.0] == calibrated[64.0]  # flat on dev
    assert smooth[64.0] > smooth[32.0] > smooth[16.0]
    assert dict(policy.curve(3, "coverage"))[64.0] == 0.0  # never right on dev: eta is 0
    assert dict(policy.curve(1, "coverage"))[2.0] > 0.95
    with pytest.raises(ConfigError, match="no oracle counts"):
        policy_with_counts({}, None).curve(2, "coverage")
    with pytest.raises(ConfigError, match="'calibrated' or 'coverage'"):
        policy.curve(2, "smooth")


def test_calibration_records_the_oracle_counts_of_each_bin(calibrated_policy):
    counts = calibrated_policy.oracle_counts()
    assert sum(len(v) for v in counts.values()) == 6  # the dev split's questions
    assert all(n == 4 and 0 <= k <= 4 for rows in counts.values() for k, n in rows)
    assert calibrated_policy.curve(1, "coverage")  # the coverage model loads from the file


@pytest.fixture(scope="module")
def calibrated_policy(tmp_path_factory, generator, verifier):
    from ponder.allocation.calibrate import calibrate
    from ponder.eval.datasets import load_dataset
    from ponder.eval.runner import parse_strategy

    run_dir = tmp_path_factory.mktemp("cal")
    dev = load_dataset("builtin", "dev", n_per_level=3, levels=[1, 2])
    calibrate(
        run_dir, dev, generator, verifier, [parse_strategy("best_of_n")], [1, 2], [0],
        n_bins=2, oracle_samples=4, probe_samples=1, folds=2, pipeline=False,
    )  # fmt: skip
    return load_policy(run_dir / "policy.json")


def test_global_vs_uniform_uses_the_coverage_model_when_the_policy_has_one():
    policy = policy_with_counts({}, COUNTS)
    results = [
        {"strategy": "co", "seed": 0, "problem": f"p{q}", "budget": b, "correct": b >= 32 or q == 0,
         "samples": b, "predicted_bin": 1 + q % 3}
        for q in range(6) for b in policy.budgets
    ]  # fmt: skip
    rows = global_vs_uniform(results, policy, "co", policy.budgets)
    assert rows and all(r["curves"] == "coverage" for r in rows)
    rows = global_vs_uniform(results, policy, "co", policy.budgets, curves="calibrated")
    assert all(r["curves"] == "calibrated" for r in rows)


# --- planning the caps --------------------------------------------------------------------------------


def test_the_plan_gives_the_rising_bin_what_the_flat_bins_would_waste():
    policy = policy_with_counts({}, COUNTS)
    bins = [1, 2, 3, 2, 1, 3]
    plan = plan_caps(bins, policy, total=6 * 12, probe_samples=2)
    assert plan.curves == "coverage"
    # Solved at once (bin 1) or never (bin 3): the probe alone; the rest where samples still pay.
    assert plan.caps == [2, 32, 2, 32, 2, 2] and plan.allocated == 72
    assert sum(plan.expected) / 6 > uniform_expected(plan, policy)  # 8 samples each: 0.43 in bin 2
    # A larger total than the rising bin can use is spent too (the allocator leaves nothing idle),
    # but the rising bin still gets the most.
    plan = plan_caps(bins, policy, total=6 * 16, probe_samples=2)
    by_bin = {b: [c for c, bb in zip(plan.caps, bins) if bb == b] for b in (1, 2, 3)}
    assert plan.allocated <= 96 and min(by_bin[2]) > max(by_bin[1] + by_bin[3])


@settings(max_examples=60, deadline=None)
@given(
    bins=st.lists(st.integers(1, 3), min_size=1, max_size=12),
    per_question=st.integers(2, 80),
    curves=st.sampled_from(["coverage", "calibrated"]),
)
def test_the_plan_never_exceeds_the_total(bins, per_question, curves):
    policy = policy_with_counts({}, COUNTS)
    total = per_question * len(bins) + len(bins) // 2
    plan = plan_caps(bins, policy, total, probe_samples=2, curves=curves)
    assert plan.allocated <= total
    assert all(c >= 2 for c in plan.caps)  # every question keeps its probe
    assert all(c == 2 or c in policy.budgets for c in plan.caps)


def test_a_total_that_cannot_pay_the_probes_is_refused():
    policy = policy_with_counts({}, COUNTS)
    with pytest.raises(ConfigError, match="cannot pay for the batch's probes: 3 questions x 2"):
        plan_caps([1, 2, 3], policy, total=5, probe_samples=2)
    with pytest.raises(ConfigError, match="no questions"):
        plan_caps([], policy, total=5, probe_samples=2)


# --- solve_batch on a stub policy ---------------------------------------------------------------------

PROMPTS = [parse_question(q).prompt for q in ("48+27-13", "12+5-3", "7+8+9", "30-4+2", "100-1-1")]


def test_a_batch_pays_each_probe_once_and_never_spends_more_than_the_total(tmp_path):
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    path = str(policy_with_counts(models_identity(stub, stub_v), COUNTS).save(tmp_path / "policy.json"))
    seen = []
    plan, answers = solve_batch(PROMPTS, stub, stub_v, path, 40, on_answer=seen.append)
    assert [a.index for a in answers] == list(range(5)) and seen == answers
    spent = sum(a.compute.samples for a in answers)
    assert spent <= plan.allocated <= 40
    assert all(a.compute.samples <= a.cap for a in answers)
    probes = [p for _, p in stub.calls if p.n == 2 and p.max_new_tokens == 40 and not p.stop_at_step]
    assert len(probes) == 5  # one probe per question: the answer step reused it
    assert all(a.answer is not None and a.compute.samples >= 2 for a in answers)
    # The same batch from scratch is the same (seeded), and a resumed one answers only what it lacks.
    stub2 = StepStub(one_marked_per_call(2))
    _, rest = solve_batch(PROMPTS, stub2, stub_v, path, 40, plan=plan, skip={0, 1, 2})
    assert [a.index for a in rest] == [3, 4]
    assert [a.answer for a in rest] == [a.answer for a in answers[3:]]


def test_a_batch_refuses_a_total_below_its_probes_before_running_anything(tmp_path):
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    path = str(policy_with_counts(models_identity(stub, stub_v), COUNTS).save(tmp_path / "policy.json"))
    with pytest.raises(ConfigError, match="cannot pay for the batch's probes"):
        solve_batch(PROMPTS, stub, stub_v, path, 9)
    assert stub.calls == []
    with pytest.raises(ConfigError, match="whole number of samples"):
        solve_batch(PROMPTS, stub, stub_v, path, 0)


# --- ponder batch -------------------------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def test_ponder_batch_writes_each_answer_and_resumes(tmp_path):
    generator, verifier = default_models()
    policy = str(policy_with_counts(models_identity(generator, verifier), COUNTS).save(tmp_path / "p.json"))
    out = tmp_path / "answers.jsonl"
    args = ["batch", str(out), "--policy", policy, "--total-samples", "24", "--n-per-level", "2",
            "--levels", "1,2", "--split", "test"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    header, answers = rows[0], rows[1:]
    assert (
        header["settings"]["total_samples"] == 24 and len(header["caps"]) == 4 and sum(header["caps"]) <= 24
    )
    assert [r["index"] for r in answers] == [0, 1, 2, 3]
    assert sum(r["samples"] for r in answers) <= 24
    assert all(r["samples"] <= r["cap"] for r in answers)
    assert re.search(r"4 questions: accuracy \d+\.\d%, \d+ samples spent of 24", result.output)
    # Again without --resume: refused; cut short, --resume answers only what is missing.
    assert "--resume" in run(*args).output
    out.write_text("\n".join(out.read_text().splitlines()[:3]) + "\n")
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in again[1:]] == [0, 1, 2, 3]
    assert [r["answer"] for r in again[1:]] == [r["answer"] for r in answers]
    # Another total on the same file: a clear error.
    other = run(*args[:5], "30", *args[6:], "--resume")
    assert other.exit_code != 0 and "another batch" in other.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--total-samples", "3"], "cannot pay for the batch's probes"),
        (["--total-samples", "24", "--curves", "smooth"], "coverage or calibrated"),
    ],
)
def test_ponder_batch_bad_input_is_a_clear_error(tmp_path, extra, message):
    generator, verifier = default_models()
    policy = str(policy_with_counts(models_identity(generator, verifier), COUNTS).save(tmp_path / "p.json"))
    result = run(
        "batch",
        str(tmp_path / "a.jsonl"),
        "--policy",
        policy,
        "--n-per-level",
        "1",
        "--levels",
        "1,2",
        *extra,
    )
    assert result.exit_code != 0 and message in result.output
    missing = run(
        "batch", str(tmp_path / "b.jsonl"), "--policy", str(tmp_path / "nope.json"), "--total-samples", "8"
    )
    assert missing.exit_code != 0 and "does not exist" in missing.output
