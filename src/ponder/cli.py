"""The ``ponder`` command line."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ponder.errors import ConfigError, PonderError

app = typer.Typer(help="ponder: test-time compute scaling for language models.", no_args_is_help=True)
train_app = typer.Typer(
    help="Train the embedded models (policy, rollout labels, verifier).", no_args_is_help=True
)
app.add_typer(train_app, name="train")
console = Console()


def clean_errors(fn):
    """Show a PonderError as one red line and exit 2, never as a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PonderError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/yellow]: finished work is kept; rerun to resume")
            sys.exit(130)

    return wrapper


@train_app.command("policy")
@clean_errors
def train_policy_cmd(
    out_dir: Annotated[Path, typer.Option(help="run directory (checkpoints, final weights)")] = Path(
        "runs/policy"
    ),
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 3000,
    batch_size: int = 64,
    d_model: int = 128,
    n_layer: int = 4,
    n_head: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    stop_step: Annotated[
        int | None, typer.Option(help="stop after this step, keeping the learning-rate schedule of --steps")
    ] = None,
    early_stop: Annotated[bool, typer.Option(help="stop once dev greedy L1 reaches 0.95 (or L5 0.3)")] = True,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (faster on CPUs with AVX512-BF16)")] = False,
    length_buckets: Annotated[
        int, typer.Option(min=1, help="micro-batches per batch, by length (same gradient, less padding)")
    ] = 1,
    eval_every: Annotated[int, typer.Option(min=1, help="steps between dev evaluations")] = 100,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default)")] = 0,
    order_shuffle: Annotated[
        float, typer.Option(help="share of solutions that apply the operations in a random order (0-1)")
    ] = 0.0,
    device: Annotated[
        str, typer.Option(help="where the steps run: cpu or cuda (dev evaluations: CPU)")
    ] = "cpu",
    resume: Annotated[bool, typer.Option(help="continue from the run directory's checkpoint")] = True,
) -> None:
    """Train the embedded policy on the built-in task's train split."""
    from ponder.training.train_policy import PolicyTrainConfig, train_policy

    cfg = PolicyTrainConfig(
        out_dir=str(out_dir),
        steps=steps,
        batch_size=batch_size,
        d_model=d_model,
        n_layer=n_layer,
        n_head=n_head,
        lr=lr,
        seed=seed,
        stop_step=stop_step,
        bf16=bf16,
        length_buckets=length_buckets,
        eval_every=eval_every,
        threads=threads,
        device=device,
        order_shuffle=order_shuffle,
    )
    if not early_stop:
        cfg.stop_accuracy = cfg.cap_accuracy = None
    path = train_policy(cfg, resume=resume, log=console.print)
    console.print(f"policy weights: {path}")


@train_app.command("rollouts")
@clean_errors
def train_rollouts_cmd(
    policy: Annotated[Path, typer.Option(help="policy weights to roll out")] = Path(
        "runs/policy/policy.safetensors"
    ),
    out_file: Path = Path("runs/verifier/labels.jsonl"),
    n_problems: int = 800,
    samples_per_problem: int = 4,
    rollouts_per_step: int = 4,
    label: Annotated[
        str,
        typer.Option(
            help="hard (any rollout wins), soft (share of rollouts that win) or checked "
            "(the task's step checker annotates each step; no rollouts)"
        ),
    ] = "hard",
    any_order: Annotated[
        bool, typer.Option(help="checked labels: the operations may come in any order (embedded+orders)")
    ] = False,
    seed: int = 0,
) -> None:
    """Label the policy's own sampled steps by Monte-Carlo rollouts (resumable)."""
    from ponder.backends.embedded import EmbeddedGenerator
    from ponder.training.prm_data import RolloutConfig, generate_labels

    cfg = RolloutConfig(
        out_file=str(out_file),
        n_problems=n_problems,
        samples_per_problem=samples_per_problem,
        rollouts_per_step=rollouts_per_step,
        label=label,
        any_order=any_order,
        seed=seed,
    )
    generate_labels(EmbeddedGenerator.load(policy), cfg, log=console.print)


