"""Sequential revision, and its mix with parallel sampling (Snell et al. 2024, section 6).

The model sees its earlier attempts and tries again. ``chains`` independent chains each make
``revisions`` attempts, so N = chains x revisions samples: attempt 1 of every chain is an ordinary
sample of the prompt; attempt ``j + 1`` of a chain is sampled from ``prompt_builder(prompt,
attempts)``, the prompt followed by that chain's last attempts (at most ``context_attempts`` of them,
fewer when the prompt and a full new attempt would not fit the generator's context: the oldest go
first). The built-in task's builder is :func:`ponder.tasks.arithmetic.revision_prompt` (each attempt
followed by an ``R:`` line, then the question again); a chat backend can pass its own template.
(With a backend that continues a partial answer, ``generate_continuations``, the budget tracker
sends a prompt that starts with the question as a continuation of it: a chat template should
return a new question that does not begin with the original prompt, so that it goes out as a
fresh user turn.)

Every attempt is scored by the verifier against the *original* prompt (a revision is judged as a
solution to the question, not to the revision prompt). A chain's answer (``within``) is its
highest-scoring attempt (``best``, the default), or its last attempt (``last``: trust the
revisions, as Snell et al.'s per-step accuracy does); across chains (``selection``):

- ``weighted`` (default): the answer whose chain-best attempts' scores sum highest, Snell et al.'s
  choice (verifier-weighted voting across chains);
- ``majority``: the most common chain-best answer (ties to the one seen first);
- ``best``: the single highest-scoring chain-best attempt.

Sizing: ``chains`` and ``revisions`` when both are given; one of them and N (the budget's samples,
else 16) gives the other as ``N // given``; neither gives ``revisions = round(sqrt(N * ratio))``
(``ratio`` = revisions per chain / chains: 1 balances them, large favours sequential revision) and
``chains = N // revisions``. Round ``j`` makes attempt ``j`` of every chain in one generate call;
a round whose worst case (every attempt at ``max_new_tokens``, scored) does not fit the budget is
narrowed to the chains that fit, in order, and the run stops when none does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.backends.base import Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies.base import Candidate, StrategyResult
from ponder.strategies.best_of_n import pick_by_score
from ponder.strategies.budget import MAX_SAMPLES, Budget, BudgetTracker, Cost, derive_seed
from ponder.strategies.majority import vote
from ponder.strategies.sampling import (
    check_aggregation,
    check_param,
    require_one_sample,
    sample_cost,
    score_candidates,
)
from ponder.tasks.answers import extract_answer
from ponder.tasks.arithmetic import revision_prompt
from ponder.verifiers.base import Verifier

SELECTIONS = ("weighted", "majority", "best")
WITHIN = ("best", "last")
# N when neither the budget's samples nor chains x revisions say.
DEFAULT_SAMPLES = 16

PromptBuilder = Callable[[str, list[str]], str]


def chat_revision_prompt(prompt: str, attempts: list[str]) -> str:
    """The prompt for another attempt by a chat model, after earlier ``attempts`` (oldest first):
    the ``prompt_builder`` of the ``revision_chat`` strategy, for real models.

    It opens with a header rather than with ``prompt``, so a chat backend gets it as a fresh user
    turn (a prompt that starts with the question would be continued as the model's own answer),
    and it repeats ``prompt`` whole, so that any answer-format instruction in it still applies."""
    if not attempts:
        return prompt
    shown = "\n\n".join(f"Earlier attempt {i}:\n{a.strip()}" for i, a in enumerate(attempts, 1))
    return (
        f"Problem:\n{prompt.strip()}\n\n{shown}\n\n"
        "The earlier attempts may contain mistakes. Check them, then solve the problem again "
        "step by step, ending as the problem asks."
    )


def fitting_prompt(
    prompt: str,
    attempts: list[str],
    fits: Callable[[str], bool],
    builder: PromptBuilder = revision_prompt,
    name: str = "revision",
) -> str:
    """``builder(prompt, attempts)``, the oldest attempts dropped until ``fits`` accepts the text
    (or none is left)."""
    shown = list(attempts)
    while True:
        text = builder(prompt, shown)
        if not isinstance(text, str):
            raise ConfigError(
                f"strategy {name!r}: prompt_builder returned {type(text).__name__}, not a string"
            )
        if not shown or fits(text):
            return text
        shown = shown[1:]  # the oldest attempt goes first


@dataclass
class Revision:
    chains: int | None = None  # independent chains run in parallel
    revisions: int | None = None  # attempts per chain (the first is a plain sample)
    ratio: float = 1.0  # revisions / chains when neither is given
    selection: str = "weighted"  # across chains: weighted / majority / best
    within: str = "best"  # a chain's answer: its best-scored attempt, or its last
    aggregation: str = "last"  # step scores -> one: last / min / prod / mean, or "orm"
    # Most earlier attempts a revision prompt shows. One: the shipped reviser fixes as many slips
    # seeing only the last attempt and breaks fewer right answers than seeing three (RESULTS.md).
    context_attempts: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 160
    # prompt, earlier attempts (oldest first) -> the prompt for the next attempt
    prompt_builder: PromptBuilder = field(default=revision_prompt)
    name: str = "revision"

    def __post_init__(self) -> None:
        for what in ("chains", "revisions"):
            value = getattr(self, what)
            check_param(value is None or value >= 1, self.name, f"{what} must be >= 1, got {value}")
        check_param(
            math.isfinite(self.ratio) and self.ratio > 0, self.name, f"ratio must be > 0, got {self.ratio}"
        )
        check_param(
            self.selection in SELECTIONS,
            self.name,
            f"selection must be one of {list(SELECTIONS)}, got {self.selection!r}",
        )
        check_param(
            self.within in WITHIN, self.name, f"within must be one of {list(WITHIN)}, got {self.within!r}"
        )
        check_aggregation(self.name, self.aggregation)
        check_param(
            self.context_attempts >= 1,
            self.name,
            f"context_attempts must be >= 1, got {self.context_attempts}",
        )
        check_param(self.temperature >= 0, self.name, f"temperature must be >= 0, got {self.temperature}")
        check_param(
            self.max_new_tokens >= 1, self.name, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )
        check_param(callable(self.prompt_builder), self.name, "prompt_builder must be callable")

    def plan(self, budget: Budget) -> tuple[int, int]:
        """(chains, revisions) for this budget (see the module docstring)."""
        if self.chains is not None and self.revisions is not None:
            return self.chains, self.revisions
        total = budget.samples if budget.samples is not None else DEFAULT_SAMPLES
        total = max(1, min(total, MAX_SAMPLES))
        if self.chains is not None:
            return self.chains, max(1, total // self.chains)
        if self.revisions is not None:
            return max(1, total // self.revisions), self.revisions
        revisions = min(total, max(1, round(math.sqrt(total * self.ratio))))
        return max(1, total // revisions), revisions

    def revision_prompt(self, tracker: BudgetTracker, prompt: str, attempts: list[str]) -> str:
        """The prompt for a chain's next attempt: its last attempts, as many as fit the context."""
        context = getattr(tracker.generator, "context_length", None)

        def fits(text: str) -> bool:
            return context is None or tracker.prompt_tokens(text) + self.max_new_tokens <= context

        return fitting_prompt(
            prompt, attempts[-self.context_attempts :], fits, self.prompt_builder, self.name
        )

    def run(
        self, prompt: str, generator: Generator, verifier: Verifier | None, budget: Budget, seed: int
    ) -> StrategyResult:
        if not prompt.strip():
            raise ConfigError(f"strategy {self.name!r} got an empty prompt")
        tracker = BudgetTracker(budget, self.name, generator, verifier, needs_verifier=True)
        require_one_sample(tracker, prompt, self.max_new_tokens, scored=True)
        n_chains, n_revisions = self.plan(budget)
        chains: list[list[Candidate]] = [[] for _ in range(n_chains)]
        alive = list(range(n_chains))
        candidates: list[Candidate] = []
        trace = [f"{n_chains} chain(s) x {n_revisions} attempt(s); selection across chains: {self.selection}"]
        stop = f"{n_revisions} attempt(s) per chain done"
        for j in range(n_revisions):
            prompts = (
                [prompt]
                if j == 0
                else [self.revision_prompt(tracker, prompt, [c.text for c in chains[i]]) for i in alive]
            )

            def cost(k: int, j: int = j, prompts: list[str] = prompts) -> Cost:
                if j == 0:  # one prompt, k samples of it
                    return sample_cost(tracker, prompt, k, self.max_new_tokens, scored=True)
                return tracker.generation_cost(prompts[:k], 1, self.max_new_tokens, samples=k) + (
                    tracker.scoring_estimate(prompt, "", self.max_new_tokens, count=k)
                )

            k = tracker.largest(cost, len(alive))
            if k == 0:
                stop = "budget spent"
                break
            alive = alive[:k]
            round_seed = seed if j == 0 else derive_seed(seed, "revision", j)
            params = SamplingParams(
                n=k if j == 0 else 1,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                seed=round_seed,
            )
            groups = tracker.generate(prompts[:1] if j == 0 else prompts[:k], params, samples=k)
            completions = groups[0] if j == 0 else [g[0] for g in groups]
            drawn = [Candidate(text=c.text, answer=extract_answer(c.text)) for c in completions]
            # Judged as answers to the question itself, not to the revision prompt.
            score_candidates(prompt, drawn, tracker, self.aggregation)
            for i, cand in zip(alive, drawn):
                chains[i].append(cand)
            candidates.extend(drawn)
            sizes = [tracker.prompt_tokens(p) for p in prompts[:k]]
            trace.append(
                f"attempt {j + 1}: {k} chain(s), prompts of {min(sizes)}-{max(sizes)} tokens; answers "
                + ", ".join(str(c.answer) for c in drawn)
            )
        trace.append(f"stopped: {stop}")
        bests: list[Candidate] = []
        for i, chain in enumerate(chains):
            if not chain:
                continue
            if self.within == "last":
                at = len(chain) - 1
            else:
                ranks = [(c.answer is not None, -1.0 if c.score is None else c.score) for c in chain]
                at = max(range(len(chain)), key=ranks.__getitem__)
            best = chain[at]
            bests.append(best)
            score = "-" if best.score is None else f"{best.score:.3f}"
            trace.append(
                f"chain {i}: {self.within} attempt {at + 1} of {len(chain)}: "
                f"answer {best.answer} (score {score})"
            )
        return StrategyResult(
            answer=self.select(bests), candidates=candidates, compute=tracker.compute, trace=trace
        )

    def select(self, bests: list[Candidate]) -> int | None:
        """The answer across the chains' best attempts."""
        if self.selection == "majority":
            return vote(bests)
        return pick_by_score(bests, weighted=self.selection == "weighted")
