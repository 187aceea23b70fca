"""The evaluation harness: a dataset x strategies x budgets x seeds grid, resumable.

A **run directory** holds:

- ``config.json``: what the run is (dataset and its fingerprint, strategies with parameters, budgets
  and their unit, seeds, the models' weight hashes, policy files' hashes, oracle samples). A run
  directory is only ever continued with the same configuration; anything else is a ConfigError
  naming the fields that differ.
- ``difficulty.jsonl``: per problem, the oracle pass@1 (``correct`` of ``n`` samples checked against
  the ground truth), when ``oracle_samples`` > 0.
- ``results.jsonl``: one line per (problem, strategy, budget, seed) with the answer, whether it is
  right, whether any candidate was (coverage), every compute field, the wall time, the problem's
  level and oracle bin (and, for compute_optimal, its predicted bin).

Every line is written (one ``write``, then ``flush``) as soon as its result exists. **Resume**
reads the lines back, drops a last line cut short by a kill (it is redone), and skips every key
already present, so no result is lost or duplicated.

**Shared samples across budgets** (an explicit optimisation, on by default): with a samples budget
and a generator whose sampling is prefix-stable (``generator.prefix_stable``: sample ``i`` of a
call does not depend on how many samples the call draws; the embedded policy's is), majority,
best-of-N and weighted best-of-N at budgets 1..N are computed from ONE pool of N samples per
problem and seed, drawn exactly as the strategies draw them (one call, the run's seed), by taking
prefixes. The verifier is still called once per budget on the prefix, exactly as the strategy
would (its scores move by float rounding with the batch's padding, so one call for the pool could
differ in the last bit). The result, candidates and compute of every budget are exactly those of
running the strategy at that budget (tests/test_eval.py checks it); only the wall time differs:
the pool's generation time is shared out by tokens (``wall_estimated`` marks those lines).
Step-level search and every other strategy run once per budget. Greedy under a samples budget
is one temperature-0 sample whatever the budget, so it runs once per problem and seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.backends.base import Generator, SamplingParams
from ponder.errors import ConfigError, PonderError
from ponder.eval.datasets import AnswerFormat, Dataset, EvalProblem
from ponder.eval.identity import models_identity
from ponder.strategies.base import Candidate, Compute, StrategyResult
from ponder.strategies.best_of_n import BestOfN, pick_by_score
from ponder.strategies.budget import MAX_BATCH, Budget, BudgetTooSmall, BudgetTracker, Throughput, derive_seed
from ponder.strategies.greedy import Greedy
from ponder.strategies.majority import MajorityVote, vote
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy, parse_label
from ponder.strategies.sampling import score_value
from ponder.tasks.answers import extract_answer
from ponder.verifiers.base import Verifier

BUDGET_UNITS = ("samples", "tokens", "flops", "seconds")
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
DIFFICULTY_FILE = "difficulty.jsonl"


# --- the grid -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridStrategy:
    """A registered strategy with parameters, and the label its results carry."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        make_strategy(self.name, **self.params)  # refuse a bad name or parameter now
        if not self.label:
            object.__setattr__(self, "label", _label(self.name, self.params))

    def build(self) -> Any:
        return make_strategy(self.name, **self.params)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "label": self.label}


