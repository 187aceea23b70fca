"""Measure the embedded models on the test split and write their model card."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.eval.metrics import greedy_correct, pass_at_k, per_level
from ponder.strategies.base import Candidate
from ponder.strategies.best_of_n import pick_by_score
from ponder.tasks.answers import check_steps, extract_answer, is_correct
from ponder.tasks.arithmetic import LEVELS, make_split
from ponder.training.checkpoint import progress_bar
from ponder.verifiers.base import Verifier
from ponder.verifiers.embedded import EmbeddedVerifier


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve (probability a random positive outscores a random negative)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # Average ranks over ties.
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class CardMetrics:
    greedy: dict[int, float] = field(default_factory=dict)
    sample_pass1: dict[int, float] = field(default_factory=dict)
    pass_at_16: dict[int, float] = field(default_factory=dict)
    pass_at_64: dict[int, float] = field(default_factory=dict)
    majority_16: dict[int, float] = field(default_factory=dict)
    prm_best_of_16: dict[int, float] = field(default_factory=dict)
    prm_min_best_of_16: dict[int, float] = field(default_factory=dict)
    orm_best_of_16: dict[int, float] = field(default_factory=dict)
    prm_step_auroc: float = 0.0
    prm_step_auroc_per_level: dict[int, float] = field(default_factory=dict)
    orm_auroc: float = 0.0
    # The step checker (the default verifier), on the same samples.
    checker_best_of_16: dict[int, float] = field(default_factory=dict)
    checker_weighted_best_of_16: dict[int, float] = field(default_factory=dict)
    checker_step_auroc: float = 0.0
    checker_step_auroc_per_level: dict[int, float] = field(default_factory=dict)
    n_greedy_per_level: int = 0
    n_sampled_per_level: int = 0


def measure(
    generator: EmbeddedGenerator,
    verifier: EmbeddedVerifier,
    n_greedy_per_level: int = 200,
    n_sampled_per_level: int = 40,
    seed: int = 0,
    checker: Verifier | None = None,
) -> CardMetrics:
    """Greedy accuracy, pass@k, and verifier quality on the test split."""
    m = CardMetrics(n_greedy_per_level=n_greedy_per_level, n_sampled_per_level=n_sampled_per_level)
    test = make_split("test", n_per_level=n_greedy_per_level, seed=seed)
    m.greedy = per_level(test, [float(c) for c in greedy_correct(generator, test)])

    sampled = make_split("test", n_per_level=n_sampled_per_level, seed=seed)
    step_scores, step_truth, step_levels = [], [], []
    orm_scores, orm_truth = [], []
    rows: dict[str, list[float]] = {
        k: [] for k in ("p1", "p16", "p64", "maj", "prm", "prm_min", "orm", "chk", "chk_w")
    }
    chk_scores, chk_truth, chk_levels = [], [], []
    with progress_bar("measure models", len(sampled)) as (bar, task):
        for i, problem in enumerate(sampled):
            group = generator.generate(
                [problem.prompt], SamplingParams(n=64, temperature=1.0, seed=seed + i)
            )[0]
            correct = [is_correct(problem, c.text) for c in group]
            rows["p1"].append(sum(correct) / len(correct))
            rows["p64"].append(pass_at_k(64, sum(correct), 64))
            first16, ok16 = group[:16], correct[:16]
            rows["p16"].append(float(any(ok16)))
            votes = Counter(a for a in (extract_answer(c.text) for c in first16) if a is not None)
            rows["maj"].append(float(bool(votes) and votes.most_common(1)[0][0] == problem.answer))
            scores = verifier.score([problem.prompt] * 16, [c.text for c in first16])
            best = max(range(16), key=lambda j: scores[j].aggregate("last"))
            best_min = max(range(16), key=lambda j: scores[j].aggregate("min"))
            best_orm = max(range(16), key=lambda j: scores[j].outcome or 0.0)
            rows["prm"].append(float(ok16[best]))
            rows["prm_min"].append(float(ok16[best_min]))
            rows["orm"].append(float(ok16[best_orm]))
            if checker is not None:
                texts = [c.text for c in first16]
                checked = checker.score([problem.prompt] * 16, texts)
                pool = [Candidate(t, extract_answer(t), s.aggregate("min")) for t, s in zip(texts, checked)]
                rows["chk"].append(float(pick_by_score(pool, weighted=False) == problem.answer))
                rows["chk_w"].append(float(pick_by_score(pool, weighted=True) == problem.answer))
                for c, s, ok in zip(first16, checked, ok16):
                    chk_scores += s.step_scores
                    chk_truth += _on_track(problem, c.text, ok, len(s.step_scores))
                    chk_levels += [problem.level] * len(s.step_scores)
            for c, s, ok in zip(first16, scores, ok16):
                step_scores += s.step_scores
                step_truth += _on_track(problem, c.text, ok, len(s.step_scores))
                step_levels += [problem.level] * len(s.step_scores)
                orm_scores.append(s.outcome or 0.0)
                orm_truth.append(ok)
            bar.update(task, advance=1)
    m.sample_pass1 = per_level(sampled, rows["p1"])
    m.pass_at_16 = per_level(sampled, rows["p16"])
    m.pass_at_64 = per_level(sampled, rows["p64"])
    m.majority_16 = per_level(sampled, rows["maj"])
    m.prm_best_of_16 = per_level(sampled, rows["prm"])
    m.prm_min_best_of_16 = per_level(sampled, rows["prm_min"])
    m.orm_best_of_16 = per_level(sampled, rows["orm"])
    m.prm_step_auroc = auroc(step_scores, step_truth)
    m.prm_step_auroc_per_level = _auroc_per_level(step_scores, step_truth, step_levels)
    m.orm_auroc = auroc(orm_scores, orm_truth)
    if checker is not None:
        m.checker_best_of_16 = per_level(sampled, rows["chk"])
        m.checker_weighted_best_of_16 = per_level(sampled, rows["chk_w"])
        m.checker_step_auroc = auroc(chk_scores, chk_truth)
        m.checker_step_auroc_per_level = _auroc_per_level(chk_scores, chk_truth, chk_levels)
    return m


def measure_voting(
    generator: EmbeddedGenerator, n_greedy_per_level: int = 200, n_sampled_per_level: int = 40, seed: int = 0
) -> dict[str, dict[int, float]]:
    """Greedy accuracy, one sample's accuracy, pass@16 and majority vote of 16 per level on the test
    split, with the protocol of :func:`measure` (the same problems and seeds): for a policy that
    is used without a verifier (the order-diverse one)."""
    test = make_split("test", n_per_level=n_greedy_per_level, seed=seed)
    out = {"greedy": per_level(test, [float(c) for c in greedy_correct(generator, test)])}
    sampled = make_split("test", n_per_level=n_sampled_per_level, seed=seed)
    rows: dict[str, list[float]] = {"sample_pass1": [], "pass_at_16": [], "majority_16": []}
    with progress_bar("measure voting", len(sampled)) as (bar, task):
        for i, problem in enumerate(sampled):
            group = generator.generate(
                [problem.prompt], SamplingParams(n=64, temperature=1.0, seed=seed + i)
            )[0]
            answers = [extract_answer(c.text) for c in group]
            correct = [a == problem.answer for a in answers]
            rows["sample_pass1"].append(sum(correct) / len(correct))
            rows["pass_at_16"].append(float(any(correct[:16])))
            votes = Counter(a for a in answers[:16] if a is not None)
            rows["majority_16"].append(float(bool(votes) and votes.most_common(1)[0][0] == problem.answer))
            bar.update(task, advance=1)
    out.update({name: per_level(sampled, values) for name, values in rows.items()})
    return out


def _on_track(problem, solution: str, correct: bool, n_steps: int) -> list[bool]:
    """The truth for each of a solution's ``n_steps`` scored lines: a step is good while every step
    so far is right; the answer line (and anything after it) by whether the answer is right."""
    verdicts = check_steps(problem, solution)
    out, on_track = [], True
    for j in range(n_steps):
        on_track = on_track and (verdicts[j] if j < len(verdicts) else correct)
        out.append(on_track)
    return out


def _auroc_per_level(scores: list[float], truth: list[bool], levels: list[int]) -> dict[int, float]:
    out = {}
    for lv in sorted(LEVELS):
        idx = [k for k, x in enumerate(levels) if x == lv]
        out[lv] = auroc([scores[k] for k in idx], [truth[k] for k in idx])
    return out


def _by_level(values: dict) -> dict[int, float]:
    """Per-level values keyed by int level (JSON round trips turn the keys into strings)."""
    return {int(k): float(v) for k, v in values.items()}


def _row(name: str, values: dict) -> str:
    by_level = _by_level(values)
    cells = (f"{by_level[lv]:.1%}" if lv in by_level else "n/a" for lv in sorted(LEVELS))
    return f"| {name} | " + " | ".join(cells) + " |"


def load_card(path: Path) -> tuple[CardMetrics, dict]:
    """The metrics and training facts saved beside a model card (``card.json``)."""
    data = json.loads(Path(path).read_text())
    metrics = CardMetrics(**data["metrics"])
    for name, value in vars(metrics).items():
        if isinstance(value, dict):
            setattr(metrics, name, _by_level(value))
    return metrics, data["info"]


# Models a card lists when its info has their facts: (title, file, key of the info's entries).
OPTIONAL_MODELS = (
    ("step checker (default verifier)", "checker.safetensors", "checker"),
    ("reviser (`embedded+reviser`)", "reviser.safetensors", "reviser"),
    ("order-diverse policy (`embedded+orders`)", "policy_orders.safetensors", "orders"),
    (
        "order-diverse step checker (verifier `embedded+orders`)",
        "checker_orders.safetensors",
        "orders_checker",
    ),
)


def _model_row(title: str, file: str, info: dict, key: str) -> str:
    size = info[f"{key}_bytes"] / 1e6
    return f"| {title} | `{file}` | {info[f'{key}_params']:,} | {info[f'{key}_shape']} | {size:.2f} MB |"


def _policy_steps_text(info: dict) -> str:
    """How long the policy trained: the steps it ran, and why it stopped before the plan."""
    planned, batch = info["policy_steps"], info["policy_batch"]
    history = info.get("policy_train_history") or []
    trained = history[-1]["step"] if history else planned
    if trained >= planned:
        return f"{planned} steps of {batch}"
    why = info.get("policy_stop_reason") or "the early-stop rule on dev greedy accuracy"
    return f"{trained} steps of {batch} (of {planned} planned; stopped by {why})"


def _label_text(label: str) -> str:
    if label == "hard":
        return "a step is labelled good when any rollout reaches the right answer"
    return "the step's label is the fraction of rollouts that reach the right answer"


def write_card(path: Path, metrics: CardMetrics, info: dict) -> None:
    """The model card: sizes, how they were trained, what they score."""
    levels = sorted(LEVELS)
    header = "| | " + " | ".join(f"L{lv}" for lv in levels) + " |\n|---|" + "---|" * len(levels)
    level_lines = "\n".join(
        f"| {lv} | {s.n_ops} | 0..{s.max_value - 1} |" for lv, s in sorted(LEVELS.items())
    )
    extra_rows = "\n".join(
        _model_row(title, file, info, key) for title, file, key in OPTIONAL_MODELS if f"{key}_params" in info
    )
    extra_training = "\n".join(
        t
        for t in (_checker_training_text(info), _reviser_training_text(info), _orders_training_text(info))
        if t
    )
    text = f"""# Embedded models of ponder

