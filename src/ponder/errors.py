"""Errors ponder raises for bad input. Each message names what was wrong."""

from __future__ import annotations


class PonderError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, bad config)."""


class ConfigError(PonderError, ValueError):
    """A wrong parameter or configuration value."""


class WeightsError(PonderError):
    """A weight file that is missing, corrupted, or does not match its config."""


class ContextLengthError(PonderError, ValueError):
    """A prompt that does not fit in the model's context window."""


class BackendError(PonderError):
    """A model server or engine that failed, timed out, or answered with something unusable."""
