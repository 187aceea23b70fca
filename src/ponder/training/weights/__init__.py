"""Weights of the embedded models, shipped inside the package (safetensors, no network)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def policy_path() -> Path:
    return WEIGHTS_DIR / "policy.safetensors"


def verifier_path() -> Path:
    """The process + outcome reward model trained on Monte-Carlo rollout labels."""
    return WEIGHTS_DIR / "verifier.safetensors"


def checker_path() -> Path:
    """The step checker: the default verifier (see ponder.verifiers.likelihood.CheckerLMVerifier)."""
    return WEIGHTS_DIR / "checker.safetensors"


def reviser_path() -> Path:
    """The policy fine-tuned to revise its own wrong attempts (backend spec ``embedded+reviser``)."""
    return WEIGHTS_DIR / "reviser.safetensors"


def orders_policy_path() -> Path:
    """A policy trained on solutions that apply the operations in random orders (backend spec
    ``embedded+orders``): its samples reach an answer by many routes, which majority vote needs."""
    return WEIGHTS_DIR / "policy_orders.safetensors"


def orders_checker_path() -> Path:
    """The step checker of the order-diverse policy (verifier spec ``embedded+orders``)."""
    return WEIGHTS_DIR / "checker_orders.safetensors"
