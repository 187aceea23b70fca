"""Step labels for the verifier from Monte-Carlo rollouts of the policy (as in Math-Shepherd).

For each train problem the policy samples solutions; after every step of a sample, ``k`` more
completions are rolled out from that prefix. By default a step's label is Math-Shepherd's "hard
estimate": 1 when any rollout reaches the right answer, else 0 (``label="soft"`` uses the fraction
of winning rollouts instead; both are kept in the file). Either way the label never looks at the
step itself, so the verifier trained on it is learned and imperfect, like real PRMs. The hard
estimate separates wrong steps from right ones on hard problems far better than the fraction,
which mostly measures how hard the rest of the problem is. The outcome label of a sample is
whether its own final answer is right.

Labels are appended to a JSONL file, one line per problem holding all its samples, so a line cut
short by a kill is simply relabelled and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ponder.backends.base import SamplingParams
from ponder.backends.embedded import EmbeddedGenerator
from ponder.errors import ConfigError
from ponder.tasks.answers import check_steps, is_correct
from ponder.tasks.arithmetic import ANSWER_PREFIX, LEVELS, STEP_DELIMITER, Problem, draw_problem, split_of
from ponder.training.checkpoint import progress_bar

LABEL_KINDS = ("hard", "soft", "checked")


@dataclass
class RolloutConfig:
    out_file: str = "runs/verifier/labels.jsonl"
    n_problems: int = 800
    samples_per_problem: int = 4
    rollouts_per_step: int = 4
    temperature: float = 1.0
    problems_per_batch: int = 16
    seed: int = 0
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.5, 1.5, 2.0)
    # "hard": any rollout wins; "soft": fraction of rollouts that win; "checked": the task's step
    # checker annotates each step (as human annotators do for PRM800K), with no rollouts.
    label: str = "hard"
    # "checked" labels for a policy that may apply the operations in any order (embedded+orders).
    any_order: bool = False

    def __post_init__(self) -> None:
        if self.label not in LABEL_KINDS:
            raise ConfigError(f"rollout label must be one of {list(LABEL_KINDS)}, got {self.label!r}")


def solution_steps(solution: str) -> list[str]:
    """Step lines of a sampled solution (the answer line counts as the last step)."""
    return [line for line in solution.split(STEP_DELIMITER) if line.strip()]


def prefix_after(steps: list[str], i: int) -> str:
    """The solution text after step ``i`` (0-based), ending in the step delimiter."""
    return STEP_DELIMITER.join(steps[: i + 1]) + STEP_DELIMITER


def label_problems(
    generator: EmbeddedGenerator, problems: list[Problem], cfg: RolloutConfig, seed: int
) -> list[dict]:
    """Sample solutions for ``problems`` and label every step (by rollouts, or by the checker)."""
    samples = generator.generate(
        [p.prompt for p in problems],
        SamplingParams(n=cfg.samples_per_problem, temperature=cfg.temperature, seed=seed),
    )
    records: list[dict] = []
    rollout_prompts: list[str] = []
    owners: list[tuple[int, int]] = []  # (record index, step index)
    for problem, group in zip(problems, samples):
        for completion in group:
            steps = solution_steps(completion.text)
            record = {
                "question": problem.question,
                "prompt": problem.prompt,
                "level": problem.level,
                "answer": problem.answer,
                "solution": completion.text,
                "steps": steps,
                "step_labels": [None] * len(steps),
                "step_values": [None] * len(steps),
                "outcome": float(is_correct(problem, completion.text)),
            }
            if cfg.label == "checked":
                # "Still on track" after step i: every equation so far is the right one.
                verdicts = check_steps(problem, completion.text, cfg.any_order)
                on_track = [all(verdicts[: i + 1]) for i in range(len(verdicts))]
                for i, step in enumerate(steps):
                    last = step.startswith(ANSWER_PREFIX) or i == len(steps) - 1
                    label = record["outcome"] if last or i >= len(on_track) else float(on_track[i])
                    record["step_labels"][i] = record["step_values"][i] = label
                records.append(record)
                continue
            for i, step in enumerate(steps):
                if step.startswith(ANSWER_PREFIX) or i == len(steps) - 1:
                    # The final line has no continuation: its label is the outcome itself.
                    record["step_labels"][i] = record["step_values"][i] = record["outcome"]
                else:
                    rollout_prompts.append(problem.prompt + prefix_after(steps, i))
                    owners.append((len(records), i))
            records.append(record)
    if rollout_prompts:
        rollouts = generator.generate(
            rollout_prompts,
            SamplingParams(n=cfg.rollouts_per_step, temperature=cfg.temperature, seed=seed + 1),
        )
        by_question = {p.question: p for p in problems}
        for (rec_i, step_i), group in zip(owners, rollouts):
            problem = by_question[records[rec_i]["question"]]
            wins = sum(is_correct(problem, c.text) for c in group)
            value = wins / len(group)
            records[rec_i]["step_values"][step_i] = value
            records[rec_i]["step_labels"][step_i] = value if cfg.label == "soft" else float(wins > 0)
    return records


def generate_labels(generator: EmbeddedGenerator, cfg: RolloutConfig, log=print) -> Path:
    """Label ``cfg.n_problems`` train problems, resuming from what ``cfg.out_file`` already holds."""
    out = Path(cfg.out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_questions: set[str] = set()
    if out.exists():
        text = out.read_text()
        if text and not text.endswith("\n"):
            # A kill cut the last line short: drop it so appends start on a fresh line.
            text = text[: text.rfind("\n") + 1]
            out.write_text(text)
        for line in text.splitlines():
            try:
                done_questions.add(json.loads(line)["question"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a damaged line: its problem is labelled again
    rng = random.Random(f"rollouts/{cfg.seed}")
    levels = sorted(LEVELS)
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < cfg.n_problems:
        p = draw_problem(rng, rng.choices(levels, weights=cfg.level_weights)[0])
        if split_of(p.question) == "train" and p.question not in seen:
            seen.add(p.question)
            problems.append(p)
    todo = [p for p in problems if p.question not in done_questions]
    if len(todo) < len(problems):
        log(f"rollout labels: resuming, {len(problems) - len(todo)} of {len(problems)} problems done")
    t0 = time.perf_counter()
    with progress_bar("rollout labels", len(problems), completed=len(problems) - len(todo)) as (bar, task):
        for b in range(0, len(todo), cfg.problems_per_batch):
            chunk = todo[b : b + cfg.problems_per_batch]
            records = label_problems(generator, chunk, cfg, seed=cfg.seed * 1_000_003 + b)
            by_question: dict[str, list[dict]] = {}
            for r in records:
                by_question.setdefault(r["question"], []).append(r)
            with out.open("a") as f:
                for question, samples in by_question.items():
                    f.write(json.dumps({"question": question, "samples": samples}) + "\n")
                f.flush()
            bar.update(task, advance=len(chunk))
    log(f"rollout labels: {len(todo)} problems in {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def read_labels(path: str | Path) -> list[dict]:
    """All labelled samples (one dict per sample) in a labels file; damaged lines are skipped."""
    records = []
    with Path(path).open() as f:
        for line in f:
            try:
                records.extend(json.loads(line)["samples"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records
