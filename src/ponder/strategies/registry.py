"""Strategies by name. A new strategy is one module plus one entry here.

A strategy's parameters are its dataclass fields (``name`` aside); :func:`make_strategy` refuses
unknown names and values of the wrong type with a ConfigError naming the parameter.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from ponder.errors import ConfigError
from ponder.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ponder.strategies.adaptive_majority import AdaptiveMajority
from ponder.strategies.base import Strategy
from ponder.strategies.beam_search import BeamSearch
from ponder.strategies.best_of_n import BestOfN
from ponder.strategies.budget_forcing import BudgetForcing
from ponder.strategies.cascade import Cascade
from ponder.strategies.compute_optimal import ComputeOptimal
from ponder.strategies.dvts import DVTS
from ponder.strategies.greedy import Greedy
from ponder.strategies.lookahead import Lookahead
from ponder.strategies.majority import MajorityVote
from ponder.strategies.mcts import MCTS
from ponder.strategies.revision import Revision, chat_revision_prompt


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # Evaluating string annotations compiles them: cached, as a server checks them on every request.
    return typing.get_type_hints(cls)


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its dataclass, the parameters the entry pins, whether it needs a verifier."""

    cls: type
    needs_verifier: bool = False
    fixed: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def parameters(self) -> dict[str, Any]:
        """Parameter name -> type hint, for the parameters a caller may set."""
        hints = _type_hints(self.cls)
        return {
            f.name: hints[f.name]
            for f in dataclasses.fields(self.cls)
            if f.name != "name" and f.name not in self.fixed
        }


STRATEGIES: dict[str, StrategySpec] = {
    "greedy": StrategySpec(Greedy, summary="one temperature-0 sample"),
    "majority": StrategySpec(MajorityVote, summary="most common answer of the samples"),
    "best_of_n": StrategySpec(BestOfN, needs_verifier=True, summary="highest verifier score"),
    "weighted_best_of_n": StrategySpec(
        BestOfN,
        needs_verifier=True,
        fixed={"weighted": True, "name": "weighted_best_of_n"},
        summary="verifier scores summed per answer",
    ),
    "adaptive_best_of_n": StrategySpec(
        AdaptiveBestOfN,
        needs_verifier=True,
        summary="best-of-N, sampling stops once a score reaches threshold",
    ),
    "beam_search": StrategySpec(BeamSearch, needs_verifier=True, summary="PRM beam search over steps"),
    "lookahead": StrategySpec(
        Lookahead, needs_verifier=True, summary="beam search scored by greedy rollouts"
    ),
    "dvts": StrategySpec(DVTS, needs_verifier=True, summary="diverse verifier tree search"),
    "adaptive_majority": StrategySpec(AdaptiveMajority, summary="majority vote that stops once settled"),
    "mcts": StrategySpec(MCTS, needs_verifier=True, summary="Monte-Carlo tree search, the PRM as value"),
    "revision": StrategySpec(
        Revision, needs_verifier=True, summary="chains of sequential revisions, best by verifier"
    ),
    # A chat model would continue the built-in retry prompt as its own answer: show it the earlier
    # attempts in a new user turn instead.
    "revision_chat": StrategySpec(
        Revision,
        needs_verifier=True,
        fixed={"prompt_builder": chat_revision_prompt, "name": "revision_chat"},
        summary="sequential revision for chat models: earlier attempts in a new user turn",
    ),
    "budget_forcing": StrategySpec(BudgetForcing, summary="s1 budget forcing of a thinking block"),
    "cascade": StrategySpec(Cascade, summary="small model / cheap strategy first, escalate when unsure"),
    "compute_optimal": StrategySpec(
        ComputeOptimal, needs_verifier=True, summary="predict difficulty, run the calibrated policy's choice"
    ),
}
NEEDS_VERIFIER = {name for name, spec in STRATEGIES.items() if spec.needs_verifier}


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _conforms(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int is a fine float
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def make_strategy(name: str, **params: object) -> Strategy:
    """The strategy registered as ``name``, with ``params`` set (checked against its fields)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}: choose one of {sorted(STRATEGIES)}")
    spec = STRATEGIES[name]
    allowed = spec.parameters()
    for key, value in params.items():
        if key in spec.fixed:
            raise ConfigError(f"bad parameter for strategy {name!r}: {key!r} is fixed to {spec.fixed[key]!r}")
        if key not in allowed:
            raise ConfigError(
                f"bad parameter for strategy {name!r}: unknown parameter {key!r} "
                f"(it takes {', '.join(allowed) or 'none'})"
            )
        if not _conforms(value, allowed[key]):
            raise ConfigError(
                f"bad parameter for strategy {name!r}: {key!r} must be {_type_name(allowed[key])}, "
                f"got {value!r}"
            )
    kwargs = {k: float(v) if allowed[k] is float else v for k, v in params.items()}
    return spec.cls(**kwargs, **spec.fixed)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_label(text: str) -> tuple[str, dict[str, Any]]:
    """``"beam_search:beam_width=4,n=8"`` -> ("beam_search", {"beam_width": 4, "n": 8}): parameter
    values read as JSON, else strings. Only the form is checked here; ``make_strategy`` checks the
    name and the parameters."""
    name, _, rest = text.strip().partition(":")
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"strategy {text!r}: parameters are key=value pairs, got {part!r}")
        params[key.strip()] = _value(value.strip())
    return name.strip(), params


def format_label(name: str, params: dict[str, Any]) -> str:
    """The inverse of ``parse_label``: ``("dvts", {"branching": 4})`` -> ``"dvts:branching=4"``
    (values other than strings written as JSON, so they read back as the same types)."""
    if not params:
        return name
    return (
        name
        + ":"
        + ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(params.items()))
    )