Tiny transformers trained by ponder itself on its built-in chained-arithmetic task, shipped in
this folder as safetensors (fp16), loaded with no network. They exist so that every test-time
compute feature can run, be tested and be measured on a 2-core CPU.

| model | file | parameters (non-embedding) | layers x width x heads | size on disk |
|---|---|---|---|---|
{_model_row("policy", "policy.safetensors", info, "policy")}
{_model_row("verifier (PRM + ORM heads)", "verifier.safetensors", info, "verifier")}
{extra_rows}

## Task
`ponder.tasks`: chains of additions and subtractions, one checkable equation per line, numbers
written least-significant digit first and zero-padded to the level's width.

| level | operations | numbers |
|---|---|---|
{level_lines}

## Training
- Command: `{info["command"]}` (seed {info["seed"]}), on {info["cores"]} CPU cores.
- Policy: next-token loss on reference solutions of fresh train-split problems,
  {_policy_steps_text(info)}: {info["policy_seconds"] / 60:.1f} min.
- Rollout labels: the policy samples {info["samples_per_problem"]} solutions for each of
  {info["rollout_problems"]} train problems; after every step, {info["rollouts_per_step"]} rollouts
  from that prefix; {_label_text(info.get("rollout_label", "soft"))} (Math-Shepherd style, never the
  step checker): {info["rollout_seconds"] / 60:.1f} min.
