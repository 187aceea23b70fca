"""Strategies by name. A new strategy is one module plus one entry here."""

from __future__ import annotations

from collections.abc import Callable

from ponder.errors import ConfigError
from ponder.strategies.base import Strategy
from ponder.strategies.best_of_n import BestOfN
from ponder.strategies.greedy import Greedy
from ponder.strategies.majority import MajorityVote

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "greedy": Greedy,
    "majority": MajorityVote,
    "best_of_n": BestOfN,
    "weighted_best_of_n": lambda **kw: BestOfN(weighted=True, name="weighted_best_of_n", **kw),
}
NEEDS_VERIFIER = {"best_of_n", "weighted_best_of_n"}


def make_strategy(name: str, **params: object) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}: choose one of {sorted(STRATEGIES)}")
    try:
        return STRATEGIES[name](**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for strategy {name!r}: {exc}") from exc
