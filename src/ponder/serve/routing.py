"""From a request to a search plan: which model, strategy, parameters, budget, verifier and seed.

**Model names.** ``NAME`` is a served model with its default strategy and budget; ``PREFIX/NAME``
runs a strategy of the client's choice. ``PREFIX`` is ``STRATEGY`` or ``STRATEGY-N``:

- ``STRATEGY``: a registered strategy (``greedy``, ``majority``, ``adaptive_majority``,
  ``best_of_n``, ``weighted_best_of_n``, ``beam_search``, ``lookahead``, ``dvts``, and any added
  later, e.g. ``compute_optimal``), with ``-`` and ``_`` interchangeable and case ignored, or one of
  the short names ``beam`` (beam_search), ``bon`` (best_of_n), ``wbon`` (weighted_best_of_n) and
  ``sc`` (majority, self-consistency);
- ``N``: the sample budget (the generation budget N: samples, or step candidates per round).

So ``beam-16/embedded``, ``majority-8/embedded``, ``best-of-n-16/embedded``,
``compute-optimal/embedded``. A name that is not a served model and whose prefix is not a strategy is
a 404 naming both. The ``ponder`` object of the body (``extra_body``) can set the same things and
more: ``strategy`` (same grammar), ``params``, ``budget``, ``verifier``.

**Precedence.** The budget is the body's ``ponder.budget``, else ``samples=N`` of the prefix, else the
model's default; a prefix's N fills in ``samples`` when the body's budget leaves it out. A limit
above the model's ``max_budget`` is a 400 naming it; limits the request leaves unset are filled in
from ``max_budget`` (tokens always is), so every search is bounded. Strategy parameters are the
model's defaults (when its default strategy runs), then the request's ``temperature`` and
``max_tokens``, then ``ponder.params``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from ponder.errors import PonderError
from ponder.serve.config import BudgetSpec
from ponder.serve.errors import APIError, bad_request
from ponder.serve.models import ServedModel
from ponder.serve.pool import can_run_on_loop
from ponder.serve.schemas import PonderOptions
from ponder.strategies.base import Strategy
from ponder.strategies.budget import Budget
from ponder.strategies.registry import STRATEGIES, make_strategy

ALIASES = {"beam": "beam_search", "bon": "best_of_n", "wbon": "weighted_best_of_n", "sc": "majority"}
# Strategies that may do blocking work besides the model calls they are given (a second generator
# of their own, a policy file to load): never run on the event loop.
OFF_LOOP = frozenset({"cascade", "compute_optimal"})
_PREFIX = re.compile(r"([A-Za-z]+(?:[-_][A-Za-z]+)*)(?:-(\d{1,9}))?")


@dataclass(frozen=True)
class StrategyChoice:
    strategy: str
    samples: int | None = None


def parse_strategy(text: str) -> StrategyChoice | None:
    """``beam-16`` -> beam_search with 16 samples; None when ``text`` names no registered strategy."""
    match = _PREFIX.fullmatch(text)
    if match is None:
        return None
    name = match[1].lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in STRATEGIES:
        return None
    return StrategyChoice(name, int(match[2]) if match[2] else None)


def strategy_grammar() -> str:
    names = ", ".join(sorted(STRATEGIES))
    return f"STRATEGY or STRATEGY-N (N samples), STRATEGY one of {names} or {sorted(ALIASES)}"


def resolve_model(name: str, models: dict[str, ServedModel]) -> tuple[ServedModel, StrategyChoice | None]:
    """The served model and the strategy prefix (if any) of a request's ``model``; 404 otherwise."""
    if name in models:
        return models[name], None
    prefix, slash, rest = name.partition("/")
    if slash and rest in models:
        choice = parse_strategy(prefix)
        if choice is None:
            raise APIError(
                404,
                f"model {name!r}: unknown strategy prefix {prefix!r} before model {rest!r}; "
                f"a prefix is {strategy_grammar()}",
                param="model",
                code="model_not_found",
            )
        return models[rest], choice
    raise APIError(
        404,
        f"model {name!r} does not exist: this server has {sorted(models)}, "
        "each optionally behind a strategy prefix such as beam-16/",
        param="model",
        code="model_not_found",
    )


