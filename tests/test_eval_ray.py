"""``ponder eval --ray``: the grid on a local Ray instance writes exactly a local run's rows, resumes
(from a local run and into one) without duplicates, retries a task whose worker dies, names a
problem that keeps failing, and refuses an unreachable cluster or a missing Ray at once."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import sys

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import ConfigError, PonderError
from ponder.eval.commands import load_models
from ponder.eval.datasets import load_dataset
from ponder.eval.distributed import FaultPlan, ray_session, remote_models_identity, require_ray, run_eval_ray
from ponder.eval.identity import models_identity
from ponder.eval.runner import EvalConfig, RunDir, dataset_config, parse_strategy, run_eval
from ponder.training.weights import policy_path, verifier_path

# The shipped models by file: loaded without the default prefix cache, so a worker's results do
# not depend on which problems it ran before.
BACKEND = f"embedded:{policy_path()}"
VERIFIER = f"embedded:{verifier_path()}"
WALL = ("wall_s", "wall_estimated", "pooled", "pool_n", "pool_correct")
STRATEGIES = ("greedy", "majority", "weighted_best_of_n", "beam_search:beam_width=2")
ROWS_PER_PROBLEM = len(STRATEGIES) * 3  # strategies x budgets, one seed


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One small local Ray instance for the module (starting one takes seconds); the runs below
    use it as it is, as they would a notebook's connection."""
    with ray_session(None, num_cpus=2) as ray:
        assert ray.cluster_resources()["CPU"] == 2
        yield


@pytest.fixture(scope="module")
def data():
    return load_dataset("builtin", "dev", n_per_level=1, levels=[1, 2, 3])


@pytest.fixture(scope="module")
def config(data) -> EvalConfig:
    generator, verifier = load_models(BACKEND, VERIFIER)
    return EvalConfig(
        dataset=dataset_config(data),
        strategies=[parse_strategy(s) for s in STRATEGIES],
        budgets=[1, 2, 4],
        seeds=[0],
        models=models_identity(generator, verifier),
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, data, config) -> RunDir:
    generator, verifier = load_models(BACKEND, VERIFIER)
    return run_eval(config, tmp_path_factory.mktemp("local") / "run", data, generator, verifier)


def rows(run: RunDir) -> dict[str, dict]:
    """Rows by key, without the wall-clock fields (the only ones that differ between runs)."""
    return {r["key"]: {k: v for k, v in r.items() if k not in WALL} for r in run.results()}


def written_keys(run: RunDir) -> list[str]:
    return [json.loads(line)["key"] for line in run.results_path.read_text().splitlines()]


def test_a_ray_run_writes_the_local_runs_rows_and_retries_a_dead_worker(tmp_path, data, config, local_run):
    messages: list[str] = []
    victim = data.problems[0].id
    fault = FaultPlan(victim, "exit")  # the worker process dies on the first attempt
    run = run_eval_ray(config, tmp_path / "run", data, BACKEND, VERIFIER, log=messages.append, fault=fault)
    assert any(f"problem {victim}: attempt 1 failed (WorkerCrashedError" in m for m in messages), messages
    expected = rows(local_run)
    assert len(expected) == len(data.problems) * ROWS_PER_PROBLEM
    assert rows(run) == expected  # same keys, answers, correctness and compute as the local run
    keys = written_keys(run)
    assert len(keys) == len(set(keys)) == len(expected)  # the retried problem's rows appear once
    assert sum(k.startswith(victim + "|") for k in keys) == ROWS_PER_PROBLEM


