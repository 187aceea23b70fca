"""Shared fixtures: tiny randomly initialised policy and reward models (no shipped weights needed)."""

from __future__ import annotations

import pytest
import torch

from ponder.backends.embedded import EmbeddedGenerator
from ponder.training.model import ModelConfig, TinyTransformer
from ponder.training.tokenizer import CharTokenizer
from ponder.verifiers.embedded import EmbeddedVerifier

# The test machine is small and often busy; one thread keeps tiny models fast and timings stable.
torch.set_num_threads(1)

TINY = dict(d_model=32, n_layer=2, n_head=2, max_seq_len=128)


def tiny_model(head: str = "lm", seed: int = 0, **overrides: object) -> TinyTransformer:
    """A small, randomly initialised model, the same for the same arguments."""
    torch.manual_seed(seed)
    return TinyTransformer(ModelConfig(head=head, **(TINY | overrides))).eval()


def lively(model: TinyTransformer, std: float = 0.2, seed: int = 1) -> TinyTransformer:
    """Re-draw the matrices with a larger spread: default-initialised tiny models are so flat that
    greedy decoding just repeats the last character; these produce varied, context-dependent text
    with clear margins between the top tokens (so greedy results do not hinge on rounding)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    return model


@pytest.fixture(scope="session")
def tokenizer() -> CharTokenizer:
    return CharTokenizer()


@pytest.fixture(scope="session")
def policy_model() -> TinyTransformer:
    """A policy with peaked, context-dependent predictions."""
    return lively(tiny_model("lm", seed=0))


@pytest.fixture(scope="session")
def flat_policy_model() -> TinyTransformer:
    """A policy with near-uniform predictions: sampling from it often hits each of the step delimiter,
    the end token and the length limit."""
    return tiny_model("lm", seed=0)


@pytest.fixture(scope="session")
def reward_model() -> TinyTransformer:
    """A reward model whose scores vary clearly from text to text."""
    return lively(tiny_model("reward", seed=1), seed=2)


@pytest.fixture(scope="session")
def generator(policy_model: TinyTransformer) -> EmbeddedGenerator:
    return EmbeddedGenerator(policy_model)


@pytest.fixture(scope="session")
def flat_generator(flat_policy_model: TinyTransformer) -> EmbeddedGenerator:
    return EmbeddedGenerator(flat_policy_model)


@pytest.fixture(scope="session")
def verifier(reward_model: TinyTransformer) -> EmbeddedVerifier:
    return EmbeddedVerifier(reward_model, batch_size=4)