- Verifier: the policy's frozen trunk, read out into the policy's surprise at every token (the
  log-prob of the token written, the entropy it came from, the worst slip so far in its line and
  in the solution), then {info.get("verifier_extra_layers", 0)} fresh transformer blocks and a
  two-logit head; cross-entropy on the rollout labels at each step end (PRM) and on the sample's
  outcome at its last token (ORM), {info["verifier_epochs"]} epochs:
  {info["verifier_seconds"] / 60:.1f} min.
{extra_training}
- Whole recipe: {info["total_seconds"] / 60:.1f} min wall time.

## Quality on the test split (held out; seed {info["seed"]})
Greedy accuracy uses {metrics.n_greedy_per_level} problems per level; the sampled rows use
{metrics.n_sampled_per_level} problems per level with 64 samples each at temperature 1.0.

{header}
{_row("policy greedy", metrics.greedy)}
{_row("policy sample (pass@1, T=1)", metrics.sample_pass1)}
{_row("pass@16", metrics.pass_at_16)}
{_row("pass@64", metrics.pass_at_64)}
{_row("majority vote of 16", metrics.majority_16)}
{_row("best-of-16 by PRM (last step)", metrics.prm_best_of_16)}
{_row("best-of-16 by PRM (min step)", metrics.prm_min_best_of_16)}
{_row("best-of-16 by ORM", metrics.orm_best_of_16)}
{_checker_rows(metrics)}
{_orders_rows(info)}
Verifier quality (the truth for a step is the step checker: every step so far is right; for the
answer line, the answer is right):
- PRM step-level AUROC: **{metrics.prm_step_auroc:.3f}** overall; per level
  {", ".join(f"L{lv} {v:.3f}" for lv, v in sorted(_by_level(metrics.prm_step_auroc_per_level).items()))}.