def _label(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    return name + ":" + ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def parse_strategy(text: str) -> GridStrategy:
    """``"beam_search:beam_width=4,n=8"`` -> GridStrategy (values read as JSON, else strings)."""
    name, params = parse_label(text)
    return GridStrategy(name, params)


def budget_key(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else repr(float(b))


def check_budgets(budgets: list[float], unit: str) -> list[float]:
    if unit not in BUDGET_UNITS:
        raise ConfigError(f"unknown budget unit {unit!r}: choose one of {list(BUDGET_UNITS)}")
    if not budgets:
        raise ConfigError("no budgets given")
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b) or b <= 0:
            raise ConfigError(f"budget {b!r} must be a positive number")
        if not float(math.log2(b)).is_integer():
            raise ConfigError(
                f"budget {b!r} is not a power of two (budgets are 1, 2, 4, ... or 0.5, 0.25, ...)"
            )
        if unit in ("samples", "tokens") and not float(b).is_integer():
            raise ConfigError(f"a {unit} budget must be a whole number, got {b!r}")
        out.append(int(b) if unit in ("samples", "tokens") else float(b))
    if len(set(out)) != len(out):
        raise ConfigError(f"budgets {budgets} repeat a value")
    return sorted(out)


def make_budget(unit: str, value: float, throughput: Throughput | None = None) -> Budget:
    if unit == "samples":
        return Budget(samples=int(value))
    if unit == "tokens":
        return Budget(tokens=int(value))
    if unit == "flops":
        return Budget(flops=float(value))
    return Budget(seconds=float(value), throughput=throughput)


@dataclass
class EvalConfig:
    """Everything that defines a run (and must match to continue one)."""

    dataset: dict[str, Any]
    strategies: list[GridStrategy]
    budgets: list[float]
    seeds: list[int]
    models: dict[str, Any]
    budget_unit: str = "samples"
    oracle_samples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. policy file hashes

    def __post_init__(self) -> None:
        self.budgets = check_budgets(list(self.budgets), self.budget_unit)
        if not self.strategies:
            raise ConfigError("no strategies given")
        labels = [s.label for s in self.strategies]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"strategies {labels} repeat a label")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and at least one, got {self.seeds}")
        if self.oracle_samples < 0:
            raise ConfigError(f"oracle_samples must be >= 0, got {self.oracle_samples}")

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "strategies": [s.to_json() for s in self.strategies],
            "budgets": self.budgets,
            "budget_unit": self.budget_unit,
            "seeds": self.seeds,
            "models": self.models,
            "oracle_samples": self.oracle_samples,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalConfig:
        try:
            return cls(
                dataset=dict(data["dataset"]),
                strategies=[
                    GridStrategy(s["name"], dict(s["params"]), s["label"]) for s in data["strategies"]
                ],
                budgets=list(data["budgets"]),
                seeds=[int(s) for s in data["seeds"]],
                models=dict(data["models"]),
                budget_unit=str(data["budget_unit"]),
                oracle_samples=int(data["oracle_samples"]),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed run configuration ({exc!r})") from None


def dataset_config(dataset: Dataset, **options: Any) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "answer_format": dataset.answer_format,
        "n_problems": len(dataset.problems),
        "fingerprint": dataset.fingerprint,
        **options,
    }


def policy_hash(path: str | Path) -> str:
    """A hash of what a policy file decides (models, predictor, table), not of its calibration
    notes (such as how long calibration took), so that re-saving the same policy is no change."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"policy file {p} does not exist (make one with `ponder calibrate`)")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {p} is not valid JSON ({exc})") from None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "calibration"}
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def policy_hashes(strategies: list[GridStrategy]) -> dict[str, str]:
    """Hashes of the policy files compute_optimal strategies use: a changed policy is another run."""
    return {
        s.label: policy_hash(s.params["policy"])
        for s in strategies
        if s.name == "compute_optimal" and s.params.get("policy")
    }


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path or 'config'}: recorded {json.dumps(a)}, now {json.dumps(b)}"]


# --- the run directory ----------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a JSONL file. A last line without its newline was cut short by a
    kill: it is dropped and cut from the file, so appending continues cleanly."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    out = []
    for line in data[:end].split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # unreadable (never written whole): its key is missing, so it is redone
        if isinstance(row, dict):
            out.append(row)
    return out


class JsonlWriter:
    """Appends one JSON object per line; each line is one write, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(row, sort_keys=True) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class RunDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def difficulty_path(self) -> Path:
        return self.path / DIFFICULTY_FILE

    def load_config(self) -> EvalConfig:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.path} is not a ponder run directory (no {CONFIG_FILE})")
        try:
            data = json.loads(self.config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.config_path} is not valid JSON ({exc})") from None
        return EvalConfig.from_json(data)

    def prepare(self, config: EvalConfig, resume: bool) -> None:
        """Create the directory for ``config``, or check that it holds the same run."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run directory {self.path} is a file")
        if self.config_path.is_file():
            recorded = json.loads(self.config_path.read_text())
            differences = _diff(recorded, json.loads(json.dumps(config.to_json())))
            if differences:
                raise ConfigError(
                    f"run directory {self.path} was written by another configuration: "
                    + "; ".join(differences[:6])
                    + ("; ..." if len(differences) > 6 else "")
                    + ". Use a new directory for a different run."
                )
            if not resume and (self.results_path.exists() or self.difficulty_path.exists()):
                raise ConfigError(
                    f"run directory {self.path} already has results: pass --resume to continue it "
                    "(or choose a new directory)"
                )
            return
        if self.path.is_dir() and any(self.path.iterdir()):
            raise ConfigError(f"{self.path} is not empty and not a ponder run directory")
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config.to_json(), indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.config_path)

    def results(self) -> list[dict[str, Any]]:
        seen: set[str] = set()
        out = []
        for row in read_jsonl(self.results_path):
            if "key" in row and row["key"] not in seen:
                seen.add(row["key"])
                out.append(row)
        return out

    def difficulty(self) -> dict[str, dict[str, Any]]:
        return {row["problem"]: row for row in read_jsonl(self.difficulty_path) if "problem" in row}


class RowCollector:
    """Keeps rows in memory instead of writing them: a worker's results, which the process that
    owns the run directory writes (see :mod:`ponder.eval.distributed`)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def result_key(problem_id: str, label: str, budget: float, seed: int) -> str:
    return f"{problem_id}|{label}|{budget_key(budget)}|{seed}"


