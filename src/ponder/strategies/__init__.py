"""Strategies: ways of spending test-time compute against a verifier."""

from ponder.strategies.base import Candidate, Compute, Strategy, StrategyResult
from ponder.strategies.registry import STRATEGIES, make_strategy

__all__ = ["STRATEGIES", "Candidate", "Compute", "Strategy", "StrategyResult", "make_strategy"]
