"""Generators: the embedded policy, OpenAI-compatible servers, transformers and llama.cpp models,
each named by a backend spec (:func:`load_generator`)."""

from ponder.backends.base import Completion, GenerationUsage, Generator, SamplingParams
from ponder.backends.spec import load_generator

__all__ = ["Completion", "GenerationUsage", "Generator", "SamplingParams", "load_generator"]
