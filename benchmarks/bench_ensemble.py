"""Weak-verifier ensembles on the built-in task: selection accuracy per level, ensemble vs each
single verifier vs majority vote.

For every test problem (``--n-per-level`` per level) the embedded policy draws ``--samples``
solutions (T=1). Each member verifier scores every solution:

  prm-last     the embedded PRM, last step score
  prm-min      the embedded PRM, lowest step score
  orm          the embedded verifier's outcome head
  likelihood   the policy's own geometric-mean token probability (the policy as its judge)
  agreement    the share of the problem's samples that agree with the solution's answer

The ensemble (``ponder.verifiers.ensemble``) binarises each member at the median of its scores
(``--quantile``; agreement votes yes above one half),
fits a Dawid-Skene label model to the votes of all solutions of all problems **without labels**,
and scores each solution by P(correct | votes). The label model assumes members err independently,
so the main ensemble (``--members``, default prm-min, likelihood, agreement) takes one view per
underlying model; "ensemble (all 5)" adds the PRM's other readings (last step, outcome head), which
share its network, to show what correlated members do. Selection accuracy is the share of problems whose
selected answer is right: best-of-N by each member, by the ensemble (and its answer-weighted
variant), majority vote, and pass@N (any sample right) as the ceiling. A second table compares
each member's accuracy as estimated without labels with its true accuracy (at its threshold).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ensemble.py [--n-per-level 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict

import numpy as np
import torch
from _common import environment, load_policy, markdown_table, set_threads, write_json

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.tasks.answers import extract_answer
from ponder.tasks.arithmetic import LEVELS, make_split
from ponder.verifiers.embedded import EmbeddedVerifier
from ponder.verifiers.ensemble import AgreementVerifier, EnsembleVerifier, Member
from ponder.verifiers.likelihood import PolicyLikelihoodVerifier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="policy weights (default: the shipped policy)")
    ap.add_argument("--verifier-weights", help="verifier weights (default: the shipped verifier)")
    ap.add_argument("--n-per-level", type=int, default=100, help="test problems per level")
    ap.add_argument("--levels", type=int, nargs="*", default=None)
    ap.add_argument("--samples", type=int, default=16, help="solutions per problem (N)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quantile", type=float, default=0.5, help="members vote yes at or above this quantile")
    ap.add_argument(
        "--members",
        default="prm-min,likelihood,agreement",
        help="members of the main ensemble, comma-separated",
    )
    ap.add_argument("--json", help="write everything measured here")
    return ap.parse_args(argv)


def pick(answers: list[int | None], scores: np.ndarray, weighted: bool) -> int | None:
    """Best-of-N (or the answer with the largest summed score); unanswered samples never win."""
    idx = [i for i, a in enumerate(answers) if a is not None]
    if not idx:
        return None
    if weighted:
        totals: dict[int, float] = defaultdict(float)
        for i in idx:
            totals[answers[i]] += float(scores[i])  # type: ignore[index]
        return max(totals, key=totals.__getitem__)
    return answers[max(idx, key=lambda i: scores[i])]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    source = load_policy(args.weights, random_init=False, seed=args.seed)
    if source.fallback_note:
        print(f"> note: {source.fallback_note}\n")
    generator = EmbeddedGenerator(source.model)
    prm = EmbeddedVerifier.load(args.verifier_weights)
    members = [
        Member("prm-last", prm, "last"),
        Member("prm-min", prm, "min"),
        Member("orm", prm, "orm"),
        Member("likelihood", PolicyLikelihoodVerifier(source.model), "orm"),
        Member("agreement", AgreementVerifier(), "last", threshold=0.5),
    ]
    all_members = EnsembleVerifier(members, quantile=args.quantile)
    chosen = [j for j, m in enumerate(members) if m.name in args.members.split(",")]
    if len(chosen) < 3:
        raise SystemExit(f"--members needs at least 3 of {[m.name for m in members]}, got {args.members!r}")
    ensemble = EnsembleVerifier([members[j] for j in chosen], quantile=args.quantile)
    levels = tuple(args.levels) if args.levels else tuple(sorted(LEVELS))
    problems = make_split("test", levels=levels, n_per_level=args.n_per_level, seed=args.seed)

    start = time.perf_counter()
    texts: list[list[str]] = []
    for i in range(0, len(problems), 8):
        chunk = problems[i : i + 8]
        params = SamplingParams(n=args.samples, temperature=args.temperature, seed=args.seed + i)
        texts += [[c.text for c in group] for group in generator.generate([p.prompt for p in chunk], params)]
    gen_wall = time.perf_counter() - start
    # Member scores: one call per problem, so agreement sees exactly that problem's samples.
    member_scores = [all_members.member_scores([p.prompt] * len(t), t)[0] for p, t in zip(problems, texts)]
    answers = [[extract_answer(s) for s in t] for t in texts]
    correct = [np.array([a == p.answer for a in ans]) for p, ans in zip(problems, answers)]
    everything = np.concatenate(member_scores)
    fit = ensemble.fit_scores(everything[:, chosen])  # no labels
    all_members.fit_scores(everything)
    combined = [ensemble.combine(s[:, chosen]) for s in member_scores]
    combined_all = [all_members.combine(s) for s in member_scores]
    wall = time.perf_counter() - start

    methods: dict[str, list[bool]] = defaultdict(list)
    for p, ans, ms, comb, comb_all, ok in zip(
        problems, answers, member_scores, combined, combined_all, correct
    ):
        votes = Counter(a for a in ans if a is not None)
        methods["majority vote"].append(bool(votes) and votes.most_common(1)[0][0] == p.answer)
        for j, m in enumerate(members):
            methods[f"best-of-N: {m.name}"].append(pick(ans, ms[:, j], False) == p.answer)
        methods["best-of-N: ensemble"].append(pick(ans, comb, False) == p.answer)
        methods["weighted: ensemble"].append(pick(ans, comb, True) == p.answer)
        methods["best-of-N: ensemble (all 5)"].append(pick(ans, comb_all, False) == p.answer)
        methods["pass@N (ceiling)"].append(bool(ok.any()))

    headers = ["selection"] + [f"L{lv}" for lv in levels] + ["all"]
    level_of = np.array([p.level for p in problems])
    rows = []
    for name, hits in methods.items():
        hits_arr = np.array(hits, dtype=float)
        rows.append(
            [name]
            + [f"{100 * hits_arr[level_of == lv].mean():.1f}%" for lv in levels]
            + [f"{100 * hits_arr.mean():.1f}%"]
        )
    labels = np.concatenate(correct)
    votes = ensemble.votes(everything[:, chosen], fit.thresholds)
    lm = fit.label_model
    member_rows = []
    for j, m in enumerate(ensemble.members):
        true_acc = float((votes[:, j] == labels).mean())
        member_rows.append(
            [
                m.name,
                f"{fit.thresholds[j]:.3f}",
                f"{lm.accuracy[j]:.3f}",
                f"{true_acc:.3f}",
                f"{lm.weights[j]:.2f}",
            ]
        )
    ens_true = float(((ensemble.combine(everything[:, chosen]) >= 0.5) == labels).mean())

    print(
        f"- model: {source.description}; verifier: {args.verifier_weights or 'shipped'}; torch "
        f"{torch.__version__}, {args.threads} thread(s)"
    )
    print(
        f"- test split, {args.n_per_level} problems per level, N={args.samples} samples "
        f"at T={args.temperature}, "
        f"seed {args.seed}; {len(labels)} solutions, {100 * labels.mean():.1f}% right"
    )
    print(
        f"- label model fitted on all solutions without labels: class prior {lm.prior:.3f} (true "
        f"{labels.mean():.3f}), {lm.iterations} EM iterations; wall {wall:.0f} s "
        f"(sampling {gen_wall:.0f} s)\n"
    )
    print("### Selection accuracy\n")
    print(markdown_table(headers, rows))
    print("\n### Main ensemble's members: accuracy estimated without labels vs true (per solution)\n")
    print(
        markdown_table(["member", "threshold", "estimated acc", "true acc", "weight (log-odds)"], member_rows)
    )
    print(f"\nEnsemble vote (posterior >= 0.5) per solution: true accuracy {ens_true:.3f}.")
    if args.json:
        write_json(
            args.json,
            {
                "settings": vars(args),
                "model": {"description": source.description, "fallback_note": source.fallback_note},
                "environment": environment(),
                "wall_s": wall,
                "selection": {k: [bool(x) for x in v] for k, v in methods.items()},
                "levels": [p.level for p in problems],
                "members": [m.name for m in ensemble.members],
                "thresholds": fit.thresholds.tolist(),
                "label_model": {
                    "prior": lm.prior,
                    "sensitivity": lm.sensitivity.tolist(),
                    "specificity": lm.specificity.tolist(),
                },
                "member_true_accuracy": [float((votes[:, j] == labels).mean()) for j in range(len(chosen))],
            },
        )


if __name__ == "__main__":
    main()