@train_app.command("verifier")
@clean_errors
def train_verifier_cmd(
    labels: Path = Path("runs/verifier/labels.jsonl"),
    policy: Annotated[Path, typer.Option(help="policy weights the verifier starts from")] = Path(
        "runs/policy/policy.safetensors"
    ),
    out_dir: Path = Path("runs/verifier"),
    epochs: int = 3,
    seed: int = 0,
    trunk_lr_scale: Annotated[
        float, typer.Option(help="learning rate of the policy trunk relative to the rest (0 freezes it)")
    ] = 0.0,
    surprise_features: Annotated[
        bool, typer.Option(help="feed the policy's surprise at each token (needs a frozen trunk)")
    ] = True,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default)")] = 0,
    resume: bool = True,
) -> None:
    """Train the PRM + ORM verifier on rollout labels."""
    from ponder.training.train_verifier import VerifierTrainConfig, train_verifier

    cfg = VerifierTrainConfig(
        labels=str(labels),
        init_from=str(policy),
        out_dir=str(out_dir),
        epochs=epochs,
        seed=seed,
        trunk_lr_scale=trunk_lr_scale,
        surprise_features=surprise_features,
        threads=threads,
    )
    path = train_verifier(cfg, resume=resume, log=console.print)
    console.print(f"verifier weights: {path}")


@train_app.command("checker")
@clean_errors
def train_checker_cmd(
    samples: Annotated[
        Path, typer.Option(help="the policy's sampled solutions (`ponder train rollouts --label checked`)")
    ] = Path("runs/checker/samples.jsonl"),
    policy: Annotated[Path, typer.Option(help="policy weights the checker starts from")] = Path(
        "runs/policy/policy.safetensors"
    ),
    out_dir: Path = Path("runs/checker"),
    steps: Annotated[int, typer.Option(min=1)] = 500,
    lr: float = 3e-4,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default)")] = 0,
    any_order: Annotated[
        bool, typer.Option(help="the policy may apply the operations in any order (embedded+orders)")
    ] = False,
    device: Annotated[str, typer.Option(help="where the steps run: cpu or cuda")] = "cpu",
    resume: bool = True,
) -> None:
    """Train the step checker (the default verifier) on the policy's samples, slips corrected."""
    from ponder.training.train_checker import CheckerTrainConfig, train_checker

    cfg = CheckerTrainConfig(
        samples=str(samples),
        init_from=str(policy),
        out_dir=str(out_dir),
        steps=steps,
        lr=lr,
        seed=seed,
        threads=threads,
        any_order=any_order,
        device=device,
    )
    path = train_checker(cfg, resume=resume, log=console.print)
    console.print(f"checker weights: {path}")


@train_app.command("reviser")
@clean_errors
def train_reviser_cmd(
    samples: Annotated[
        Path, typer.Option(help="the policy's sampled solutions (`ponder train rollouts --label checked`)")
    ] = Path("runs/checker/samples.jsonl"),
    policy: Annotated[Path, typer.Option(help="policy weights the reviser starts from")] = Path(
        "runs/policy/policy.safetensors"
    ),
    out_dir: Path = Path("runs/reviser"),
    steps: Annotated[int, typer.Option(min=1)] = 1200,
    lr: float = 1e-3,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="most earlier attempts a training prompt shows")
    ] = 3,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default)")] = 0,
    resume: bool = True,
) -> None:
    """Teach the policy to revise: its own wrong samples in context, the right solution as target."""
    from ponder.training.train_reviser import ReviserTrainConfig, train_reviser

    cfg = ReviserTrainConfig(
        samples=str(samples),
        init_from=str(policy),
        out_dir=str(out_dir),
        steps=steps,
        lr=lr,
        max_attempts=max_attempts,
        seed=seed,
        threads=threads,
    )
    path = train_reviser(cfg, resume=resume, log=console.print)
    console.print(f"reviser weights: {path}")


