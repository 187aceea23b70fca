"""Test-time fine-tuning on the built-in task: no TTT vs nearest-neighbour TTT vs SIFT TTT.

For every test problem (``make_split("test")``, ``--n-per-level`` per level), each method selects
examples from a corpus of solved train-split problems (``--corpus-per-level`` per level, or
``--corpus FILE``), fine-tunes the embedded policy one gradient step per example, answers, and
restores the weights:

  none            no fine-tuning (the baseline)
  nn              the k nearest neighbours (cosine of the policy's mean-pooled hidden states)
  random          k examples drawn uniformly (seeded per prompt): the control for what selection adds
  sift            SIFT's greedy posterior-variance selection, k examples
  sift-adaptive   SIFT, stopping once the posterior variance is <= --threshold

each answered greedily, and ``none`` / ``sift`` also with ``--search`` (majority vote by default)
of ``--samples`` samples. Reported per level: accuracy, mean FLOPs per problem (the strategy's
plus the fine-tuning's: prompt embedding, selection and training; the one-off corpus embedding is
listed apart) and mean gradient steps.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ttt.py [--n-per-level 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import asdict

import torch
from _common import environment, load_policy, markdown_table, set_threads, write_json

from ponder.backends.embedded import EmbeddedGenerator
from ponder.strategies.budget import Budget
from ponder.strategies.registry import NEEDS_VERIFIER, make_strategy
from ponder.tasks.arithmetic import LEVELS, make_split
from ponder.training.ttt import TestTimeTrainer, TTTConfig, load_corpus, task_corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="policy weights (default: the shipped policy)")
    ap.add_argument("--n-per-level", type=int, default=40, help="test problems per level")
    ap.add_argument("--levels", type=int, nargs="*", default=None, help="levels (default: all)")
    ap.add_argument("--corpus", help="JSONL corpus of solved problems (default: the train split)")
    ap.add_argument(
        "--corpus-per-level", type=int, default=200, help="train problems per level in the corpus"
    )
    ap.add_argument("--k", type=int, default=8, help="examples selected (= gradient steps) per problem")
    ap.add_argument("--lam", type=float, default=0.1, help="SIFT regularisation")
    ap.add_argument(
        "--threshold", type=float, default=0.1, help="posterior variance that stops sift-adaptive"
    )
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--mode", choices=["full", "lora"], default="full")
    ap.add_argument("--embedder", choices=["policy", "minilm"], default="policy")
    ap.add_argument("--search", default="majority", help="strategy combined with TTT (registry name)")
    ap.add_argument("--samples", type=int, default=8, help="samples for --search")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write everything measured here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    source = load_policy(args.weights, random_init=False, seed=args.seed)
    if source.fallback_note:
        print(f"> note: {source.fallback_note}\n")
    generator = EmbeddedGenerator(source.model)
    verifier = None
    if args.search in NEEDS_VERIFIER:
        from ponder.verifiers.embedded import EmbeddedVerifier

        verifier = EmbeddedVerifier.load()
    levels = tuple(args.levels) if args.levels else tuple(sorted(LEVELS))
    corpus = (
        load_corpus(args.corpus)
        if args.corpus
        else task_corpus("train", args.corpus_per_level, seed=args.seed)
    )
    problems = make_split("test", levels=levels, n_per_level=args.n_per_level, seed=args.seed)
    embedder = None
    if args.embedder == "minilm":
        from ponder.training.ttt_hf import sentence_embedder

        embedder = sentence_embedder()

    base = dict(k=args.k, lam=args.lam, lr=args.lr, optimizer=args.optimizer, mode=args.mode, seed=args.seed)
    configs = {
        "none": TTTConfig(select="none", **base),
        "nn": TTTConfig(select="nn", **base),
        "random": TTTConfig(select="random", **base),
        "sift": TTTConfig(select="sift", **base),
        "sift-adaptive": TTTConfig(select="sift", threshold=args.threshold, **base),
    }
    greedy = make_strategy("greedy")
    search = make_strategy(args.search)
    methods = [
        ("none", "greedy", greedy, Budget(samples=1)),
        ("nn", "greedy", greedy, Budget(samples=1)),
        ("random", "greedy", greedy, Budget(samples=1)),
        ("sift", "greedy", greedy, Budget(samples=1)),
        ("sift-adaptive", "greedy", greedy, Budget(samples=1)),
        ("none", f"{args.search}@{args.samples}", search, Budget(samples=args.samples)),
        ("sift", f"{args.search}@{args.samples}", search, Budget(samples=args.samples)),
    ]
    start = time.perf_counter()
    trainers = {}
    for name, cfg in configs.items():
        trainers[name] = TestTimeTrainer(generator, corpus, cfg, embedder=embedder)
    rows: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for i, problem in enumerate(problems):
        for select, label, strategy, budget in methods:
            out = trainers[select].solve(problem.prompt, strategy, budget, verifier, seed=args.seed + i)
            rows[(select, label)][problem.level].append(
                {
                    "correct": out.answer == problem.answer,
                    "flops": out.total_flops,
                    "ttt_flops": out.compute.total_flops,
                    "steps": out.compute.train_steps,
                    "variance": out.selection.final_variance,
                }
            )
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(problems)} problems, {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    headers = ["selection", "strategy"] + [f"L{lv}" for lv in levels] + ["all"]
    acc_rows, flop_rows, step_rows = [], [], []
    for (select, label), per in rows.items():
        everything = [r for lv in levels for r in per[lv]]
        acc_rows.append(
            [select, label]
            + [f"{100 * mean([r['correct'] for r in per[lv]]):.1f}%" for lv in levels]
            + [f"{100 * mean([r['correct'] for r in everything]):.1f}%"]
        )
        flop_rows.append(
            [select, label]
            + [f"{mean([r['flops'] for r in per[lv]]) / 1e9:.3f}" for lv in levels]
            + [f"{mean([r['flops'] for r in everything]) / 1e9:.3f}"]
        )
        step_rows.append(
            [select, label]
            + [f"{mean([r['steps'] for r in per[lv]]):.1f}" for lv in levels]
            + [f"{mean([r['steps'] for r in everything]):.1f}"]
        )

    print(
        f"- model: {source.description}; {source.model.num_params():,} parameters; "
        f"torch {torch.__version__}, "
        f"{args.threads} thread(s)"
    )
    print(
        f"- test split, {args.n_per_level} problems per level, seed {args.seed}; corpus: "
        f"{args.corpus or f'train split, {args.corpus_per_level} per level'} ({len(corpus)} examples); "
        f"embedder: {trainers['sift'].embedder.name}"
    )
    print(
        f"- k={args.k}, lam={args.lam}, {args.optimizer} lr={args.lr}, mode={args.mode}, "
        "one gradient step per example; "
        f"sift-adaptive stops at posterior variance <= {args.threshold}"
    )
    print(
        f"- one-off corpus embedding: {trainers['sift'].corpus_embed_flops / 1e9:.3f} GFLOPs; "
        f"wall time {wall:.0f} s\n"
    )
    print("### Accuracy\n")
    print(markdown_table(headers, acc_rows))
    print("\n### Mean GFLOPs per problem (strategy + fine-tuning)\n")
    print(markdown_table(headers, flop_rows))
    print("\n### Mean gradient steps per problem\n")
    print(markdown_table(headers, step_rows))
    if args.json:
        write_json(
            args.json,
            {
                "settings": vars(args),
                "model": {"description": source.description, "fallback_note": source.fallback_note},
                "ttt_config": {k: asdict(v) for k, v in configs.items()},
                "environment": environment(),
                "wall_s": wall,
                "results": {
                    f"{s}/{label}": {lv: per[lv] for lv in levels} for (s, label), per in rows.items()
                },
            },
        )


if __name__ == "__main__":
    main()
