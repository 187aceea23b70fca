"""Compute budgets: limits on samples, tokens, FLOPs and wall-clock seconds, and the tracker strategies
ask before spending.

A :class:`Budget` sets any combination of four limits:

- ``samples``: the generation budget N. Sampling strategies draw at most N full solutions; step-level
  search generates at most N step candidates per round (Snell et al., 2024: a round of beam search
  over N candidates costs about what one step of N independent samples does).
- ``tokens``: policy prompt tokens actually computed (each distinct prompt of a generate() call once;
  its KV cache is shared by its samples) + policy generated tokens + verifier tokens.
- ``flops``: 2 x non-embedding parameters x tokens, for the policy and the verifier separately; the
  limit is on their total.
- ``seconds``: a deadline, wall-clock seconds from the start of the run (real-time use). The time a
  call will take is predicted from a measured :class:`Throughput` (per call, per decoding step, per
  token), corrected on the fly by how fast the calls of this run really went; unlike the other
  limits it is a prediction, so a deadline can be missed when the machine slows down suddenly.

Strategies never overspend. Before every generate() or score() call they ask a
:class:`BudgetTracker` whether the call's worst case fits (every sample running to
``max_new_tokens``), and size the call (fewer samples, fewer candidates, or a lower
``max_new_tokens``) so that it does. Prompt and verifier token counts come from the backends'
optional ``count_prompt_tokens`` / ``count_tokens`` hooks, or a one-token-per-byte bound. Planning a
whole search round ahead (before the text it will score exists) assumes the verifier needs no more
tokens for a generated text than the policy emitted for it (true when both share a tokenizer, as the
embedded models do); the exact check before each call still holds when that assumption fails, the
strategy then just stops early.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from ponder.backends.base import Completion, Generator, SamplingParams
from ponder.errors import ConfigError
from ponder.strategies.base import Compute
from ponder.verifiers.base import Verifier, VerifierScore

# Most samples one generate() call may carry: bounds the KV-cache memory of a big budget.
MAX_BATCH = 256
# Most samples any strategy draws, however large a token or FLOPs budget is: a guard against a
# budget that never runs out (e.g. a FLOPs limit with zero-parameter stub models).
MAX_SAMPLES = 4096


@dataclass(frozen=True)
class Throughput:
    """How fast a generator and verifier run on this machine, to predict a call's wall time.

    A generate() call is predicted to take ``policy_call_s + policy_step_s * steps +
    policy_token_s * tokens`` (steps: decoding steps, the longest sample; tokens: prompt tokens plus
    every sample's tokens), a score() call ``verifier_call_s + verifier_token_s * tokens``.
    :func:`ponder.allocation.deadline.measure_throughput` fits these on the machine.
    """

    policy_token_s: float
    verifier_token_s: float = 0.0
    policy_step_s: float = 0.0
    policy_call_s: float = 0.0
    verifier_call_s: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ConfigError(f"throughput {f.name} must be a finite number >= 0, got {value!r}")

    def generation_seconds(self, tokens: int, steps: int) -> float:
        return self.policy_call_s + self.policy_step_s * steps + self.policy_token_s * tokens

    def scoring_seconds(self, tokens: int) -> float:
        return self.verifier_call_s + self.verifier_token_s * tokens


@dataclass(frozen=True)
class Budget:
    """Limits on what one strategy run may spend; any combination, at least one.

    A ``seconds`` limit (a deadline) needs ``throughput``, the measured speed its calls are
    predicted from; the throughput is not itself a limit (two budgets differing only in it are equal).
    """

    samples: int | None = None
    tokens: int | None = None
    flops: float | None = None
    seconds: float | None = None
    throughput: Throughput | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.samples is None and self.tokens is None and self.flops is None and self.seconds is None:
            raise ConfigError(
                "a budget needs at least one limit: samples, tokens or flops (or a deadline in seconds)"
            )
        for name in ("samples", "tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"budget {name} must be a whole number, got {value!r}")
        if self.flops is not None and (
            isinstance(self.flops, bool)
            or not isinstance(self.flops, int | float)
            or not math.isfinite(self.flops)
        ):
            raise ConfigError(f"budget flops must be a finite number, got {self.flops!r}")
        if self.seconds is not None and (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, int | float)
            or not math.isfinite(self.seconds)
        ):
            raise ConfigError(f"budget seconds must be a finite number, got {self.seconds!r}")
        for name in ("samples", "tokens", "flops", "seconds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"budget {name} must be >= 0, got {value!r}")
        if self.throughput is not None and not isinstance(self.throughput, Throughput):
            raise ConfigError(f"budget throughput must be a Throughput, got {self.throughput!r}")

    def describe(self) -> str:
        """The limits that are set, e.g. ``samples=16, tokens=4000``."""
        parts = []
        if self.samples is not None:
            parts.append(f"samples={self.samples}")
        if self.tokens is not None:
            parts.append(f"tokens={self.tokens}")
        if self.flops is not None:
            parts.append(f"flops={self.flops:.4g}")
        if self.seconds is not None:
            parts.append(f"seconds={self.seconds:.4g}")
        return ", ".join(parts)

    def allows(self, cost: Cost) -> bool:
        """Does spending ``cost`` in total stay within every limit?"""
        return (
            (self.samples is None or cost.samples <= self.samples)
            and (self.tokens is None or cost.tokens <= self.tokens)
            and (self.flops is None or cost.flops <= self.flops)
            and (self.seconds is None or cost.seconds <= self.seconds)
        )

    def exceeded_by(self, compute: Compute) -> list[str]:
        """The limits ``compute`` went past (empty when it kept to the budget)."""
        return [
            f"{name} {used:.6g} > {limit:.6g}"
            for name, used, limit in (
                ("samples", compute.samples, self.samples),
                ("tokens", compute.policy_tokens + compute.verifier_tokens, self.tokens),
                ("flops", compute.total_flops, self.flops),
                ("seconds", compute.wall_seconds, self.seconds),
            )
            if limit is not None and used > limit
        ]


@dataclass(frozen=True)
class Cost:
    """Compute in the units a budget limits (a spend so far, or the worst case of a planned call)."""

    samples: int = 0
    policy_tokens: int = 0
    verifier_tokens: int = 0
    policy_flops: float = 0.0
    verifier_flops: float = 0.0
    seconds: float = 0.0  # wall time: elapsed so far, or a call's predicted duration

    @property
    def tokens(self) -> int:
        return self.policy_tokens + self.verifier_tokens

    @property
    def flops(self) -> float:
        return self.policy_flops + self.verifier_flops

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.samples + other.samples,
            self.policy_tokens + other.policy_tokens,
            self.verifier_tokens + other.verifier_tokens,
            self.policy_flops + other.policy_flops,
            self.verifier_flops + other.verifier_flops,
            self.seconds + other.seconds,
        )

    @classmethod
    def of(cls, compute: Compute) -> Cost:
        return cls(
            compute.samples,
            compute.policy_tokens,
            compute.verifier_tokens,
            compute.policy_flops,
            compute.verifier_flops,
            compute.wall_seconds,
        )

    def describe(self) -> str:
        noun = "sample" if self.samples == 1 else "samples"
        text = f"{self.samples} {noun}, {self.tokens} tokens, {self.flops:.4g} FLOPs"
        return text + (f", {self.seconds:.3g} s" if self.seconds > 0 else "")


class BudgetTooSmall(ConfigError):
    """A budget below a strategy's smallest useful run, refused before anything is spent."""


class BudgetExhausted(Exception):
    """The next call's worst case does not fit the budget. Strategies catch it and stop; it never
    reaches the caller (a strategy that lets it escape has a bug)."""


def derive_seed(seed: int, *path: object) -> int:
    """A seed for one part of a run (a batch, a round), stable across processes and platforms."""
    digest = hashlib.sha256(repr((seed, *path)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


class BudgetTracker:
    """Wraps the :class:`Compute` of one strategy run: answers "can I afford this?" before a call,
    makes the call, and records what it really spent."""

    def __init__(
        self,
        budget: Budget,
        strategy: str,
        generator: Generator,
        verifier: Verifier | None = None,
        needs_verifier: bool = False,
    ) -> None:
        if not isinstance(budget, Budget):
            raise ConfigError(
                f"strategy {strategy!r} needs a Budget (e.g. Budget(samples=16)), got {budget!r}"
            )
        if needs_verifier and verifier is None:
            raise ConfigError(f"strategy {strategy!r} needs a verifier")
        self.budget = budget
        self.strategy = strategy
        self.generator = generator
        self.verifier = verifier
        self.compute = Compute()
        # A run starts from an empty prefix cache, so that what it computes (and reports) is its own,
        # whatever ran on the generator before.
        reset = getattr(generator, "reset_prefix_cache", None)
        if callable(reset):
            reset()
        self._root: str | None = None  # the run's prompt: the first one it generates from
        self.started = time.perf_counter()
        self.throughput = budget.throughput
        if budget.seconds is not None and self.throughput is None:
            raise ConfigError(
                f"strategy {strategy!r} got a deadline (seconds={budget.seconds:.4g}) but no throughput to "
                "predict its calls from: Budget(seconds=..., throughput=...), measured by "
                "ponder.allocation.deadline.measure_throughput"
            )
        # Measured / predicted duration of this run's calls so far (1 until a call was timed).
        self.slowdown = 1.0

    # --- what things cost ------------------------------------------------------------------------

    @property
    def spent(self) -> Cost:
        """What the run spent; its wall time is read when each call ends (not live), so that a call
        planned to fit still fits when it is checked a moment later."""
        return Cost.of(self.compute)

    def elapsed(self) -> float:
        """Wall-clock seconds since the run started."""
        return time.perf_counter() - self.started

    def fits(self, cost: Cost) -> bool:
        """Would spending ``cost`` more stay within the budget?"""
        return self.budget.allows(self.spent + cost)

    def prompt_tokens(self, prompt: str) -> int:
        count = getattr(self.generator, "count_prompt_tokens", None)
        return int(count(prompt)) if callable(count) else len(prompt.encode()) + 1

    def verifier_tokens(self, prompt: str, solution: str) -> int:
        count = getattr(self.verifier, "count_tokens", None)
        return int(count(prompt, solution)) if callable(count) else len((prompt + solution).encode()) + 1

    def _predicted(self, seconds: float) -> float:
        return seconds * self.slowdown

    def policy_cost(self, tokens: int, samples: int = 0) -> Cost:
        tp = self.throughput
        return Cost(
            samples=samples,
            policy_tokens=tokens,
            policy_flops=2.0 * self.generator.num_params * tokens,
            seconds=self._predicted(tp.policy_token_s * tokens) if tp is not None else 0.0,
        )

    def verifier_cost(self, tokens: int) -> Cost:
        params = self.verifier.num_params if self.verifier is not None else 0
        tp = self.throughput
        return Cost(
            verifier_tokens=tokens,
            verifier_flops=2.0 * params * tokens,
            seconds=self._predicted(tp.verifier_token_s * tokens) if tp is not None else 0.0,
        )

    def generation_cost(self, prompts: list[str], n: int, max_new_tokens: int, samples: int) -> Cost:
        """Worst case of ``generate(prompts, n=n)``: every prompt once, every sample at full length
        (and, under a deadline, the call's fixed and per-step time)."""
        tokens = sum(self.prompt_tokens(p) for p in prompts) + len(prompts) * n * max_new_tokens
        cost = self.policy_cost(tokens, samples)
        if self.throughput is not None:
            tp = self.throughput
            fixed = self._predicted(tp.policy_call_s + tp.policy_step_s * max_new_tokens)
            cost = dataclasses.replace(cost, seconds=cost.seconds + fixed)
        return cost

    def _one_scoring_call(self, cost: Cost) -> Cost:
        if self.throughput is None:
            return cost
        return dataclasses.replace(
            cost, seconds=cost.seconds + self._predicted(self.throughput.verifier_call_s)
        )

    def scoring_cost(self, prompt: str, solutions: list[str]) -> Cost:
        """What scoring ``solutions`` (texts that exist) costs."""
        tokens = sum(self.verifier_tokens(prompt, s) for s in solutions)
        return self._one_scoring_call(self.verifier_cost(tokens))

    def scoring_estimate(self, prompt: str, prefix: str, new_tokens: int, count: int = 1) -> Cost:
        """Planning: scoring ``count`` texts that will be ``prefix`` plus up to ``new_tokens`` policy
        tokens (assumes the verifier needs no more tokens for them than the policy emitted)."""
        tokens = count * (self.verifier_tokens(prompt, prefix) + new_tokens)
        return self._one_scoring_call(self.verifier_cost(tokens))

    def largest(self, cost_of: Callable[[int], Cost], upper: int) -> int:
        """The largest ``k`` in ``[0, upper]`` whose ``cost_of(k)`` fits (``cost_of`` grows with k)."""
        lo, hi = 0, max(0, upper)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(cost_of(mid)):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def require_minimum(self, cost: Cost, what: str) -> None:
        """Refuse, before spending anything, a budget below the strategy's smallest useful run."""
        if not self.budget.allows(cost):
            raise BudgetTooSmall(
                f"strategy {self.strategy!r} needs a budget of at least {cost.describe()} for this prompt "
                f"({what}); the budget is {self.budget.describe()}"
            )

    # --- spending ----------------------------------------------------------------------------------

    def generate(self, prompts: list[str], params: SamplingParams, samples: int) -> list[list[Completion]]:
        """Run ``generate`` if its worst case fits, and record what it spent; ``samples`` is what the
        call adds to the samples count."""
        worst = self.generation_cost(prompts, params.n, params.max_new_tokens, samples)
        if not self.fits(worst):
            raise BudgetExhausted(
                f"generate({len(prompts)} prompts, n={params.n}) could cost {worst.describe()}"
            )
        start = time.perf_counter()
        groups = self._call_generator(prompts, params)
        took = time.perf_counter() - start
        before = self.spent
        self.compute.add_generation(self.generator, groups, samples=samples)
        self._check_estimate("policy", before, worst)
        if self.throughput is not None:
            steps = max((c.completion_tokens for group in groups for c in group), default=0)
            tokens = self.spent.tokens - before.tokens
            self._observe(took, self.throughput.generation_seconds(tokens, steps))
        self.compute.wall_seconds = self.elapsed()
        return groups

    def _call_generator(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        # A chat backend must continue a path as its own partial answer, not as more of the
        # question: hand it the run's prompt and the path apart. Every strategy's first call
        # generates from the bare prompt, so that call fixes where prompts split.
        continuations = getattr(self.generator, "generate_continuations", None)
        if not callable(continuations):
            return self.generator.generate(prompts, params)
        if self._root is None:
            self._root = prompts[0]
        root = self._root
        questions = [root if p.startswith(root) else p for p in prompts]
        responses = [p[len(root) :] if p.startswith(root) else "" for p in prompts]
        return continuations(questions, responses, params)

    def score(self, prompt: str, solutions: list[str]) -> list[VerifierScore]:
        """Score ``solutions`` to ``prompt`` if that fits, and record the verifier tokens it ran."""
        if self.verifier is None:
            raise ConfigError(f"strategy {self.strategy!r} needs a verifier")
        if not solutions:
            return []
        estimate = self.scoring_cost(prompt, solutions)
        if not self.fits(estimate):
            raise BudgetExhausted(f"scoring {len(solutions)} solutions would cost {estimate.describe()}")
        start = time.perf_counter()
        scores = self.verifier.score([prompt] * len(solutions), solutions)
        took = time.perf_counter() - start
        before = self.spent
        self.compute.add_verification(self.verifier, sum(s.tokens for s in scores))
        self._check_estimate("verifier", before, estimate)
        if self.throughput is not None:
            self._observe(took, self.throughput.scoring_seconds(sum(s.tokens for s in scores)))
        self.compute.wall_seconds = self.elapsed()
        return scores

    def _observe(self, took: float, predicted: float) -> None:
        """Fold a call's measured duration into the factor later predictions are scaled by: a running
        mean of measured / predicted, kept within [0.5, 4] so that one odd call cannot swing it."""
        if predicted <= 0:
            return
        self.slowdown = 0.5 * self.slowdown + 0.5 * min(4.0, max(0.5, took / predicted))

    def affordable_prefix(self, prompt: str, solutions: list[str]) -> int:
        """How many of ``solutions``, taken in order, can be scored within the budget."""
        costs = [self.verifier_tokens(prompt, s) for s in solutions]
        return self.largest(lambda k: self.verifier_cost(sum(costs[:k])), len(solutions))

    def _check_estimate(self, model: str, before: Cost, estimate: Cost) -> None:
        # A backend whose token-count hook undercounts breaks the guarantee; say so rather than
        # silently overspend.
        used = self.spent.tokens - before.tokens
        if used > estimate.tokens:
            warnings.warn(
                f"the {model} ran {used} tokens where its token counts allowed for at most "
                f"{estimate.tokens}; its count_prompt_tokens / count_tokens hook undercounts, "
                "so budgets may be exceeded",
                RuntimeWarning,
                stacklevel=3,
            )
