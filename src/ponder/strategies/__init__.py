"""Strategies: ways of spending test-time compute against a verifier, within a budget."""

from ponder.strategies.base import Candidate, Compute, Strategy, StrategyResult
from ponder.strategies.budget import Budget, BudgetTracker, Cost
from ponder.strategies.registry import NEEDS_VERIFIER, STRATEGIES, make_strategy

__all__ = [
    "NEEDS_VERIFIER",
    "STRATEGIES",
    "Budget",
    "BudgetTracker",
    "Candidate",
    "Compute",
    "Cost",
    "Strategy",
    "StrategyResult",
    "make_strategy",
]
