"""Generators: the embedded policy and (later) remote and local engines."""

from ponder.backends.base import Completion, GenerationUsage, Generator, SamplingParams

__all__ = ["Completion", "GenerationUsage", "Generator", "SamplingParams"]
