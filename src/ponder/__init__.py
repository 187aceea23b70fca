"""ponder: test-time compute scaling for language models."""

from ponder.errors import PonderError

__version__ = "0.1.0"


def solve(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export, see ponder.api.solve
    """Answer a question with the embedded default; see :func:`ponder.api.solve`."""
    from ponder.api import solve as _solve

    return _solve(*args, **kwargs)


def __getattr__(name: str) -> object:
    # Budget is re-exported lazily too, so ``import ponder`` stays light.
    if name == "Budget":
        from ponder.strategies.budget import Budget

        return Budget
    raise AttributeError(f"module 'ponder' has no attribute {name!r}")


__all__ = ["Budget", "PonderError", "solve", "__version__"]
