"""Verifiers: process and outcome reward models, judges, checkers."""

from ponder.verifiers.base import AGGREGATIONS, Verifier, VerifierScore, aggregate_steps
from ponder.verifiers.spec import load_verifier

__all__ = ["AGGREGATIONS", "Verifier", "VerifierScore", "aggregate_steps", "load_verifier"]