# --- running --------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Counts work done and reports it: a rich bar on a terminal, else ETA lines every ``every`` s."""

    total: int
    done: int = 0
    log: Callable[[str], None] | None = None
    every: float = 30.0
    started: float = field(default_factory=time.perf_counter)
    _last: float = 0.0
    _bar: Any = None
    _task: Any = None

    def advance(self, k: int = 1, info: str = "") -> None:
        self.done += k
        if self._bar is not None:
            self._bar.update(self._task, advance=k, info=info)
            return
        now = time.perf_counter()
        if self.log is not None and (now - self._last >= self.every or self.done >= self.total):
            self._last = now
            from ponder.training.checkpoint import eta_line

            self.log(
                eta_line("eval", self.done, self.total, now - self.started) + (f" ({info})" if info else "")
            )


class _Grader:
    """Grades answer keys against a gold answer, each distinct key once."""

    def __init__(self, fmt: AnswerFormat) -> None:
        self.fmt = fmt
        self.cache: dict[tuple[Hashable, str], bool] = {}

    def __call__(self, answer: Hashable | None, gold: str) -> bool:
        if answer is None:
            return False
        key = (answer, gold)
        if key not in self.cache:
            self.cache[key] = self.fmt.is_correct(answer, gold)
        return self.cache[key]


def _compute_fields(c: Compute) -> dict[str, Any]:
    return {
        "samples": c.samples,
        "completions": c.completions,
        "policy_prompt_tokens": c.policy_prompt_tokens,
        "policy_completion_tokens": c.policy_completion_tokens,
        "policy_tokens": c.policy_tokens,
        "policy_cached_tokens": getattr(c, "policy_cached_tokens", 0),  # prefix-cache reuse, not computed
        "verifier_tokens": c.verifier_tokens,
        "policy_flops": c.policy_flops,
        "verifier_flops": c.verifier_flops,
        "flops": c.total_flops,
    }


def _answer_json(answer: Hashable | None) -> Any:
    if answer is None or isinstance(answer, int | float | str):
        return answer
    return str(answer)


@dataclass
class Context:
    config: EvalConfig
    generator: Generator
    verifier: Verifier | None
    grade: _Grader
    oracle_bins: dict[str, int]
    throughput: Throughput | None
    writer: JsonlWriter | RowCollector
    done: set[str]
    progress: Progress
    share_samples: bool


def _record(
    ctx: Context,
    problem: EvalProblem,
    spec: GridStrategy,
    budget: float,
    seed: int,
    result: StrategyResult | None,
    wall: float,
    error: str | None = None,
    **extra: Any,
) -> None:
    key = result_key(problem.id, spec.label, budget, seed)
    if key in ctx.done:
        return
    answer = result.answer if result is not None else None
    answers = {
        c.answer for c in (result.candidates if result else []) if not c.partial and c.answer is not None
    }
    row: dict[str, Any] = {
        "key": key,
        "problem": problem.id,
        "level": problem.level,
        "oracle_bin": ctx.oracle_bins.get(problem.id),
        "strategy": spec.label,
        "name": spec.name,
        "budget": budget,
        "seed": seed,
        "answer": _answer_json(answer),
        "gold": problem.answer,
        "correct": ctx.grade(answer, problem.answer),
        "any_correct": any(ctx.grade(a, problem.answer) for a in answers),
        "n_candidates": len(result.candidates) if result else 0,
        **_compute_fields(result.compute if result else Compute()),
        "wall_s": wall,
        "error": error,
    }
    if ctx.config.budget_unit == "seconds":
        row["deadline_met"] = wall <= budget
    if result is not None and hasattr(result, "predicted_bin"):
        row["predicted_bin"] = result.predicted_bin
        row["probe_feature"] = result.probe_feature
        row["chosen"] = result.chosen
    row.update(extra)
    ctx.writer.write(row)
    ctx.done.add(key)
    ctx.progress.advance(1, spec.label)