@train_app.command("all")
@clean_errors
def train_all_cmd(
    out_dir: Path = Path("runs/embedded"),
    seed: int = 0,
    install: Annotated[bool, typer.Option(help="copy the weights and model card into the package")] = False,
    orders_policy: Annotated[
        bool, typer.Option(help="also train the order-diverse policy (majority vote's; embedded+orders)")
    ] = True,
    device: Annotated[str, typer.Option(help="where the policies and checkers train: cpu or cuda")] = "cpu",
) -> None:
    """Retrain every embedded model from scratch (resumable), measure them, write the model card."""
    from ponder.training.recipe import RecipeConfig, run_recipe

    cfg = RecipeConfig(
        out_dir=str(out_dir), seed=seed, install=install, orders_policy=orders_policy, device=device
    )
    run_recipe(cfg, log=console.print)


@app.command()
@clean_errors
def demo(
    n_per_level: Annotated[int, typer.Option(help="test problems per level")] = 6,
    samples: Annotated[int, typer.Option(help="samples per problem for the sampling strategies")] = 16,
    seed: int = 0,
) -> None:
    """Solve a few built-in test problems with several strategies; print accuracy and compute."""
    from ponder.demo import run_demo

    run_demo(n_per_level=n_per_level, samples=samples, seed=seed, console=console)


@app.command()
@clean_errors
def solve(
    question: Annotated[str, typer.Argument(help="a chain such as 48+27-13")],
    strategy: Annotated[
        str,
        typer.Option(
            help="greedy, majority, best_of_n, weighted_best_of_n, beam_search, lookahead, dvts, "
            "adaptive_majority, mcts, revision, budget_forcing, cascade"
        ),
    ] = "majority",
    samples: Annotated[
        int | None,
        typer.Option(help="samples the strategy may draw (N); 16 when no budget option is given"),
    ] = None,
    tokens: Annotated[
        int | None, typer.Option(help="policy prompt + generated tokens + verifier tokens it may spend")
    ] = None,
    flops: Annotated[
        float | None, typer.Option(help="FLOPs it may spend, policy and verifier together (e.g. 2e9)")
    ] = None,
    seed: int = 0,
    trace: Annotated[
        bool, typer.Option(help="print every candidate and its score, and the search trace")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="the policy: embedded, openai://host:port/model, openai+https://host/model, "
            "hf:/model/dir or gguf:/model.gguf (options after ?, e.g. ?api=chat)"
        ),
    ] = "embedded",
    verifier: Annotated[
        str,
        typer.Option(
            help="what scores solutions (best_of_n, search): embedded, hf-prm:/dir, hf-orm:/dir, "
            "vllm-reward://host:port/model, judge:<backend spec>, answer-check[:REF], "
            "code-tests:/tests.py, ... (options after ?, e.g. ?batch_size=4)"
        ),
    ] = "embedded",
) -> None:
    """Answer one question with a policy (the embedded one by default) and a strategy, within a
    compute budget."""
    from ponder.api import DEFAULT_SAMPLES
    from ponder.api import solve as solve_question
    from ponder.strategies.budget import Budget
    from ponder.tasks.arithmetic import to_display

    if samples is None and tokens is None and flops is None:
        samples = DEFAULT_SAMPLES
    budget = Budget(samples=samples, tokens=tokens, flops=flops)
    result = solve_question(
        question, strategy=strategy, budget=budget, seed=seed, backend=backend, verifier=verifier
    )
    if trace:
        table = Table(title="candidates (ordinary digit order)")
        for col in ("#", "solution", "answer", "score"):
            table.add_column(col)
        complete = [c for c in result.candidates if not c.partial]
        for i, c in enumerate(complete):
            score = "" if c.score is None else f"{c.score:.3f}"
            table.add_row(str(i), to_display(c.text).replace("\n", " | "), str(c.answer), score)
        console.print(table)
        pruned = len(result.candidates) - len(complete)
        if pruned:
            console.print(f"(and {pruned} partial paths the search pruned or left open)")
        for line in result.trace:
            console.print(line, markup=False, highlight=False)
    cmp = result.compute
    console.print(f"answer: [bold]{result.answer}[/bold]")
    console.print(
        f"compute: {cmp.samples} samples, {cmp.policy_tokens} policy tokens, {cmp.verifier_tokens} verifier "
        f"tokens, {cmp.total_flops / 1e9:.3f} GFLOPs"
    )
    console.print(f"budget: {budget.describe()}")