def test_a_ray_run_resumes_a_killed_local_run_without_resending_finished_problems(
    tmp_path, data, config, local_run
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(local_run.config_path, run_dir)
    lines = local_run.results_path.read_text().splitlines(keepends=True)
    # Killed during the second problem's rows, half-way through writing a line.
    cut = ROWS_PER_PROBLEM + 3
    (run_dir / "results.jsonl").write_text("".join(lines[:cut]) + lines[cut][:30])
    finished = json.loads(lines[0])["problem"]
    messages: list[str] = []
    with pytest.raises(ConfigError, match="pass --resume"):
        run_eval_ray(config, run_dir, data, BACKEND, VERIFIER)
    # The finished problem's task would fail: the run only succeeds if it is not sent again.
    run = run_eval_ray(
        config,
        run_dir,
        data,
        BACKEND,
        VERIFIER,
        resume=True,
        log=messages.append,
        max_retries=0,
        fault=FaultPlan(finished, "raise", times=99),
    )
    assert f"ray: {len(data.problems) - 1} of {len(data.problems)} problems to run" in messages[0]
    keys = written_keys(run)
    assert len(keys) == len(set(keys)) == len(data.problems) * ROWS_PER_PROBLEM
    assert rows(run) == rows(local_run)
    # Resuming a finished run sends nothing.
    run_eval_ray(config, run_dir, data, BACKEND, VERIFIER, resume=True, log=messages.append)
    assert messages[-1].startswith(f"ray: 0 of {len(data.problems)} problems to run")
    assert written_keys(run) == keys


def test_a_problem_that_keeps_failing_is_named_and_a_local_resume_finishes_the_run(
    tmp_path, data, config, local_run
):
    victim = data.problems[1].id
    fault = FaultPlan(victim, "raise", times=99)
    message = rf"failed on all 2 attempts on Ray workers: problem {victim}: InjectedFault"
    with pytest.raises(PonderError, match=message) as err:
        run_eval_ray(config, tmp_path / "run", data, BACKEND, VERIFIER, max_retries=1, fault=fault)
    assert "rerun with --resume" in str(err.value)
    partial = RunDir(tmp_path / "run")
    keys = written_keys(partial)
    assert len(keys) == len(set(keys)) == (len(data.problems) - 1) * ROWS_PER_PROBLEM  # the others: kept
    assert not any(k.startswith(victim + "|") for k in keys)
    generator, verifier = load_models(BACKEND, VERIFIER)
    run = run_eval(config, partial.path, data, generator, verifier, resume=True)
    keys = written_keys(run)
    assert len(keys) == len(set(keys)) == len(data.problems) * ROWS_PER_PROBLEM
    assert rows(run) == rows(local_run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_a_clear_error_before_any_work(tmp_path, data, config):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=rf"cannot reach the Ray cluster at {address}"):
        run_eval_ray(config, tmp_path / "run", data, BACKEND, VERIFIER, address=address)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        with ray_session("head-node"):
            pass


def test_a_worker_with_other_models_stops_the_run(tmp_path, data, config):
    with pytest.raises(ConfigError, match="on a Ray worker: embedded backend: no policy weights at /nope"):
        remote_models_identity("embedded:/nope.safetensors", "none")
    other = dataclasses.replace(config, models={**config.models, "policy": "sha256:" + "0" * 32})
    with pytest.raises(ConfigError, match=r"problem .*: Ray worker on .* loaded other models than the run's"):
        run_eval_ray(other, tmp_path / "run", data, BACKEND, VERIFIER)
    assert not RunDir(tmp_path / "run").results()


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'ponder\[ray\]'"):
        require_ray()


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def test_ponder_eval_ray_runs_and_a_local_resume_finds_it_done(tmp_path):
    run_dir = tmp_path / "run"
    grid = ["--levels", "1", "--n-per-level", "2", "--budgets", "1,2", "--strategy", "majority"]
    result = cli("eval", str(run_dir), *grid, "--ray", "--report", "none")
    assert result.exit_code == 0, result.output
    assert "ray: 2 of 2 problems to run" in result.output
    keys = written_keys(RunDir(run_dir))
    assert len(keys) == len(set(keys)) == 4
    resumed = cli("eval", str(run_dir), "--resume")  # locally: nothing left to do
    assert resumed.exit_code == 0, resumed.output
    assert written_keys(RunDir(run_dir)) == keys
    address = f"127.0.0.1:{free_port()}"
    bad = cli("eval", str(tmp_path / "other"), *grid, "--ray-address", address)
    assert bad.exit_code == 2 and f"cannot reach the Ray cluster at {address}" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "other").exists()