@dataclass
class SearchPlan:
    """One request's search: run ``strategy`` on each prompt within ``budget``."""

    model: ServedModel
    strategy_name: str
    strategy: Strategy
    params: dict[str, Any]
    budget: Budget
    verifier_name: str
    verifier: Any
    seed: int
    options: PonderOptions = field(default_factory=PonderOptions)
    on_loop: bool = False  # run on the server's event loop, not in a worker thread (see pool.py)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "strategy": self.strategy_name,
            "params": self.params,
            "verifier": None if self.verifier is None else self.verifier_name,
            "budget": BudgetSpec(
                samples=self.budget.samples, tokens=self.budget.tokens, flops=self.budget.flops
            ).describe(),
            "seed": self.seed,
        }


def _budget(
    model: ServedModel,
    options: PonderOptions,
    prefix: StrategyChoice | None,
    from_body: StrategyChoice | None,
) -> Budget:
    # N of "beam-16" (in ponder.strategy, else in the model prefix) and where it was written.
    n_samples, n_param = None, "model"
    if from_body is not None and from_body.samples is not None:
        n_samples, n_param = from_body.samples, "ponder.strategy"
    elif prefix is not None and prefix.samples is not None:
        n_samples = prefix.samples
    where = {name: f"ponder.budget.{name}" for name in ("samples", "tokens", "flops")}
    if options.budget is not None and not options.budget.is_empty():
        asked = options.budget.model_copy()
        if asked.samples is None and n_samples is not None:
            asked.samples, where["samples"] = n_samples, n_param
    elif n_samples is not None:
        asked, where["samples"] = BudgetSpec(samples=n_samples), n_param
    else:
        asked = model.entry.budget.model_copy()
    for name, most in model.entry.max_budget.describe().items():
        value = getattr(asked, name)
        if value is None:
            if name != "samples":  # a samples limit changes how some strategies size rounds: never add one
                setattr(asked, name, most)
        elif value > most:
            raise APIError(
                400,
                f"{where[name]}: a budget of {value:g} {name} is above this server's maximum for model "
                f"{model.name!r} ({most:g} {name})",
                param=where[name],
                code="budget_too_large",
            )
    if asked.samples is not None and asked.samples < 1:
        raise bad_request(f"{where['samples']}: a budget needs at least 1 sample", where["samples"])
    return asked.to_budget()


def plan_search(
    model: ServedModel,
    prefix: StrategyChoice | None,
    options: PonderOptions | None,
    *,
    temperature: float | None,
    max_tokens: int | None,
    seed: int | None,
) -> SearchPlan:
    """Everything the search needs, every choice checked; a 400 naming the field otherwise."""
    options = options or PonderOptions()
    from_body = None
    if options.strategy is not None:
        from_body = parse_strategy(options.strategy)
        if from_body is None:
            raise bad_request(
                f"ponder.strategy: unknown strategy {options.strategy!r}; write {strategy_grammar()}",
                "ponder.strategy",
            )
        if prefix is not None and prefix.strategy != from_body.strategy:
            raise bad_request(
                f"ponder.strategy {options.strategy!r} contradicts the model prefix's strategy "
                f"{prefix.strategy!r}: name one",
                "ponder.strategy",
            )
    chosen = from_body or prefix
    name = chosen.strategy if chosen else model.entry.strategy

    allowed = STRATEGIES[name].parameters()
    params: dict[str, Any] = dict(model.entry.params) if name == model.entry.strategy else {}
    if temperature is not None and "temperature" in allowed:
        params["temperature"] = temperature
    if max_tokens is not None and "max_new_tokens" in allowed:
        params["max_new_tokens"] = max_tokens
    params.update(options.params)
    try:
        strategy = make_strategy(name, **params)
    except PonderError as exc:
        raise bad_request(f"ponder.params: {exc}", "ponder.params") from None

    budget = _budget(model, options, prefix, from_body)
    verifier_name, verifier = model.verifier(options.verifier)
    if STRATEGIES[name].needs_verifier and verifier is None:
        raise bad_request(
            f"strategy {name!r} needs a verifier and model {model.name!r} has "
            + ("none configured" if options.verifier is None else "'none' chosen")
            + f"; choose one of {[v for v in model.verifiers if v != 'none'] or 'none available'}"
            " with ponder.verifier, or a strategy without one (greedy, majority, adaptive_majority)",
            "ponder.verifier" if options.verifier is not None else "model",
        )
    if not STRATEGIES[name].needs_verifier:
        verifier = None  # like ponder.solve: a strategy that scores nothing runs no verifier
    return SearchPlan(
        model=model,
        strategy_name=name,
        strategy=strategy,
        params=params,
        budget=budget,
        verifier_name=verifier_name,
        verifier=verifier,
        seed=secrets.randbits(62) if seed is None else seed,
        options=options,
        on_loop=name not in OFF_LOOP and can_run_on_loop(model.generator, verifier),
    )