@app.command()
@clean_errors
def ttt(
    question: Annotated[str, typer.Argument(help="a chain such as 48+27-13")],
    select: Annotated[str, typer.Option(help="sift, nn (nearest), random (control) or none")] = "sift",
    k: Annotated[int, typer.Option(help="most examples to select (one gradient step each)")] = 8,
    threshold: Annotated[
        float | None, typer.Option(help="adaptive stop: select while SIFT's posterior variance is above this")
    ] = None,
    lam: Annotated[float, typer.Option(help="SIFT's regularisation")] = 0.1,
    lr: float = 1e-2,
    mode: Annotated[str, typer.Option(help="full or lora")] = "full",
    corpus: Annotated[
        Path | None, typer.Option(help="JSONL of solved problems (default: the built-in train split)")
    ] = None,
    corpus_per_level: int = 200,
    embedder: Annotated[str, typer.Option(help="policy (hidden states) or minilm")] = "policy",
    strategy: str = "greedy",
    samples: Annotated[int, typer.Option(help="samples the strategy may draw")] = 1,
    seed: int = 0,
    backend: Annotated[str, typer.Option(help="the policy to fine-tune (a local model)")] = "embedded",
) -> None:
    """Answer one question after test-time fine-tuning on selected solved problems (SIFT)."""
    from ponder.strategies.budget import Budget
    from ponder.tasks.arithmetic import to_display
    from ponder.training.ttt import TTTConfig, solve_with_ttt

    config = TTTConfig(select=select, k=k, threshold=threshold, lam=lam, lr=lr, mode=mode, seed=seed)  # type: ignore[arg-type]
    out, trainer = solve_with_ttt(
        question, strategy, Budget(samples=samples), config, corpus, corpus_per_level, backend, embedder, seed
    )
    sel = out.selection
    console.print(f"selected {len(sel.indices)} of {len(trainer.corpus)} examples ({select}):")
    for i, (index, ex) in enumerate(zip(sel.indices, out.examples)):
        q = to_display(ex.prompt.strip())
        console.print(f"  {i + 1}. #{index} {q}  (posterior variance after: {sel.variances[i + 1]:.3f})")
    if sel.stopped_early:
        console.print(f"  stopped early: posterior variance {sel.final_variance:.3f} <= {threshold}")
    c, r = out.compute, out.result.compute
    console.print(f"answer: [bold]{out.answer}[/bold]")
    console.print(
        f"fine-tuning: {c.train_steps} steps, {c.train_tokens} tokens, {c.total_flops / 1e9:.3f} GFLOPs; "
        f"answering: {r.samples} samples, {r.total_flops / 1e9:.3f} GFLOPs"
    )


