"""Compute-optimal allocation: difficulty bins and their prediction, calibration with cross-validation,
the policy file, the compute_optimal strategy, the global-budget allocator (a property test: never
over the total), and deadline budgets."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.allocation.calibrate import CandidateStats, calibrate, choose, choose_at_budget
from ponder.allocation.deadline import deadline_table, measure_throughput
from ponder.allocation.difficulty import DifficultyPredictor, agreement, fit_predictor, oracle_bins
from ponder.allocation.global_budget import Option, allocate, expected_value, total_cost, uniform
from ponder.allocation.policy import Policy, PolicyEntry, load_policy
from ponder.errors import ConfigError
from ponder.eval.datasets import load_dataset
from ponder.eval.identity import models_identity
from ponder.eval.runner import parse_strategy
from ponder.strategies import Budget, make_strategy
from ponder.strategies.budget import BudgetTracker, Throughput
from ponder.strategies.compute_optimal import ComputeOptimalResult
from ponder.strategies.registry import parse_label
from stubs import PROMPT, MarkerVerifier, StepStub, marker_answer, one_marked_per_call

# --- difficulty ---------------------------------------------------------------------------------------


def test_oracle_quintiles_hold_equal_shares_easiest_first():
    pass1 = {f"p{i}": i / 19 for i in range(20)}
    bins = oracle_bins(pass1)
    assert sorted(bins.values()) == [b for b in range(1, 6) for _ in range(4)]
    assert bins["p19"] == 1 and bins["p0"] == 5  # highest pass@1 is the easiest
    ties = oracle_bins({f"q{i}": 0.5 for i in range(10)}, n_bins=5)
    assert sorted(ties.values()) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # ties split by a stable hash
    fixed = oracle_bins({"a": 0.95, "b": 0.7, "c": 0.0}, method="thresholds")
    assert fixed == {"a": 1, "b": 2, "c": 5}
    with pytest.raises(ConfigError, match="unknown difficulty binning"):
        oracle_bins(pass1, method="deciles")


def test_the_predictor_is_fitted_to_the_oracle_shares():
    oracle = {f"p{i}": 1 + i // 4 for i in range(20)}  # bins 1..5, four each
    features = {f"p{i}": 1.0 - i / 20 for i in range(20)}  # a perfect, monotone signal
    predictor = fit_predictor(features, oracle, 5)
    predicted = {p: predictor.predict(f) for p, f in features.items()}
    assert predicted == oracle
    agree = agreement(predicted, oracle)
    assert (agree.exact, agree.within_one, agree.spearman) == (1.0, 1.0, pytest.approx(1.0))
    assert predictor.predict(None) == 5  # nothing probed: the hardest bin
    noisy = agreement({"a": 1, "b": 3}, {"a": 2, "b": 3})
    assert noisy.exact == 0.5 and noisy.within_one == 1.0 and noisy.confusion == {2: {1: 1}, 3: {3: 1}}


def test_score_and_length_tell_apart_questions_whose_probes_all_failed():
    # Every probe of the four hardest questions failed (score 0): by score alone they tie. Two are
    # short (one slip from easy, pass@1 0.3), two are long (pass@1 0): the length separates them.
    scores = {f"e{i}": 0.9 for i in range(4)} | {f"m{i}": 0.5 for i in range(4)}
    scores |= {"s0": 0.0, "s1": 0.0, "l0": 0.0, "l1": 0.0}
    lengths = dict.fromkeys(scores, 40.0) | {"l0": 160.0, "l1": 150.0}
    pass1 = {p: 0.9 if p[0] == "e" else 0.6 if p[0] == "m" else 0.3 if p[0] == "s" else 0.0 for p in scores}
    oracle = oracle_bins(pass1, n_bins=3, method="thresholds", thresholds=[0.7, 0.1])
    assert oracle["s0"] == 2 and oracle["l0"] == 3
    by_score = fit_predictor(scores, oracle, 3)
    assert by_score.features == "score" and by_score.feature(0.0, 160.0) == 0.0  # length unused
    assert by_score.predict(scores["s0"]) == by_score.predict(scores["l0"])  # they look alike
    both = fit_predictor(scores, oracle, 3, lengths=lengths, pass1=pass1)
    assert both.features == "score+length" and both.weights is not None
    assert both.weights[2] < 0  # longer solutions: harder
    predicted = {p: both.predict(both.feature(scores[p], lengths[p])) for p in scores}
    assert predicted["l0"] == predicted["l1"] == 3 and predicted["s0"] == predicted["s1"] < 3
    assert predicted["e0"] == 1
    # The weights travel in the policy file, and a predictor that reads lengths needs one.
    again = DifficultyPredictor.from_json(json.loads(json.dumps(both.to_json())))
    assert again == both and "weights" not in by_score.to_json()
    with pytest.raises(ConfigError, match="sample length"):
        both.feature(0.5, None)
    assert both.feature(None, None) is None and both.predict(None) == 3
    with pytest.raises(ConfigError, match="oracle pass@1"):
        fit_predictor(scores, oracle, 3, lengths=lengths)


# --- calibration: cross-validated choice ------------------------------------------------------------


def stats(acc: dict[str, float], flops: float = 1.0) -> CandidateStats:
    same = dict.fromkeys(acc, flops)
    return CandidateStats(acc, same, same, same, same)


def test_choice_is_cross_validated():
    ids = [f"p{i}" for i in range(10)]
    # "lucky" beats "steady" on all problems together only through p3, where it got lucky; the
    # held-out accuracy of the selection rule is what the choice is worth on new problems.
    steady = stats(dict.fromkeys(ids, 0.6))
    lucky = stats(dict.fromkeys(ids, 0.58) | {"p3": 1.0})
    label, acc, cv, chosen = choose({"steady": steady, "lucky": lucky}, ids, folds=5)
    assert sum(chosen.values()) == 5 and chosen[label] == max(chosen.values())
    # In the fold holding p3, "steady" is chosen and scored on it: the rule's held-out accuracy is
    # below the winner's accuracy on all problems.
    assert chosen == {"lucky": 4, "steady": 1} and label == "lucky"
    assert acc == pytest.approx(0.622) and cv < acc
    # The cheaper of two equally accurate candidates is chosen.
    label, *_ = choose(
        {"dear": stats(dict.fromkeys(ids, 0.5), 10.0), "cheap": stats(dict.fromkeys(ids, 0.5))}, ids, 5
    )
    assert label == "cheap"
    label, acc, cv, _ = choose(
        {"a": stats(dict.fromkeys(ids, 0.9)), "b": stats(dict.fromkeys(ids, 0.1))}, ids, 5
    )
    assert (label, acc, cv) == ("a", pytest.approx(0.9), pytest.approx(0.9))


def test_one_se_selection_takes_the_cheapest_candidate_within_the_noise_of_the_best():
    ids = [f"p{i}" for i in range(20)]
    # "dear" is right on 16 of 20 problems at 10x the compute, "cheap" on 15: a gap of one problem
    # is well inside one standard error (about 0.09), so one-se keeps the cheap one.
    dear = stats({p: float(i < 16) for i, p in enumerate(ids)}, 10.0)
    cheap = stats({p: float(i < 15) for i, p in enumerate(ids)}, 1.0)
    assert choose({"dear": dear, "cheap": cheap}, ids, 5)[0] == "dear"
    assert choose({"dear": dear, "cheap": cheap}, ids, 5, selection="one-se")[0] == "cheap"
    # A lead of several standard errors is worth its compute under either rule.
    poor = stats({p: float(i < 6) for i, p in enumerate(ids)}, 1.0)
    assert choose({"dear": dear, "poor": poor}, ids, 5, selection="one-se")[0] == "dear"
    with pytest.raises(ConfigError, match="selection must be one of"):
        choose({"dear": dear}, ids, 5, selection="cheapest")


def test_a_bin_may_spend_less_than_its_budget_when_more_gains_nothing():
    ids = [f"p{i}" for i in range(10)]
    # Adaptive best-of-N is as accurate at 8 samples as at 64 on this bin, at an eighth of the cost;
    # best-of-N needs 64 to reach it.
    grid = {
        ("adaptive", 8.0): stats(dict.fromkeys(ids, 0.9), 8.0),
        ("adaptive", 64.0): stats(dict.fromkeys(ids, 0.9), 20.0),
        ("best_of_n", 8.0): stats(dict.fromkeys(ids, 0.7), 8.0),
        ("best_of_n", 64.0): stats(dict.fromkeys(ids, 0.9), 64.0),
    }
    label, spend, acc, cv, folds_chosen = choose_at_budget(grid, ids, 64.0, folds=5)
    assert (label, spend, acc, folds_chosen) == ("adaptive", 8.0, pytest.approx(0.9), 5)
    assert choose_at_budget(grid, ids, 64.0, folds=5, spend_less=False)[:2] == ("adaptive", 64.0)
    assert choose_at_budget(grid, ids, 8.0, folds=5)[:2] == ("adaptive", 8.0)
    assert choose_at_budget(grid, ids, 4.0, folds=5) is None  # nothing ran at or below 4
    # The same run at 16 as at 64 (the budget never bound): no cap, the larger budget stands.
    grid[("adaptive", 16.0)] = grid[("adaptive", 32.0)] = grid[("adaptive", 64.0)]
    assert choose_at_budget(grid, ids, 64.0, folds=5)[:2] == ("adaptive", 8.0)
    assert choose_at_budget(grid, ids, 32.0, folds=5, floor=16.0)[:2] == ("adaptive", 32.0)
    del grid[("adaptive", 16.0)], grid[("adaptive", 32.0)]
    # Never below the floor (the probe's size): there the probe itself was smaller than it will be.
    grid[("adaptive", 2.0)] = stats(dict.fromkeys(ids, 0.9), 2.0)
    assert choose_at_budget(grid, ids, 64.0, folds=5)[:2] == ("adaptive", 2.0)
    assert choose_at_budget(grid, ids, 64.0, folds=5, floor=4.0)[:2] == ("adaptive", 8.0)
    assert choose_at_budget(grid, ids, 2.0, folds=5, floor=4.0)[:2] == ("adaptive", 2.0)
    # A larger budget is taken when it pays.
    grid[("best_of_n", 64.0)] = stats(dict.fromkeys(ids, 1.0), 64.0)
    assert choose_at_budget(grid, ids, 64.0, folds=5)[:2] == ("best_of_n", 64.0)


def test_compute_optimal_stops_at_the_entry_s_budget(tmp_path):
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    table = {1: {16.0: PolicyEntry("best_of_n", budget=6.0)}}
    path = hand_policy(tmp_path, stub, stub_v, table, edges=())
    assert load_policy(path).table[1][16.0].budget == 6.0  # the file keeps it
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=16), 0)
    assert result.compute.samples == 6 == len(result.candidates)  # the probe's 2 and 4 more
    assert any("spends at most 6 samples" in line for line in result.trace)
    # A budget below the entry's cap is kept.
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=5), 0)
    assert result.compute.samples <= 5


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, generator, verifier):
    """A policy calibrated on the tiny random models (a small dev grid)."""
    run_dir = tmp_path_factory.mktemp("cal")
    dev = load_dataset("builtin", "dev", n_per_level=3, levels=[1, 2])
    policy = calibrate(
        run_dir,
        dev,
        generator,
        verifier,
        [parse_strategy(s) for s in ("majority", "weighted_best_of_n", "beam_search:beam_width=2")],
        [1, 2, 4],
        [0],
        n_bins=3,
        oracle_samples=4,
        probe_samples=2,
        folds=2,
        pipeline=False,
    )
    return run_dir, policy


def test_calibration_writes_a_policy_for_every_bin_and_budget(calibrated, generator, verifier):
    run_dir, policy = calibrated
    data = json.loads((run_dir / "policy.json").read_text())
    assert data["format"] == "ponder-compute-optimal-policy"
    assert data["models"] == models_identity(generator, verifier)
    loaded = load_policy(run_dir / "policy.json")
    assert sorted(loaded.table) == [1, 2, 3]
    for row in loaded.table.values():
        assert set(row) <= {1.0, 2.0, 4.0} and 4.0 in row
        for budget, entry in row.items():
            assert entry.strategy in ("majority", "weighted_best_of_n", "beam_search")
            assert entry.mean_samples <= budget
    assert loaded.table[1][1.0].strategy != "beam_search"  # below beam_width: refused at budget 1
    assert loaded.predictor.probe_samples == 2 and loaded.predictor.aggregation == "orm"
    assert len(loaded.predictor.edges) == 2
    assert (run_dir / "grid" / "results.jsonl").is_file() and (run_dir / "probes.jsonl").is_file()


def test_calibration_on_score_and_length_writes_a_predictor_compute_optimal_applies(
    tmp_path, generator, verifier
):
    dev = load_dataset("builtin", "dev", n_per_level=2, levels=[1, 3])
    candidates = [parse_strategy("weighted_best_of_n")]
    kwargs = dict(n_bins=2, oracle_samples=4, probe_samples=2, folds=2)
    with pytest.raises(ConfigError, match="difficulty features must be one of"):
        calibrate(
            tmp_path / "bad", dev, generator, verifier, candidates, [1, 2], [0], features="len", **kwargs
        )
    policy = calibrate(
        tmp_path / "cal", dev, generator, verifier, candidates, [1, 2], [0], features="score+length", **kwargs
    )
    assert (
        policy.predictor.features == "score+length"
        and policy.calibration["difficulty_features"] == "score+length"
    )
    probes = [json.loads(line) for line in (tmp_path / "cal" / "probes.jsonl").read_text().splitlines()]
    assert all(r["length"] > 0 for r in probes)
    co = make_strategy("compute_optimal", policy=str(tmp_path / "cal" / "policy.json"))
    result = co.run(dev.problems[0].prompt, generator, verifier, Budget(samples=2), 0)
    assert "mean length" in result.trace[0] and result.predicted_bin in (1, 2)


def test_pipeline_calibration_measures_each_candidate_after_the_probe(tmp_path, generator, verifier):
    dev = load_dataset("builtin", "dev", n_per_level=2, levels=[1, 2])
    candidates = [parse_strategy(s) for s in ("greedy", "best_of_n", "beam_search:beam_width=2")]
    policy = calibrate(
        tmp_path / "cal", dev, generator, verifier, candidates, [1, 4, 8], [0],
        n_bins=2, oracle_samples=4, probe_samples=2, folds=2,
    )  # fmt: skip
    assert policy.calibration["pipeline"] is True
    grid = (tmp_path / "cal" / "grid" / "results.jsonl").read_text()
    rows = [json.loads(line) for line in grid.splitlines()]
    # The grid ran compute_optimal with each candidate as its fixed choice, labelled by the candidate.
    labels = {"probe+greedy", "probe+best_of_n", "probe+beam_search:beam_width=2"}
    assert {r["strategy"] for r in rows} == labels
    assert {r["name"] for r in rows} == {"compute_optimal"}
    by = {(r["strategy"], r["budget"], r["problem"]): r for r in rows}
    for p in dev.problems:
        # Greedy is charged for the probe it cannot use: 2 probe samples + its own; best-of-N reuses
        # the probe's samples, so it draws the budget's worth in all.
        assert by[("probe+greedy", 8, p.id)]["samples"] == 3
        assert by[("probe+best_of_n", 8, p.id)]["samples"] == 8
        assert by[("probe+greedy", 1, p.id)]["samples"] == 1  # budget 1: the probe's one sample answers
    # The policy names the candidates themselves: compute_optimal runs them after its own probe.
    for row in policy.table.values():
        for budget, entry in row.items():
            assert entry.strategy in ("greedy", "best_of_n", "beam_search")
            assert entry.mean_samples <= budget
    at_8 = [row[8.0] for row in policy.table.values() if 8.0 in row]
    assert all(e.mean_samples == 3 for e in at_8 if e.strategy == "greedy" and e.budget is None)
    for row in policy.table.values():  # an entry that stops early spends no more than its own budget
        for budget, entry in row.items():
            assert entry.budget is None or (entry.budget < budget and entry.mean_samples <= entry.budget)
    assert policy.calibration["spend_less"] is True
    # A standalone grid is another configuration: the calibration directory refuses to mix them.
    with pytest.raises(ConfigError, match="was written by another configuration"):
        calibrate(
            tmp_path / "cal", dev, generator, verifier, candidates, [1, 4, 8], [0],
            n_bins=2, oracle_samples=4, probe_samples=2, folds=2, pipeline=False, resume=True,
        )  # fmt: skip


def test_compute_optimal_with_a_fixed_choice_probes_then_runs_it(generator, verifier):
    co = make_strategy("compute_optimal", choice="best_of_n", probe_samples=2)
    result = co.run(PROMPT, generator, verifier, Budget(samples=6), 0)
    assert result.chosen == "best_of_n" and "fixed choice" in result.trace[1]
    assert result.compute.samples == 6 == len(result.candidates)  # the probe's 2 + 4 more, one pool
    beam = make_strategy("compute_optimal", choice="beam_search:beam_width=2", probe_samples=2)
    result = beam.run(PROMPT, generator, verifier, Budget(samples=6), 0)
    assert result.chosen == "beam_search:beam_width=2" and result.compute.samples <= 6
    for params, message in [
        ({"choice": "best_of_n", "policy": "p.json"}, "a policy file or a fixed choice, not both"),
        ({"choice": "nonesuch"}, "unknown strategy 'nonesuch'"),
        ({"choice": "compute_optimal"}, "cannot be its own choice"),
        ({"choice": "beam_search:beam_width=wide"}, "beam_width"),
        ({"choice": "beam_search:4"}, "key=value pairs"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make_strategy("compute_optimal", **params)


def test_a_policy_for_other_weights_is_refused(calibrated, flat_generator, verifier, generator):
    run_dir, _ = calibrated
    co = make_strategy("compute_optimal", policy=str(run_dir / "policy.json"))
    with pytest.raises(ConfigError, match=r"calibrated for other models \(policy model: recorded sha256:"):
        co.run(PROMPT, flat_generator, verifier, Budget(samples=4), 0)
    result = co.run(PROMPT, generator, verifier, Budget(samples=4), 0)
    assert isinstance(result, ComputeOptimalResult) and result.compute.samples <= 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a ponder compute-optimal policy file"),
        ('{"format": "ponder-compute-optimal-policy", "version": 9}', "version 9"),
        ('{"format": "ponder-compute-optimal-policy", "version": 1, "table": {}}', "malformed"),
    ],
)
def test_bad_policy_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.json")


# --- the compute_optimal strategy ---------------------------------------------------------------------


def hand_policy(
    tmp_path, generator, verifier, table: dict[int, dict[float, PolicyEntry]], edges=(0.5,)
) -> str:
    policy = Policy(
        models=models_identity(generator, verifier),
        budgets=sorted({b for row in table.values() for b in row}),
        predictor=DifficultyPredictor(edges=edges, probe_samples=2, aggregation="last", max_new_tokens=40),
        table=table,
    )
    return str(policy.save(tmp_path / "policy.json"))


def test_compute_optimal_applies_the_policy_to_the_predicted_bin(tmp_path):
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    # The stub verifier scores unmarked answers 0.3: the probe's mean is below 0.5, so bin 2.
    table = {
        1: {8.0: PolicyEntry("majority")},
        2: {4.0: PolicyEntry("majority"), 8.0: PolicyEntry("beam_search", {"beam_width": 2})},
    }
    path = hand_policy(tmp_path, stub, stub_v, table)
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=8), 0)
    assert result.predicted_bin == 2 and result.chosen == "beam_search:beam_width=2"
    assert "predicted bin 2" in result.trace[0]
    assert result.compute.samples <= 8  # the probe's 2 samples + beam search's 6 candidates per round
    assert stub.calls[0][1].n == 2 and stub.calls[0][1].max_new_tokens == 40  # the probe
    assert any(p.stop_at_step for _, p in stub.calls[1:])  # then the search
    # At budget 4 the policy chooses majority: the probe's samples join its vote (4 in all).
    stub = StepStub(one_marked_per_call(2))
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=4), 0)
    assert result.chosen == "majority" and result.compute.samples == 4 == len(result.candidates)


def test_compute_optimal_answers_from_its_probe_when_nothing_else_fits(tmp_path):
    stub, stub_v = StepStub(one_marked_per_call(2)), MarkerVerifier()
    path = hand_policy(tmp_path, stub, stub_v, {1: {1.0: PolicyEntry("beam_search", {"beam_width": 4})}})
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=3), 0)
    assert result.compute.samples == 2 and result.answer is not None
    assert any("the probe answers" in line for line in result.trace)


def test_compute_optimal_without_a_policy_falls_back_and_keeps_to_its_budget(generator, verifier):
    for budget in (Budget(samples=1), Budget(samples=6), Budget(tokens=2000)):
        result = make_strategy("compute_optimal").run(PROMPT, generator, verifier, budget, 1)
        assert budget.exceeded_by(result.compute) == []
        assert "no policy file" in result.trace[1]


# --- the global budget ----------------------------------------------------------------------------------

curves_st = st.lists(
    st.lists(
        st.builds(Option, st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 3.0]), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=5,
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curves=curves_st, total=st.floats(0.0, 120.0, allow_nan=False))
def test_the_global_allocation_never_exceeds_the_total(curves, total):
    choice = allocate(curves, total)
    assert len(choice) == len(curves)
    assert total_cost(curves, choice) <= total
    # Never worse, in expectation, than any uniform split that fits.
    assert expected_value(curves, choice) >= expected_value(curves, uniform(curves, total)) - 1e-9
    cheapest = sum(min(o.cost for o in c) for c in curves)
    if cheapest <= total:
        assert all(i is not None for i in choice)  # every question is answered when that is affordable


def test_the_global_allocation_spends_where_the_marginal_gain_is():
    grid = [1.0, 2.0, 4.0, 8.0]
    easy = [Option(b, v) for b, v in zip(grid, [0.9, 0.95, 0.96, 0.96])]
    medium = [Option(b, v) for b, v in zip(grid, [0.2, 0.4, 0.6, 0.8])]
    hopeless = [Option(b, 0.0) for b in grid]
    curves = [easy, medium, hopeless]
    choice = allocate(curves, 12.0)  # a uniform split would be 4 each
    assert grid[choice[1]] == 8.0 and grid[choice[0]] <= 2.0  # the medium question gets the most
    assert expected_value(curves, choice) > expected_value(curves, [2, 2, 2])
    assert total_cost(curves, choice) <= 12.0
    with pytest.raises(ConfigError, match="total budget must be a finite number"):
        allocate(curves, -1.0)


# --- deadlines ------------------------------------------------------------------------------------------


class SlowStub(StepStub):
    """The stub, taking 2 ms per emitted token and 5 ms per call (a slow model with known speed)."""

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        tokens = max(c.completion_tokens for group in out for c in group)
        time.sleep(0.005 + 0.002 * tokens)
        return out


def test_seconds_budgets_need_a_throughput_and_are_validated():
    with pytest.raises(ConfigError, match="seconds must be >= 0"):
        Budget(seconds=-1.0)
    with pytest.raises(ConfigError, match="no throughput to predict"):
        BudgetTracker(Budget(seconds=1.0), "majority", StepStub(one_marked_per_call(2)))
    with pytest.raises(ConfigError, match="throughput policy_token_s"):
        Throughput(policy_token_s=-1.0)
    assert Budget(seconds=0.5).describe() == "seconds=0.5"
    assert Budget(seconds=0.5, throughput=Throughput(1e-3)) == Budget(seconds=0.5)


def test_a_deadline_is_kept_by_predicting_each_call():
    stub = SlowStub(one_marked_per_call(3))
    tp = measure_throughput(stub, MarkerVerifier(), prompt=PROMPT, repeats=1)
    assert tp.policy_step_s + tp.policy_token_s > 0
    for deadline in (0.15, 0.4):
        start = time.perf_counter()
        result = make_strategy("majority", max_new_tokens=40).run(
            PROMPT, stub, None, Budget(seconds=deadline, throughput=tp), 0
        )
        took = time.perf_counter() - start
        assert result.compute.samples >= 1
        assert took <= deadline * 1.5 + 0.05  # predicted calls; slack for a busy machine
    rows = deadline_table(
        [
            {"strategy": "m", "budget": 0.5, "wall_s": 0.3, "correct": True},
            {"strategy": "m", "budget": 0.5, "wall_s": 0.7, "correct": False},
        ]
    )
    assert (rows[0].met, rows[0].accuracy, rows[0].n) == (0.5, 0.5, 2)


def test_compute_optimal_with_adaptive_best_of_n_keeps_the_probe_s_confident_answer(tmp_path):
    def marked_after_first_call(lines, i, n, rng, greedy):
        # The probe (call 1) draws unmarked paths; every later sample is marked.
        if len(lines) >= 1:
            return marker_answer(lines)
        return "s0*" if calls[0] > 1 else "s0"

    calls = [0]

    class Counting(StepStub):
        def generate(self, prompts, params):
            calls[0] += 1
            return super().generate(prompts, params)

    stub, stub_v = Counting(marked_after_first_call), MarkerVerifier()
    path = hand_policy(tmp_path, stub, stub_v, {1: {16.0: PolicyEntry("adaptive_best_of_n")}}, edges=())
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=16), 0)
    # The probe's samples score 0.2: adaptive sampling draws one batch of 2, finds a marked path
    # (0.9 >= 0.5) and stops; the answer is that path's.
    assert result.chosen == "adaptive_best_of_n" and result.compute.samples == 4
    assert result.answer == 11
    # A probe that already holds a confident answer pays for nothing more.
    calls[0] = 2
    stub = Counting(marked_after_first_call)
    result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=16), 0)
    assert result.compute.samples == 2 and result.answer == 11
    assert any("no more sampling" in line for line in result.trace)


def test_compute_optimal_reads_the_probe_s_scores_as_the_chosen_best_of_n_does(tmp_path):
    # Probe samples (call 1) are unmarked: a weak step (0.2) and then an answer line the verifier
    # likes (0.95), answer 10. Later samples are marked throughout (every line 0.9), answer 11.
    # best_of_n ranks by the minimum step score, so 11 (0.9) beats 10 (0.2); ranking the probe by
    # its last step instead would put 10 (0.95) first.
    def rule(line, previous):
        if line.startswith("A:"):
            return 0.9 if previous and all("*" in p for p in previous) else 0.95
        return 0.9 if "*" in line else 0.2

    stub = StepStub(
        lambda lines, i, n, rng, greedy: marker_answer(lines) if lines else ("s0*" if calls() > 1 else "s0")
    )
    calls = lambda: len(stub.calls)  # noqa: E731
    stub_v = MarkerVerifier(rule)
    for choice, expected in (("best_of_n", 11), ("best_of_n:aggregation=last", 10)):
        name, params = parse_label(choice)
        path = hand_policy(tmp_path, stub, stub_v, {1: {8.0: PolicyEntry(name, params)}}, edges=())
        stub.calls.clear()
        result = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=8), 0)
        assert result.compute.samples == 8 and result.answer == expected, choice


def test_compute_optimal_accept_answers_from_a_confident_probe_whatever_the_choice(tmp_path):
    # Probe samples are marked (score 0.9, answer 11) from the first call on: with accept=0.5 the
    # policy's choice (majority over 8 more samples) is never run; without it, it is.
    stub, stub_v = (
        StepStub(lambda lines, i, n, rng, greedy: marker_answer(lines) if lines else "s0*"),
        MarkerVerifier(),
    )
    path = hand_policy(tmp_path, stub, stub_v, {1: {16.0: PolicyEntry("majority")}}, edges=())
    eager = make_strategy("compute_optimal", policy=path, accept=0.5).run(
        PROMPT, stub, stub_v, Budget(samples=16), 0
    )
    assert eager.compute.samples == 2 and eager.answer == 11
    assert any("it answers, majority is not run" in line for line in eager.trace)
    stub.calls.clear()
    plain = make_strategy("compute_optimal", policy=path).run(PROMPT, stub, stub_v, Budget(samples=16), 0)
    assert plain.compute.samples == 16 and plain.answer == 11
    # A threshold no sample reaches changes nothing.
    strict = make_strategy("compute_optimal", policy=path, accept=0.95).run(
        PROMPT, stub, stub_v, Budget(samples=16), 0
    )
    assert strict.compute.samples == 16
    with pytest.raises(ConfigError, match=r"accept must be in \(0, 1\]"):
        make_strategy("compute_optimal", accept=1.5)
