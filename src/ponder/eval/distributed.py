"""``ponder eval --ray``: the evaluation grid spread over a Ray cluster, written by one process.

The driver (the process running ``ponder eval``) owns the run directory, exactly as a local run
does (:func:`ponder.eval.runner.run_eval`): it checks and prepares it, reads what is already done,
and alone appends rows to ``results.jsonl`` / ``difficulty.jsonl``, with the same keys and fields
a local run writes. So ``--resume`` works the same way, and a run started with Ray can be finished
locally, or the other way round.

Workers get plain data only: the backend and verifier specs, the run configuration as JSON, and
one problem per task (with the keys of it already done). Each worker process loads the models
from the specs once (cached, as ``ponder.api`` caches them), checks that their weights hash to the
configuration's (a node with other weights is refused, not mixed in), computes the problem's rows
with :func:`ponder.eval.runner.problem_rows` (the local run's code) and returns them. A task is one
problem, so a worker that dies loses only the problem it was on.

Failures: a task whose worker process dies or that raises is sent again, up to ``max_retries``
times; rows already returned are written at once and never recomputed. A problem that fails on
every attempt is named in the error raised at the end, after every other problem's rows are
written (``--resume`` retries just the failed ones). A configuration error on a worker (a model
it cannot load, other weights) stops the run at once.

Ray is optional (``pip install 'ponder[ray]'``). ``ray_session(None)`` starts Ray inside this
process; ``ray_session("HOST:PORT")`` connects to a running cluster (``ray start --head`` on the
head node; ponder and the models the specs name must be installed on every node).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ponder.errors import ConfigError, PonderError
from ponder.eval.datasets import AnswerFormat, Dataset, EvalProblem
from ponder.eval.runner import (
    EvalConfig,
    JsonlWriter,
    Progress,
    RunDir,
    _all_keys,
    _Grader,
    bins_from_difficulty,
    oracle_pass1,
    problem_rows,
)
from ponder.strategies.budget import Throughput
from ponder.strategies.registry import NEEDS_VERIFIER

INSTALL_HINT = "pip install 'ponder[ray]'"
DEFAULT_MAX_RETRIES = 2


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing listens on now, instead of waiting minutes in ``ray.init``."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r} is not HOST:PORT (the head node's address, port 6379 by default)"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): "
            "is `ray start --head` running there, and is the port open?"
        ) from None


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected: to the cluster at ``address``, or a local one started in this process when
    ``address`` is None (shut down on exit). A connection this process already has (a notebook's
    or a test's ``ray.init``) is used as it is and left open."""
    ray = require_ray()
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        options.update(address="local", num_cpus=num_cpus, include_dashboard=False)
    else:
        options["address"] = address
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Ray's notes about GPU env vars
            ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ConfigError(f"cannot connect to {where}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# --- what runs on a worker --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerJob:
    """What a worker needs to compute rows: plain data only, so it pickles anywhere."""

    backend: str
    verifier: str
    config: dict[str, Any]
    answer_format: str
    oracle_bins: dict[str, int]
    throughput: Throughput | None
    share_samples: bool


@dataclass(frozen=True)
class FaultPlan:
    """For testing the failure path: the task of ``problem`` fails on its first ``times`` attempts,
    by ``exit`` (the worker process dies) or ``raise`` (the task raises)."""

    problem: str
    mode: Literal["exit", "raise"] = "raise"
    times: int = 1


class InjectedFault(RuntimeError):
    """The failure a :class:`FaultPlan` asks for."""


def _maybe_fail(fault: FaultPlan | None, problem_id: str, attempt: int) -> None:
    if fault is None or fault.problem != problem_id or attempt >= fault.times:
        return
    if fault.mode == "exit":
        os._exit(1)
    raise InjectedFault(f"injected failure of problem {problem_id} (attempt {attempt + 1})")


_THROUGHPUT: dict[tuple[str, str], Throughput] = {}


def _worker_models(backend: str, verifier: str, expected: dict[str, Any] | None) -> tuple[Any, Any]:
    """The models the specs name, loaded once per worker process, checked against the run's."""
    from ponder.eval.commands import load_models
    from ponder.eval.identity import describe_mismatch, models_identity

    generator, scorer = load_models(backend, verifier)
    if expected is not None:
        actual = models_identity(generator, scorer)
        if actual != expected:
            raise ConfigError(
                f"Ray worker on {socket.gethostname()} loaded other models than the run's: "
                + "; ".join(describe_mismatch(expected, actual) or [f"recorded {expected}, now {actual}"])
            )
    return generator, scorer


def _identity_task(backend: str, verifier: str) -> dict[str, Any]:
    from ponder.eval.identity import models_identity

    return models_identity(*_worker_models(backend, verifier, None))


def _grid_task(
    job: WorkerJob, problem: EvalProblem, done: list[str], attempt: int, fault: FaultPlan | None
) -> list[dict[str, Any]]:
    _maybe_fail(fault, problem.id, attempt)
    config = EvalConfig.from_json(job.config)
    generator, scorer = _worker_models(job.backend, job.verifier, config.models)
    throughput = job.throughput
    if config.budget_unit == "seconds" and throughput is None:
        # Deadlines are planned with this worker's own speed, measured once per process.
        key = (job.backend, job.verifier)
        if key not in _THROUGHPUT:
            from ponder.allocation.deadline import measure_throughput

            _THROUGHPUT[key] = measure_throughput(generator, scorer)
        throughput = _THROUGHPUT[key]
    fmt = AnswerFormat(job.answer_format)
    with fmt.strategy_context():
        return problem_rows(
            config,
            problem,
            generator,
            scorer,
            _Grader(fmt),
            oracle_bins=job.oracle_bins,
            throughput=throughput,
            done=set(done),
            share_samples=job.share_samples,
        )


def _oracle_task(
    job: WorkerJob, problem: EvalProblem, attempt: int, fault: FaultPlan | None
) -> dict[str, Any]:
    _maybe_fail(fault, problem.id, attempt)
    config = EvalConfig.from_json(job.config)
    generator, _ = _worker_models(job.backend, job.verifier, config.models)
    n = config.oracle_samples
    correct = oracle_pass1(problem, generator, n, _Grader(AnswerFormat(job.answer_format)))
    return {"problem": problem.id, "level": problem.level, "n": n, "correct": correct, "pass1": correct / n}


@cache
def _remote(fn: Callable[..., Any]) -> Any:
    # Retries are the driver's (bounded, and naming the problem), so Ray's own are off.
    return require_ray().remote(max_retries=0)(fn)


def _cause(exc: BaseException) -> BaseException:
    """The worker's own exception inside Ray's wrapper."""
    return getattr(exc, "cause", None) or exc


def remote_models_identity(
    backend: str, verifier: str, task_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The models' identity (weight hashes) as a worker loads them, so that the driver needs no
    copy of the models. Needs a Ray connection (:func:`ray_session`)."""
    ray = require_ray()
    try:
        return ray.get(_remote(_identity_task).options(**(task_options or {})).remote(backend, verifier))
    except ray.exceptions.RayError as exc:
        cause = _cause(exc)
        if isinstance(cause, PonderError):
            kind = ConfigError if isinstance(cause, ConfigError) else PonderError
            raise kind(f"on a Ray worker: {cause}") from None
        raise PonderError(
            f"a Ray worker could not load the models ({type(cause).__name__}: {cause})"
        ) from None


# --- the driver -------------------------------------------------------------------------------------


def _run_tasks(
    ray: Any,
    problems: list[EvalProblem],
    submit: Callable[[EvalProblem, int], Any],
    on_result: Callable[[EvalProblem, Any], None],
    *,
    max_retries: int,
    max_in_flight: int,
    log: Callable[[str], None] | None,
) -> dict[str, str]:
    """Runs one task per problem, at most ``max_in_flight`` at a time; hands each result to
    ``on_result`` as soon as it arrives; sends a failed task again up to ``max_retries`` times.
    Returns the problems that failed on every attempt, with their last error."""
    queue = deque(problems)
    pending: dict[Any, tuple[EvalProblem, int]] = {}
    failed: dict[str, str] = {}

    def top_up() -> None:
        while queue and len(pending) < max_in_flight:
            problem = queue.popleft()
            pending[submit(problem, 0)] = (problem, 0)

    top_up()
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            problem, attempt = pending.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the task raised
                cause = _cause(exc)
                if isinstance(cause, ConfigError):
                    raise ConfigError(f"problem {problem.id}: {cause}") from None
                error = f"{type(cause).__name__}: {cause}"
            except ray.exceptions.RayError as exc:  # its worker process or node died
                first_line = (str(exc).strip().splitlines() or [""])[0]
                error = f"{type(exc).__name__}: {first_line}"
            else:
                on_result(problem, value)
                top_up()
                continue
            if attempt < max_retries:
                if log is not None:
                    log(f"problem {problem.id}: attempt {attempt + 1} failed ({error}); sending it again")
                pending[submit(problem, attempt + 1)] = (problem, attempt + 1)
            else:
                failed[problem.id] = error
                top_up()
    finally:
        for ref in pending:  # an error or an interrupt: work not written yet is redone on resume
            ray.cancel(ref)
    return failed


def run_eval_ray(
    config: EvalConfig,
    run_dir: str | Path,
    dataset: Dataset,
    backend: str = "embedded",
    verifier: str = "embedded",
    *,
    address: str | None = None,
    resume: bool = False,
    share_samples: bool = True,
    throughput: Throughput | None = None,
    log: Callable[[str], None] | None = None,
    n_bins: int = 5,
    max_retries: int = DEFAULT_MAX_RETRIES,
    num_cpus: int | None = None,
    task_options: dict[str, Any] | None = None,
    fault: FaultPlan | None = None,
) -> RunDir:
    """:func:`ponder.eval.runner.run_eval` on Ray: the same run directory, rows and resume.

    ``backend`` and ``verifier`` are specs (each worker loads them). ``address``: a running
    cluster's ``HOST:PORT`` (or ``auto``); None starts Ray in this process with ``num_cpus``.
    ``task_options`` go to every task (e.g. ``{"num_gpus": 1}`` for a GPU backend; a task takes
    one CPU by default). ``throughput``: for a seconds budget, else each worker measures its own.
    """
    if dataset.fingerprint != config.dataset.get("fingerprint"):
        raise ConfigError("the dataset given does not match the configuration's dataset fingerprint")
    if any(s.name in NEEDS_VERIFIER for s in config.strategies) and verifier == "none":
        needs = sorted(s.label for s in config.strategies if s.name in NEEDS_VERIFIER)
        raise ConfigError(f"strategies {needs} need a verifier")
    if max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
    with ray_session(address, num_cpus) as ray:
        run = RunDir(Path(run_dir))
        run.prepare(config, resume)
        cpus = ray.cluster_resources().get("CPU", 1)
        options = {"num_cpus": 1, **(task_options or {})}
        in_flight = max(2, int(2 * cpus))
        job = WorkerJob(
            backend, verifier, config.to_json(), dataset.answer_format, {}, throughput, share_samples
        )
        done = {row["key"] for row in run.results()}
        difficulty = run.difficulty()
        # In the local run's fixed shuffled order, so the ETA is not fooled by a sorted dataset.
        problems = sorted(dataset.problems, key=lambda p: hashlib.sha1(p.id.encode()).hexdigest())
        oracle_todo = [p for p in problems if p.id not in difficulty] if config.oracle_samples else []
        keys = {p.id: _all_keys(config, [p]) for p in problems}
        todo = [p for p in problems if keys[p.id] - done]
        total = len(problems) * len(config.seeds) * len(config.strategies) * len(config.budgets)
        progress = Progress(
            total=total + len(oracle_todo), done=len(done & set().union(*keys.values())), log=log
        )
        if log is not None:
            log(f"ray: {len(todo)} of {len(problems)} problems to run, on {cpus:g} CPUs")
        failed: dict[str, str] = {}
        from ponder.training.checkpoint import progress_bar

        with progress_bar("eval", progress.total, progress.done) as (bar, bar_task):
            if bar is not None and not bar.disable:
                progress._bar, progress._task = bar, bar_task
            if oracle_todo:
                oracle_remote = _remote(_oracle_task).options(**options)
                writer = JsonlWriter(run.difficulty_path)

                def write_oracle(problem: EvalProblem, row: dict[str, Any]) -> None:
                    writer.write(row)
                    progress.advance(1, "oracle difficulty")

                try:
                    failed = _run_tasks(
                        ray,
                        oracle_todo,
                        lambda p, attempt: oracle_remote.remote(job, p, attempt, fault),
                        write_oracle,
                        max_retries=max_retries,
                        max_in_flight=in_flight,
                        log=log,
                    )
                finally:
                    writer.close()
                _raise_failed(failed, max_retries, run, "oracle difficulty")
                difficulty = run.difficulty()
            bins = bins_from_difficulty(difficulty, n_bins) if config.oracle_samples else {}
            job = WorkerJob(
                backend, verifier, config.to_json(), dataset.answer_format, bins, throughput, share_samples
            )
            job_ref = ray.put(job)  # shipped to each node once, not with every task
            grid_remote = _remote(_grid_task).options(**options)
            writer = JsonlWriter(run.results_path)

            def write_rows(problem: EvalProblem, rows: list[dict[str, Any]]) -> None:
                for row in rows:
                    if row["key"] in done or row["key"] not in keys[problem.id]:
                        continue
                    writer.write(row)
                    done.add(row["key"])
                    progress.advance(1, row["strategy"])

            try:
                failed = _run_tasks(
                    ray,
                    todo,
                    lambda p, attempt: grid_remote.remote(
                        job_ref, p, sorted(keys[p.id] & done), attempt, fault
                    ),
                    write_rows,
                    max_retries=max_retries,
                    max_in_flight=in_flight,
                    log=log,
                )
            finally:
                writer.close()
        _raise_failed(failed, max_retries, run, "results")
    return run


def _raise_failed(failed: dict[str, str], max_retries: int, run: RunDir, what: str) -> None:
    if not failed:
        return
    shown = "; ".join(f"problem {pid}: {err}" for pid, err in list(failed.items())[:5])
    more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
    raise PonderError(
        f"{len(failed)} problem(s) failed on all {max_retries + 1} attempts on Ray workers: {shown}{more}. "
        f"Every other problem's {what} is written in {run.path}; "
        "rerun with --resume to retry the failed ones."
    )


__all__ = [
    "FaultPlan",
    "WorkerJob",
    "ray_session",
    "remote_models_identity",
    "require_ray",
    "run_eval_ray",
]