def _run_one(ctx: Context, problem: EvalProblem, spec: GridStrategy, budget: float, seed: int) -> None:
    strategy = spec.build()
    limits = make_budget(ctx.config.budget_unit, budget, ctx.throughput)
    start = time.perf_counter()
    try:
        result = strategy.run(
            problem.prompt,
            ctx.generator,
            ctx.verifier if spec.name in NEEDS_VERIFIER else None,
            limits,
            run_seed(seed, problem.id),
        )
    except BudgetTooSmall as exc:
        _record(ctx, problem, spec, budget, seed, None, time.perf_counter() - start, error=str(exc))
        return
    except PonderError as exc:
        # One problem the models cannot take (e.g. a prompt longer than the context): recorded,
        # counted wrong, and the run goes on. Configuration errors were caught before the run.
        _record(ctx, problem, spec, budget, seed, None, time.perf_counter() - start, error=str(exc))
        return
    _record(ctx, problem, spec, budget, seed, result, time.perf_counter() - start)


def run_seed(seed: int, problem_id: str) -> int:
    """The seed a strategy runs with on one problem: independent streams across problems."""
    return derive_seed(seed, "eval", problem_id)


def poolable(spec: GridStrategy) -> bool:
    return spec.name in ("majority", "best_of_n", "weighted_best_of_n")


def pool_results(
    prompt: str,
    generator: Generator,
    verifier: Verifier | None,
    strategies: list[Any],
    budgets: list[int],
    seed: int,
) -> dict[tuple[int, int], tuple[StrategyResult, float]]:
    """Results of sampling strategies at every budget from ONE pool of ``max(budgets)`` samples.

    ``strategies`` are MajorityVote / BestOfN instances sharing temperature and max_new_tokens.
    Returns (strategy index, budget) -> (result, estimated wall seconds). Exactly the results of
    ``strategy.run(prompt, ..., Budget(samples=k), seed)`` when the generator is prefix-stable.
    """
    temps = {(s.temperature, s.max_new_tokens) for s in strategies}
    if len(temps) != 1:
        raise ConfigError("a pool is shared only by strategies with the same temperature and max_new_tokens")
    ((temperature, max_new),) = temps
    n = max(budgets)
    if n > MAX_BATCH:
        raise ConfigError(f"a pool holds at most {MAX_BATCH} samples (one generate call), got {n}")
    tracker = BudgetTracker(Budget(samples=n), "pool", generator, verifier)
    start = time.perf_counter()
    params = SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new, seed=seed)
    group = tracker.generate([prompt], params, samples=n)[0]
    gen_s = time.perf_counter() - start
    all_tokens = sum(c.completion_tokens for c in group) or 1
    out: dict[tuple[int, int], tuple[StrategyResult, float]] = {}
    for k in budgets:
        prefix = group[:k]
        base = Compute()
        base.add_generation(generator, [prefix], samples=k)
        share = gen_s * sum(c.completion_tokens for c in prefix) / all_tokens
        texts = [c.text for c in prefix]
        scores, score_s = None, 0.0
        for i, strategy in enumerate(strategies):
            cands = [Candidate(text=t, answer=extract_answer(t)) for t in texts]
            compute = dataclasses.replace(base)
            if isinstance(strategy, MajorityVote):
                answer = vote(cands)
            else:
                if verifier is None:
                    raise ConfigError(f"strategy {strategy.name!r} needs a verifier")
                if scores is None:
                    t0 = time.perf_counter()
                    scores = verifier.score([prompt] * k, texts)  # exactly the strategy's call
                    score_s = time.perf_counter() - t0
                compute.add_verification(verifier, sum(s.tokens for s in scores))
                for cand, s in zip(cands, scores):
                    cand.score = score_value(s, strategy.aggregation)
                answer = pick_by_score(cands, strategy.weighted)
            compute.wall_seconds = share + score_s
            out[(i, k)] = (StrategyResult(answer=answer, candidates=cands, compute=compute), share + score_s)
    return out


