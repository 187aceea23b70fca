"""Verifiers: process and outcome reward models, judges, checkers."""

from ponder.verifiers.base import AGGREGATIONS, Verifier, VerifierScore, aggregate_steps

__all__ = ["AGGREGATIONS", "Verifier", "VerifierScore", "aggregate_steps"]
