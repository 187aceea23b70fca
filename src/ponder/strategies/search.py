"""Shared machinery of step-level search (beam search, lookahead, DVTS).

A path is the solution text grown so far, one step (line) per round. Each round continues paths
with ``stop_at_step`` generation from ``prompt + path`` (the generator shares each prompt's KV cache
among its samples), scores the grown paths with the verifier (causal, so a partial solution's step
scores are those of any solution it starts), and keeps some. A path ends when its last line is an
answer line ("answered"; with a dataset's own answer format, when the model ends a text whose final
answer can be read), or dies when the model stops without one, a step runs past
``max_step_tokens``, or it no longer fits a model's context.

Every round is sized before it starts so that its worst case (every step ``max_step_tokens`` long,
every rollout step too, all of them scored) fits the budget; a round that does not fit at full
width is narrowed, and the search stops when not one candidate fits.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ponder.backends.base import SamplingParams
from ponder.strategies.base import Candidate
from ponder.strategies.budget import Budget, BudgetTracker, Cost, derive_seed
from ponder.strategies.sampling import check_aggregation, check_param, score_value
from ponder.tasks.answers import custom_answers, extract_answer
from ponder.tasks.arithmetic import ANSWER_PREFIX, STEP_DELIMITER

# Step candidates per round when neither the strategy's ``n`` nor the budget's samples say.
DEFAULT_WIDTH = 16


@dataclass(eq=False)  # identity, not text, tells paths apart (two subtrees may grow the same text)
class Path:
    text: str
    status: str = "open"  # "open" (can grow), "answered" (ends in an answer line) or "dead"
    answer: int | None = None
    score: float | None = None

    def candidate(self) -> Candidate:
        return Candidate(text=self.text, answer=self.answer, score=self.score, partial=self.status == "open")


def classify(text: str, finish_reason: str) -> tuple[str, int | None]:
    """Status and answer of a path whose last step ended with ``finish_reason``."""
    if finish_reason == "length":
        return "dead", None  # the line never ended: a runaway step, or an answer that may be cut short
    if finish_reason == "eos" and custom_answers():
        # Other answer formats (GSM8K's "#### N", MATH's \boxed{}) have no answer line: a path the
        # model ended is answered when its final answer can be read.
        answer = extract_answer(text)
        return ("answered", answer) if answer is not None else ("dead", None)
    lines = [line for line in text.split(STEP_DELIMITER) if line.strip()]
    if lines and lines[-1].strip().startswith(ANSWER_PREFIX):
        answer = extract_answer(text)
        return ("answered", answer) if answer is not None else ("dead", None)
    return ("open", None) if finish_reason == "stop" else ("dead", None)


def distribute(k: int, n_beams: int) -> list[int]:
    """``k`` candidates over ``n_beams`` beams ranked best first; the best get the remainder."""
    q, r = divmod(k, n_beams)
    return [q + (1 if i < r else 0) for i in range(n_beams)]


def dedupe(paths: list[Path]) -> list[Path]:
    """First occurrence of each text: a duplicate is the same path, not worth scoring twice."""
    seen: set[str] = set()
    out = []
    for p in paths:
        if p.text not in seen:
            seen.add(p.text)
            out.append(p)
    return out


@dataclass
class StepSearch:
    """Parameters every step-level search shares (the strategies subclass it)."""

    n: int | None = None  # N, step candidates per round; default: the budget's samples, else 16
    max_rounds: int = 16  # steps a path may grow (the built-in task needs at most 9)
    max_step_tokens: int = 32  # one step's token limit (built-in task: <= 18); a longer line dies
    max_new_tokens: int = 160  # for completing the best open path when the search ends unanswered
    temperature: float = 1.0
    aggregation: str = "last"  # step scores -> one: last / min / prod / mean, or "orm"
    weighted: bool = False  # final answer by summed score per answer instead of the best path
    name: str = "step_search"

    def __post_init__(self) -> None:
        for field_name in ("max_rounds", "max_step_tokens", "max_new_tokens"):
            value = getattr(self, field_name)
            check_param(value >= 1, self.name, f"{field_name} must be >= 1, got {value}")
        check_param(self.n is None or self.n >= 1, self.name, f"n must be >= 1, got {self.n}")
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_aggregation(self.name, self.aggregation)

    def width(self, budget: Budget) -> int:
        """N: the strategy's own ``n``, capped by the budget's samples."""
        if self.n is not None:
            return self.n if budget.samples is None else min(self.n, budget.samples)
        return budget.samples if budget.samples is not None else DEFAULT_WIDTH


def round_cost(
    tracker: BudgetTracker,
    prompt: str,
    beams: list[Path],
    counts: list[int],
    step_tokens: int,
    new_samples: int,
    rollout_steps: int = 0,
) -> Cost:
    """Worst case of one round: ``counts[i]`` next steps of ``beams[i]``, each (if ``rollout_steps``)
    rolled out that many greedy steps further, and every candidate scored."""
    policy = verifier = 0
    for beam, count in zip(beams, counts):
        if count == 0:
            continue
        base = tracker.prompt_tokens(prompt + beam.text)
        policy += base + count * step_tokens
        # Rollout step j of a candidate re-reads its prompt, grown by the candidate step and j-1
        # rollout steps, and emits one more step.
        policy += count * sum(base + j * step_tokens + step_tokens for j in range(1, rollout_steps + 1))
        verifier += count * (tracker.verifier_tokens(prompt, beam.text) + (1 + rollout_steps) * step_tokens)
    return tracker.policy_cost(policy, new_samples) + tracker.verifier_cost(verifier)


def new_samples(tracker: BudgetTracker, k: int) -> int:
    """Samples a round of ``k`` candidates adds: N counts the widest round (later rounds re-use the
    first round's sample slots)."""
    return max(0, k - tracker.compute.samples)


def expand(
    tracker: BudgetTracker,
    prompt: str,
    beams: list[Path],
    counts: list[int],
    search: StepSearch,
    seed: int,
) -> list[list[Path]]:
    """``counts[i]`` sampled next steps for each ``beams[i]``: one generate call per distinct count
    (a call's ``n`` is the same for all its prompts), each prompt once."""
    k = sum(counts)
    charge = new_samples(tracker, k)
    children: list[list[Path]] = [[] for _ in beams]
    by_count: dict[int, list[int]] = defaultdict(list)
    for i, count in enumerate(counts):
        if count:
            by_count[count].append(i)
    for j, (count, idxs) in enumerate(sorted(by_count.items(), reverse=True)):
        params = SamplingParams(
            n=count,
            temperature=search.temperature,
            max_new_tokens=search.max_step_tokens,
            stop_at_step=True,
            seed=derive_seed(seed, j),
        )
        groups = tracker.generate(
            [prompt + beams[i].text for i in idxs], params, samples=charge if j == 0 else 0
        )
        for i, group in zip(idxs, groups):
            for completion in group:
                text = beams[i].text + completion.text
                status, answer = classify(text, completion.finish_reason)
                children[i].append(Path(text, status, answer))
    return children


def retire_unfittable(tracker: BudgetTracker, prompt: str, paths: list[Path]) -> None:
    """Kill paths a model's context cannot hold: unscorable ones, and open ones with no room to grow."""
    v_ctx = getattr(tracker.verifier, "context_length", None)
    g_ctx = getattr(tracker.generator, "context_length", None)
    for p in paths:
        if p.status == "dead":
            continue
        if v_ctx is not None and tracker.verifier_tokens(prompt, p.text) > v_ctx:
            p.status, p.answer = "dead", None
        elif p.status == "open" and g_ctx is not None and tracker.prompt_tokens(prompt + p.text) >= g_ctx:
            p.status = "dead"


def score_paths(tracker: BudgetTracker, prompt: str, paths: list[Path], aggregation: str) -> None:
    """Score the live paths in one verifier call (dead ones cannot win; scoring them is waste)."""
    todo = [p for p in paths if p.status != "dead"]
    scores = tracker.score(prompt, [p.text for p in todo])
    for p, s in zip(todo, scores):
        p.score = score_value(s, aggregation)


def ranked(paths: list[Path]) -> list[Path]:
    """Best score first; ties keep generation order (so a seed fixes the choice)."""
    return sorted(paths, key=lambda p: -(p.score if p.score is not None else -1.0))


def complete_greedily(
    tracker: BudgetTracker, prompt: str, path: Path, search: StepSearch, seed: int
) -> Path | None:
    """Finish an open path at temperature 0 with what the budget has left (``max_new_tokens``
    capped to fit), so that a search cut short by its budget or rounds still answers."""
    room = search.max_new_tokens
    g_ctx = getattr(tracker.generator, "context_length", None)
    if g_ctx is not None:
        room = min(room, g_ctx - tracker.prompt_tokens(prompt + path.text))
    full = prompt + path.text
    cap = tracker.largest(lambda m: tracker.generation_cost([full], 1, m, samples=0), room)
    if cap < 1:
        return None
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cap, seed=seed)
    completion = tracker.generate([full], params, samples=0)[0][0]
    text = path.text + completion.text
    status, answer = classify(text, completion.finish_reason)
    done = Path(text, status, answer)
    # Scored when the budget and the verifier's context allow; unscored, it still answers.
    v_ctx = getattr(tracker.verifier, "context_length", None)
    fits_context = v_ctx is None or tracker.verifier_tokens(prompt, text) <= v_ctx
    if done.status == "answered" and fits_context and tracker.fits(tracker.scoring_cost(prompt, [text])):
        score_paths(tracker, prompt, [done], search.aggregation)
    return done


def round_summary(r: int, k: int, n_beams: int, cands: list[Path], kept: list[Path]) -> str:
    answered = sum(p.status == "answered" for p in cands)
    dead = sum(p.status == "dead" for p in cands)
    best = f"{kept[0].score:.3f}" if kept and kept[0].score is not None else "-"
    return (
        f"round {r + 1}: {k} candidates from {n_beams} path(s), {len(cands)} distinct; "
        f"{answered} answered, {dead} dead; kept {len(kept)} (best {best})"
    )