@app.command()
@clean_errors
def serve(
    config: Annotated[
        Path | None,
        typer.Option(help="YAML or JSON server config (models, limits); default: the embedded model"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on (default 8000)")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            envvar="PONDER_API_KEY",
            show_envvar=True,
            show_default=False,
            help="require this key (Authorization: Bearer KEY); repeatable",
        ),
    ] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="searches running at once (default 2)")] = None,
    max_queue: Annotated[
        int | None, typer.Option(help="requests waiting for a worker; beyond: 429 (default 256)")
    ] = None,
    log_requests: Annotated[
        bool, typer.Option("--log-requests", help="log request and response bodies (user data)")
    ] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="one log line per request")] = False,
    torch_threads: Annotated[
        int | None, typer.Option(help="torch CPU threads for embedded / local models (default: torch's)")
    ] = None,
) -> None:
    """Serve an OpenAI-compatible API whose answers come from a test-time compute search."""
    from ponder.serve.config import ServeConfig, load_config, parse_config

    base = load_config(config) if config is not None else ServeConfig()
    overrides = {
        "host": host,
        "port": port,
        "max_concurrency": max_concurrency,
        "max_queue": max_queue,
        "api_keys": (base.api_keys + list(api_key)) if api_key else None,
        "log_requests": True if log_requests else None,
        "access_log": True if access_log else None,
    }
    merged = base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    settings = parse_config(merged, source="command line")
    if torch_threads is not None:
        if torch_threads < 1:
            raise ConfigError(f"--torch-threads must be at least 1, got {torch_threads}")
        import torch

        torch.set_num_threads(torch_threads)
    from ponder.serve.app import serve as run_server

    run_server(settings)


# --- evaluation and the compute-optimal policy ------------------------------------------------------

DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="builtin (the built-in task), or a .jsonl/.json/.parquet file or local HF datasets directory "
        "of question/answer records",
    ),
]
SplitOpt = Annotated[str | None, typer.Option(help="split: train/dev/test (builtin) or the dataset's")]
FormatOpt = Annotated[
    str | None, typer.Option(help="answer format: auto, arithmetic, gsm8k (#### N), math (\\boxed{}), number")
]
PerLevelOpt = Annotated[int | None, typer.Option(help="builtin: problems per level (default 20)")]
LevelsOpt = Annotated[str | None, typer.Option(help="builtin: levels, e.g. 1,2,3 (default all)")]
LimitOpt = Annotated[int | None, typer.Option(help="use only the first N records")]
DatasetSeedOpt = Annotated[int | None, typer.Option(help="builtin: which problems are drawn (default 0)")]
QFieldOpt = Annotated[str | None, typer.Option(help="record field holding the question")]
AFieldOpt = Annotated[str | None, typer.Option(help="record field holding the answer")]
TemplateOpt = Annotated[
    str | None, typer.Option(help="prompt template for non-builtin formats, with {question}")
]
StrategyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--strategy",
        help="a strategy with parameters, e.g. beam_search:beam_width=4,n=8 (repeatable)",
    ),
]
BackendOpt = Annotated[str, typer.Option(help="the policy: a backend spec (see `ponder solve --help`)")]
VerifierOpt = Annotated[str, typer.Option(help="the verifier: a verifier spec, or none")]


def _log(message: str) -> None:
    console.print(message, markup=False, highlight=False)


