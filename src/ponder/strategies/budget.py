"""Compute budgets: limits on samples, tokens and FLOPs, and the tracker strategies ask before spending.

A :class:`Budget` sets any combination of three limits:

- ``samples``: the generation budget N. Sampling strategies draw at most N full solutions; step-level
  search generates at most N step candidates per round (Snell et al., 2024: a round of beam search
  over N candidates costs about what one step of N independent samples does).
- ``tokens``: policy prompt tokens actually computed (each distinct prompt of a generate() call once;
  its KV cache is shared by its samples) + policy generated tokens + verifier tokens.
- ``flops``: 2 x non-embedding parameters x tokens, for the policy and the verifier separately; the
  limit is on their total.

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

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

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
class Budget:
    """Limits on what one strategy run may spend; any combination, at least one."""

    samples: int | None = None
    tokens: int | None = None
    flops: float | None = None

    def __post_init__(self) -> None:
        if self.samples is None and self.tokens is None and self.flops is None:
            raise ConfigError("a budget needs at least one limit: samples, tokens or flops")
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
        for name in ("samples", "tokens", "flops"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"budget {name} must be >= 0, got {value!r}")

    def describe(self) -> str:
        """The limits that are set, e.g. ``samples=16, tokens=4000``."""
        parts = []
        if self.samples is not None:
            parts.append(f"samples={self.samples}")
        if self.tokens is not None:
            parts.append(f"tokens={self.tokens}")
        if self.flops is not None:
            parts.append(f"flops={self.flops:.4g}")
        return ", ".join(parts)

    def allows(self, cost: Cost) -> bool:
        """Does spending ``cost`` in total stay within every limit?"""
        return (
            (self.samples is None or cost.samples <= self.samples)
            and (self.tokens is None or cost.tokens <= self.tokens)
            and (self.flops is None or cost.flops <= self.flops)
        )

    def exceeded_by(self, compute: Compute) -> list[str]:
        """The limits ``compute`` went past (empty when it kept to the budget)."""
        return [
            f"{name} {used:.6g} > {limit:.6g}"
            for name, used, limit in (
                ("samples", compute.samples, self.samples),
                ("tokens", compute.policy_tokens + compute.verifier_tokens, self.tokens),
                ("flops", compute.total_flops, self.flops),
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
        )

    @classmethod
    def of(cls, compute: Compute) -> Cost:
        return cls(
            compute.samples,
            compute.policy_tokens,
            compute.verifier_tokens,
            compute.policy_flops,
            compute.verifier_flops,
        )

    def describe(self) -> str:
        noun = "sample" if self.samples == 1 else "samples"
        return f"{self.samples} {noun}, {self.tokens} tokens, {self.flops:.4g} FLOPs"


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

    # --- what things cost ------------------------------------------------------------------------

    @property
    def spent(self) -> Cost:
        return Cost.of(self.compute)

    def fits(self, cost: Cost) -> bool:
        """Would spending ``cost`` more stay within the budget?"""
        return self.budget.allows(self.spent + cost)

    def prompt_tokens(self, prompt: str) -> int:
        count = getattr(self.generator, "count_prompt_tokens", None)
        return int(count(prompt)) if callable(count) else len(prompt.encode()) + 1

    def verifier_tokens(self, prompt: str, solution: str) -> int:
        count = getattr(self.verifier, "count_tokens", None)
        return int(count(prompt, solution)) if callable(count) else len((prompt + solution).encode()) + 1

    def policy_cost(self, tokens: int, samples: int = 0) -> Cost:
        return Cost(
            samples=samples, policy_tokens=tokens, policy_flops=2.0 * self.generator.num_params * tokens
        )

    def verifier_cost(self, tokens: int) -> Cost:
        params = self.verifier.num_params if self.verifier is not None else 0
        return Cost(verifier_tokens=tokens, verifier_flops=2.0 * params * tokens)

    def generation_cost(self, prompts: list[str], n: int, max_new_tokens: int, samples: int) -> Cost:
        """Worst case of ``generate(prompts, n=n)``: every prompt once, every sample at full length."""
        tokens = sum(self.prompt_tokens(p) for p in prompts) + len(prompts) * n * max_new_tokens
        return self.policy_cost(tokens, samples)

    def scoring_cost(self, prompt: str, solutions: list[str]) -> Cost:
        """What scoring ``solutions`` (texts that exist) costs."""
        return self.verifier_cost(sum(self.verifier_tokens(prompt, s) for s in solutions))

    def scoring_estimate(self, prompt: str, prefix: str, new_tokens: int, count: int = 1) -> Cost:
        """Planning: scoring ``count`` texts that will be ``prefix`` plus up to ``new_tokens`` policy
        tokens (assumes the verifier needs no more tokens for them than the policy emitted)."""
        return self.verifier_cost(count * (self.verifier_tokens(prompt, prefix) + new_tokens))

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
            raise ConfigError(
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
        groups = self.generator.generate(prompts, params)
        before = self.spent
        self.compute.add_generation(self.generator, groups, samples=samples)
        self._check_estimate("policy", before, worst)
        return groups

    def score(self, prompt: str, solutions: list[str]) -> list[VerifierScore]:
        """Score ``solutions`` to ``prompt`` if that fits, and record the verifier tokens it ran."""
        if self.verifier is None:
            raise ConfigError(f"strategy {self.strategy!r} needs a verifier")
        if not solutions:
            return []
        estimate = self.scoring_cost(prompt, solutions)
        if not self.fits(estimate):
            raise BudgetExhausted(f"scoring {len(solutions)} solutions would cost {estimate.describe()}")
        scores = self.verifier.score([prompt] * len(solutions), solutions)
        before = self.spent
        self.compute.add_verification(self.verifier, sum(s.tokens for s in scores))
        self._check_estimate("verifier", before, estimate)
        return scores

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