def _run_problem(ctx: Context, problem: EvalProblem) -> None:
    config = ctx.config
    for seed in config.seeds:
        pending = [
            s
            for s in config.strategies
            if any(result_key(problem.id, s.label, b, seed) not in ctx.done for b in config.budgets)
        ]
        if not pending:
            continue
        shared = (
            ctx.share_samples
            and config.budget_unit == "samples"
            and getattr(ctx.generator, "prefix_stable", False)
            and max(config.budgets) <= MAX_BATCH
        )
        pools: dict[tuple[float, int], list[GridStrategy]] = {}
        for spec in pending:
            if shared and poolable(spec):
                built = spec.build()
                pools.setdefault((built.temperature, built.max_new_tokens), []).append(spec)
                continue
            if config.budget_unit == "samples" and isinstance(spec.build(), Greedy):
                _run_invariant(ctx, problem, spec, seed)
                continue
            for b in config.budgets:
                if result_key(problem.id, spec.label, b, seed) not in ctx.done:
                    _run_one(ctx, problem, spec, b, seed)
        for specs in pools.values():
            built = [s.build() for s in specs]
            assert all(isinstance(b, MajorityVote | BestOfN) for b in built)
            budgets = [int(b) for b in config.budgets]
            results = pool_results(
                problem.prompt, ctx.generator, ctx.verifier, built, budgets, run_seed(seed, problem.id)
            )
            # The whole pool's correct count gives unbiased pass@k at every budget (coverage).
            full = results[(0, max(budgets))][0].candidates
            pool_correct = sum(ctx.grade(c.answer, problem.answer) for c in full)
            for (i, k), (result, wall) in sorted(results.items()):
                _record(
                    ctx,
                    problem,
                    specs[i],
                    k,
                    seed,
                    result,
                    wall,
                    pooled=True,
                    wall_estimated=True,
                    pool_n=len(full),
                    pool_correct=pool_correct,
                )


def problem_rows(
    config: EvalConfig,
    problem: EvalProblem,
    generator: Generator,
    verifier: Verifier | None,
    grade: _Grader,
    *,
    oracle_bins: dict[str, int],
    throughput: Throughput | None,
    done: set[str],
    share_samples: bool = True,
) -> list[dict[str, Any]]:
    """The result rows of one problem's grid whose keys are not in ``done``, computed exactly as a
    local run computes them but returned, not written. Run inside the answer format's
    ``strategy_context()``."""
    sink = RowCollector()
    progress = Progress(total=0)  # the caller counts the rows it writes
    ctx = Context(
        config, generator, verifier, grade, oracle_bins, throughput, sink, set(done), progress, share_samples
    )
    _run_problem(ctx, problem)
    return sink.rows


def _run_invariant(ctx: Context, problem: EvalProblem, spec: GridStrategy, seed: int) -> None:
    """Greedy under a samples budget: one sample whatever the budget; run once, recorded per budget."""
    strategy = spec.build()
    start = time.perf_counter()
    try:
        result = strategy.run(
            problem.prompt, ctx.generator, None, Budget(samples=1), run_seed(seed, problem.id)
        )
        error = None
    except PonderError as exc:
        result, error = None, str(exc)
    wall = time.perf_counter() - start
    for b in ctx.config.budgets:
        _record(ctx, problem, spec, b, seed, result, wall, error=error)


def oracle_pass1(
    problem: EvalProblem, generator: Generator, n: int, grade: _Grader, max_new_tokens: int = 160
) -> int:
    """How many of ``n`` samples (temperature 1) answer ``problem`` right."""
    correct = 0
    drawn = 0
    batch = 0
    while drawn < n:
        k = min(MAX_BATCH, n - drawn)
        params = SamplingParams(
            n=k,
            temperature=1.0,
            max_new_tokens=max_new_tokens,
            seed=derive_seed(0, "oracle", problem.id, batch),
        )
        group = generator.generate([problem.prompt], params)[0]
        correct += sum(grade(extract_answer(c.text), problem.answer) for c in group)
        drawn += k
        batch += 1
    return correct


