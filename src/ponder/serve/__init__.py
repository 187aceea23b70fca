"""``ponder serve``: an OpenAI-compatible HTTP server that answers with test-time compute.

Point any OpenAI client at it (change the base URL) and every completion becomes a search (majority
vote, best-of-N, PRM beam search, ...) over a ponder backend, within a budget. See
:mod:`ponder.serve.routing` for how a request chooses its strategy and budget, and
:mod:`ponder.serve.config` for the server's configuration.
"""

from ponder.serve.config import ModelEntry, ServeConfig, load_config, parse_config

__all__ = ["ModelEntry", "ServeConfig", "create_app", "load_config", "parse_config"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy: FastAPI loads only when serving
    """The FastAPI app; see :func:`ponder.serve.app.create_app`."""
    from ponder.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