def with_recipe(command):
    """Fill the options not given on the command line (the typer.Context ``ctx`` tells) from the
    ``--config`` recipe (ponder.eval.recipe), then require a run directory."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if kwargs.get("config") is not None:
            from ponder.eval.recipe import recipe_options

            sources = {name: kwargs["ctx"].get_parameter_source(name) for name in kwargs}
            defaults = (None, "DEFAULT", "DEFAULT_MAP")
            given = {name for name, src in sources.items() if getattr(src, "name", None) not in defaults}
            kwargs.update(recipe_options(kwargs["config"], given))
        if kwargs.get("run_dir") is None:
            raise ConfigError("no run directory: give it as ponder eval RUN_DIR, or as run_dir: in --config")
        return command(*args, **kwargs)

    return wrapper


@app.command("eval")
@clean_errors
@with_recipe
def eval_cmd(
    ctx: typer.Context,
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="run directory: config, results.jsonl, report, plots (or run_dir: in --config)"),
    ] = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    answer_format: FormatOpt = None,
    n_per_level: PerLevelOpt = None,
    levels: LevelsOpt = None,
    limit: LimitOpt = None,
    dataset_seed: DatasetSeedOpt = None,
    question_field: QFieldOpt = None,
    answer_field: AFieldOpt = None,
    prompt_template: TemplateOpt = None,
    strategy: StrategyOpt = None,
    budgets: Annotated[str | None, typer.Option(help="powers of two, e.g. 1,2,4,8,16 (default)")] = None,
    unit: Annotated[
        str | None, typer.Option(help="what a budget counts: samples (default), tokens, flops, seconds")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="seeds, e.g. 0,1,2 (default 0)")] = None,
    oracle_samples: Annotated[
        int | None, typer.Option(help="samples per problem for oracle difficulty bins (0: none)")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="policy file for compute_optimal (adds it to the strategies)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the run directory's run")] = False,
    share_samples: Annotated[
        bool, typer.Option(help="serve majority/best-of-N budgets from one pool of samples (same results)")
    ] = True,
    report: Annotated[str, typer.Option(help="report format: md, html or none")] = "md",
    group_by: Annotated[str, typer.Option(help="report levels: auto, level or oracle_bin")] = "auto",
    difficulty_bins: Annotated[
        str | None,
        typer.Option(help="report's oracle bins: quantile (default), quantile:N, thresholds:0.8,0.6,..."),
    ] = None,
    report_only: Annotated[bool, typer.Option(help="only (re)write the report of a run")] = False,
    backend: BackendOpt = "embedded",
    verifier: VerifierOpt = "embedded",
    ray: Annotated[
        bool, typer.Option("--ray", help="run the grid on Ray, started in this process (needs the ray extra)")
    ] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="run the grid on the Ray cluster at HOST:PORT (implies --ray)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML recipe of these options (configs/recipes/); options given here override it"),
    ] = None,
) -> None:
    """Evaluate strategies on a dataset over a grid of budgets and seeds (resumable), with a report."""
    from ponder.eval.commands import dataset_options, eval_command

    options = dataset_options(
        dataset, split, answer_format, n_per_level, levels, limit, dataset_seed, question_field, answer_field,
        prompt_template,
    )  # fmt: skip
    out = eval_command(
        run_dir,
        options=options,
        strategies=strategy,
        budgets=budgets,
        unit=unit,
        seeds=seeds,
        oracle_samples=oracle_samples,
        policy=policy,
        resume=resume,
        share_samples=share_samples,
        report=report,
        group_by=group_by,
        backend=backend,
        verifier=verifier,
        report_only=report_only,
        log=_log,
        difficulty_bins=difficulty_bins,
        ray=ray_address or ("local" if ray else None),
    )
    console.print(f"results: {run_dir / 'results.jsonl'}" + (f"; report: {out}" if out else ""))


@app.command("calibrate")
@clean_errors
def calibrate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="calibration directory (grid results, probes, policy)")],
    out: Annotated[Path | None, typer.Option(help="policy file (default RUN_DIR/policy.json)")] = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    answer_format: FormatOpt = None,
    n_per_level: PerLevelOpt = None,
    levels: LevelsOpt = None,
    limit: LimitOpt = None,
    dataset_seed: DatasetSeedOpt = None,
    question_field: QFieldOpt = None,
    answer_field: AFieldOpt = None,
    prompt_template: TemplateOpt = None,
    strategy: StrategyOpt = None,
    budgets: Annotated[str, typer.Option(help="powers of two")] = "1,2,4,8,16,32",
    seeds: Annotated[str, typer.Option(help="seeds of the grid")] = "0",
    bins: Annotated[int, typer.Option(help="difficulty bins")] = 5,
    oracle_samples: Annotated[int, typer.Option(help="samples per problem for oracle pass@1")] = 32,
    probe_samples: Annotated[int, typer.Option(help="probe samples that predict difficulty")] = 4,
    folds: Annotated[int, typer.Option(help="cross-validation folds")] = 5,
    bins_from: Annotated[str, typer.Option(help="choose per predicted or oracle bin")] = "predicted",
    difficulty_features: Annotated[
        str, typer.Option(help="what predicts difficulty: score (probe's mean score) or score+length")
    ] = "score+length",
    selection: Annotated[
        str,
        typer.Option(
            help="best (the most accurate candidate) or one-se (the cheapest within one standard error of it)"
        ),
    ] = "best",
    pipeline: Annotated[
        bool,
        typer.Option(
            "--pipeline/--standalone",
            help="measure each candidate after compute_optimal's probe, as it will run (default), "
            "or run alone from scratch",
        ),
    ] = True,
    spend_less: Annotated[
        bool,
        typer.Option(
            "--spend-less/--spend-all",
            help="a bin may stop at a smaller budget that did as well (default), or always use the budget",
        ),
    ] = True,
    resume: Annotated[bool, typer.Option(help="continue the calibration directory's run")] = False,
    backend: BackendOpt = "embedded",
    verifier: VerifierOpt = "embedded",
) -> None:
    """Choose, per difficulty bin and budget, the strategy that maximises accuracy on a dev split
    (cross-validated), and save it as a policy file for the compute_optimal strategy."""
    from ponder.eval.commands import calibrate_command, dataset_options

    options = dataset_options(
        dataset, split, answer_format, n_per_level, levels, limit, dataset_seed, question_field, answer_field,
        prompt_template,
    )  # fmt: skip
    path = calibrate_command(
        run_dir,
        options=options,
        strategies=strategy,
        budgets=budgets,
        seeds=seeds,
        out=out,
        bins=bins,
        oracle_samples=oracle_samples,
        probe_samples=probe_samples,
        folds=folds,
        bins_from=bins_from,
        features=difficulty_features,
        selection=selection,
        pipeline=pipeline,
        spend_less=spend_less,
        resume=resume,
        backend=backend,
        verifier=verifier,
        log=_log,
    )
    console.print(f"policy: {path}")


@app.command("batch")
@clean_errors
def batch_cmd(
    out: Annotated[Path, typer.Argument(help="answers file (JSONL; its first line is the allocation)")],
    policy: Annotated[str, typer.Option(help="policy file from `ponder calibrate`")],
    total_samples: Annotated[
        int, typer.Option(min=1, help="samples the whole batch may spend, probes included")
    ],
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    answer_format: FormatOpt = None,
    n_per_level: PerLevelOpt = None,
    levels: LevelsOpt = None,
    limit: LimitOpt = None,
    dataset_seed: DatasetSeedOpt = None,
    question_field: QFieldOpt = None,
    answer_field: AFieldOpt = None,
    prompt_template: TemplateOpt = None,
    seed: int = 0,
    curves: Annotated[
        str | None,
        typer.Option(
            help="what the allocator expects of each budget: coverage (the policy's coverage model, "
            "the default when it has one) or calibrated (the calibrated curves)"
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue an answers file cut short")] = False,
    backend: BackendOpt = "embedded",
    verifier: VerifierOpt = "embedded",
) -> None:
    """Answer a batch of questions under one total budget: probe each question, allocate the total
    by marginal expected gain per sample on its predicted difficulty, then answer each with
    compute_optimal capped at its share. The batch never spends more than the total."""
    from ponder.eval.commands import batch_command, dataset_options

    options = dataset_options(
        dataset, split, answer_format, n_per_level, levels, limit, dataset_seed, question_field, answer_field,
        prompt_template,
    )  # fmt: skip
    summary = batch_command(
        out,
        options=options,
        policy=policy,
        total_samples=total_samples,
        seed=seed,
        curves=curves,
        resume=resume,
        backend=backend,
        verifier=verifier,
        log=_log,
    )
    console.print(
        f"{summary['questions']} questions: accuracy {100 * summary['accuracy']:.1f}%, "
        f"{summary['spent_samples']} samples spent of {summary['total_samples']} "
        f"({summary['allocated']} allocated), {summary['gflops']:.2f} GFLOPs"
    )
    console.print(
        f"expected accuracy ({summary['curves']} curves): {100 * summary['expected_accuracy']:.1f}% "
        f"allocated, {100 * summary['expected_uniform']:.1f}% with an even split"
    )
    console.print(f"answers: {summary['file']}")


if __name__ == "__main__":
    app()