def bins_from_difficulty(
    rows: dict[str, dict[str, Any]], n_bins: int = 5, spec: str | None = None
) -> dict[str, int]:
    """Oracle bins of the problems in ``difficulty.jsonl`` rows: ``n_bins`` quantiles, or ``spec``:
    ``"quantile"``, ``"quantile:N"`` or ``"thresholds:0.8,0.6,0.4,0.2"`` (fixed pass@1 cut points)."""
    from ponder.allocation.difficulty import oracle_bins

    if not rows:
        return {}
    pass1 = {pid: float(r["pass1"]) for pid, r in rows.items()}
    method, _, arg = (spec or "quantile").partition(":")
    if method == "thresholds":
        try:
            cuts = [float(x) for x in arg.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(
                f"difficulty bins {spec!r}: thresholds are numbers, e.g. thresholds:0.8,0.5"
            ) from None
        if not cuts:
            raise ConfigError(f"difficulty bins {spec!r} give no thresholds, e.g. thresholds:0.8,0.5")
        return oracle_bins(pass1, method="thresholds", thresholds=cuts)
    if method != "quantile":
        raise ConfigError(f"difficulty bins {spec!r}: use quantile, quantile:N or thresholds:0.8,0.6,...")
    if arg:
        try:
            n_bins = int(arg)
        except ValueError:
            raise ConfigError(f"difficulty bins {spec!r}: quantile:N needs a whole number") from None
    return oracle_bins(pass1, n_bins=n_bins)


def run_eval(
    config: EvalConfig,
    run_dir: str | Path,
    dataset: Dataset,
    generator: Generator,
    verifier: Verifier | None,
    *,
    resume: bool = False,
    share_samples: bool = True,
    throughput: Throughput | None = None,
    log: Callable[[str], None] | None = None,
    n_bins: int = 5,
) -> RunDir:
    """Run (or continue) the grid; returns the run directory, whose files hold every result."""
    if dataset.fingerprint != config.dataset.get("fingerprint"):
        raise ConfigError("the dataset given does not match the configuration's dataset fingerprint")
    actual = models_identity(generator, verifier)
    if actual != config.models:
        raise ConfigError(f"the models given ({actual}) are not the configuration's ({config.models})")
    if any(s.name in NEEDS_VERIFIER for s in config.strategies) and verifier is None:
        needs = sorted(s.label for s in config.strategies if s.name in NEEDS_VERIFIER)
        raise ConfigError(f"strategies {needs} need a verifier")
    run = RunDir(Path(run_dir))
    run.prepare(config, resume)
    if config.budget_unit == "seconds" and throughput is None:
        from ponder.allocation.deadline import measure_throughput

        throughput = measure_throughput(generator, verifier)
        if log:
            log(f"measured throughput for deadlines: {throughput}")
    fmt = AnswerFormat(dataset.answer_format)
    grade = _Grader(fmt)
    done = {row["key"] for row in run.results()}
    difficulty = run.difficulty()
    problems = list(dataset.problems)
    oracle_todo = [p for p in problems if p.id not in difficulty] if config.oracle_samples else []
    total = len(problems) * len(config.seeds) * len(config.strategies) * len(config.budgets)
    progress = Progress(total=total + len(oracle_todo), done=len(done & _all_keys(config, problems)), log=log)
    from ponder.training.checkpoint import progress_bar

    with progress_bar("eval", progress.total, progress.done) as (bar, task), fmt.strategy_context():
        if bar is not None and not bar.disable:
            progress._bar, progress._task = bar, task
        if oracle_todo:
            writer = JsonlWriter(run.difficulty_path)
            try:
                for p in oracle_todo:
                    c = oracle_pass1(p, generator, config.oracle_samples, grade)
                    n = config.oracle_samples
                    writer.write({"problem": p.id, "level": p.level, "n": n, "correct": c, "pass1": c / n})
                    progress.advance(1, "oracle difficulty")
            finally:
                writer.close()
            difficulty = run.difficulty()
        bins = bins_from_difficulty(difficulty, n_bins) if config.oracle_samples else {}
        writer = JsonlWriter(run.results_path)
        ctx = Context(
            config, generator, verifier, grade, bins, throughput, writer, done, progress, share_samples
        )
        try:
            # In a fixed shuffled order, so that the ETA (work done so far, extrapolated) is not
            # fooled by a dataset sorted from easy (fast) to hard (slow) problems.
            for problem in sorted(problems, key=lambda p: hashlib.sha1(p.id.encode()).hexdigest()):
                _run_problem(ctx, problem)
        finally:
            writer.close()
    return run


def _all_keys(config: EvalConfig, problems: list[EvalProblem]) -> set[str]:
    return {
        result_key(p.id, s.label, b, seed)
        for p in problems
        for s in config.strategies
        for b in config.budgets
        for seed in config.seeds
    }