- ORM AUROC (right vs. wrong final answer): **{metrics.orm_auroc:.3f}**.
{_checker_auroc_text(metrics)}

## Limits
The policy only knows this task's format. The PRM is learned from noisy rollout estimates and
reads the policy's own uncertainty, so it cannot see the policy's confident mistakes. The checker
is learned too (from the policy's corrected samples, never from the answers of the problems it
judges), so it misses slips it did not learn to see: it is what search has to work against.
"""
    path.write_text(text)
    (path.parent / "card.json").write_text(json.dumps({"metrics": metrics.__dict__, "info": info}, indent=1))


def _reviser_training_text(info: dict) -> str:
    if "reviser_params" not in info:
        return ""
    return (
        "- Reviser: a copy of the policy fine-tuned on the step checker's samples, half the examples"
        " showing 1-3 of the policy's own wrong attempts (each closed by an `R:` line, the question"
        " repeated after them) before the reference solution, a quarter ending in a right attempt to"
        " keep, a quarter plain prompts with the policy's own samples as targets (Snell et al.'s"
        f" recipe), {info['reviser_steps']} steps of 64 at lr {info['reviser_lr']:g}:"
        f" {info['reviser_seconds'] / 60:.1f} min."
    )


def _orders_training_text(info: dict) -> str:
    if "orders_params" not in info:
        return ""
    where = _on_gpu(info.get("orders_device", "cpu"))
    return (
        "- Order-diverse policy: the policy's recipe and data, except that every reference solution"
        " applies the operations in a random order (they commute modulo the level's width,"
        " `ponder.tasks.arithmetic.solution_in_order`) and no early stop:"
        f" `{info['orders_command']}`, {info['orders_steps']} steps of 64{where}:"
        f" {info['orders_seconds'] / 60:.1f} min. Its samples reach the answer by many routes, so their"
        " slips scatter over many wrong answers: majority vote works with it. The step checker and the"
        " PRM learned the policy's in-order solutions and misjudge its reordered steps"
        + ("; search uses its own checker (below)." if "orders_checker_steps" in info else ".")
        + _orders_checker_text(info)
    )


def _on_gpu(device: str) -> str:
    return "" if device == "cpu" else f" on a GPU (`--device {device}`)"


def _orders_checker_text(info: dict) -> str:
    if "orders_checker_steps" not in info:
        return ""
    return (
        "\n- Order-diverse step checker: the step checker's recipe on the order-diverse policy's samples"
        f" ({info['orders_checker_sample_seconds'] / 60:.1f} min), with any unused operation a right next"
        " step (`expected_chars(any_order=True)`), started from that policy,"
        f" {info['orders_checker_steps']} steps of 64{_on_gpu(info.get('orders_checker_device', 'cpu'))}:"
        f" {info['orders_checker_seconds'] / 60:.1f} min."
        " It scores each token relative to the likeliest one there, since several operations may"
        " rightly come next."
    )


def _orders_rows(info: dict) -> str:
    quality = info.get("orders_quality")
    if not quality:
        return ""
    names = {
        "greedy": "order-diverse policy greedy",
        "sample_pass1": "order-diverse sample (pass@1, T=1)",
        "pass_at_16": "order-diverse pass@16",
        "majority_16": "order-diverse majority vote of 16",
    }
    return "\n".join(_row(title, quality[key]) for key, title in names.items() if key in quality) + "\n"


def _checker_training_text(info: dict) -> str:
    if "checker_params" not in info:
        return ""
    return (
        f"- Step checker: the policy samples {info['checker_samples_per_problem']} solutions for each"
        f" of {info['checker_problems']} train problems ({info['checker_sample_seconds'] / 60:.1f} min);"
        " a copy of the policy is fine-tuned on them with every character's target replaced by what"
        " a careful solver writes there given the text so far (`ponder.tasks.answers.expected_chars`),"
        f" {info['checker_steps']} steps of 64: {info['checker_seconds'] / 60:.1f} min. A step's score"
        " is the lowest probability the checker gives any token so far."
    )


def _checker_rows(metrics: CardMetrics) -> str:
    if not metrics.checker_best_of_16:
        return ""
    return "\n".join(
        [
            _row("best-of-16 by the step checker", metrics.checker_best_of_16),
            _row("weighted best-of-16 by the step checker", metrics.checker_weighted_best_of_16),
        ]
    )


def _checker_auroc_text(metrics: CardMetrics) -> str:
    if not metrics.checker_best_of_16:
        return ""
    per_level = _by_level(metrics.checker_step_auroc_per_level)
    return (
        f"- Step checker step-level AUROC: **{metrics.checker_step_auroc:.3f}** overall; per level "
        + ", ".join(f"L{lv} {v:.3f}" for lv, v in sorted(per_level.items()))
        + "."
    )
