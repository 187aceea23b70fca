"""The ``ponder`` command line."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ponder.errors import PonderError

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
    )
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
    resume: bool = True,
) -> None:
    """Train the PRM + ORM verifier on rollout labels."""
    from ponder.training.train_verifier import VerifierTrainConfig, train_verifier

    cfg = VerifierTrainConfig(
        labels=str(labels), init_from=str(policy), out_dir=str(out_dir), epochs=epochs, seed=seed
    )
    path = train_verifier(cfg, resume=resume, log=console.print)
    console.print(f"verifier weights: {path}")


@train_app.command("all")
@clean_errors
def train_all_cmd(
    out_dir: Path = Path("runs/embedded"),
    seed: int = 0,
    install: Annotated[bool, typer.Option(help="copy the weights and model card into the package")] = False,
) -> None:
    """Retrain every embedded model from scratch (resumable), measure them, write the model card."""
    from ponder.training.recipe import RecipeConfig, run_recipe

    run_recipe(RecipeConfig(out_dir=str(out_dir), seed=seed, install=install), log=console.print)


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
            "adaptive_majority"
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
) -> None:
    """Answer one question with the embedded models and a strategy, within a compute budget."""
    from ponder.api import DEFAULT_SAMPLES
    from ponder.api import solve as solve_question
    from ponder.strategies.budget import Budget
    from ponder.tasks.arithmetic import to_display

    if samples is None and tokens is None and flops is None:
        samples = DEFAULT_SAMPLES
    budget = Budget(samples=samples, tokens=tokens, flops=flops)
    result = solve_question(question, strategy=strategy, budget=budget, seed=seed)
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


if __name__ == "__main__":
    app()
