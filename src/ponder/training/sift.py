"""Data selection for test-time fine-tuning: SIFT and nearest-neighbour retrieval (pure numpy).

SIFT (Hübotter et al., 2024, "Efficiently Learning at Test-Time: Active Fine-Tuning of LLMs",
arXiv 2410.08020) models the response to a prompt as a function ``f`` with a Gaussian-process
prior whose kernel is the inner product of unit-norm embeddings, ``k(x, x') = <phi(x), phi(x')>``
(equivalently a Bayesian linear model over the embeddings). Fine-tuning on an example ``x`` is
treated as a noisy observation of ``f(x)`` with noise variance ``lam``. The posterior variance at
the prompt ``x*`` after observing the examples ``X``,

    sigma^2(x* | X) = k(x*, x*) - k_X(x*)^T (K_XX + lam I)^-1 k_X(x*),

is the uncertainty left about the response. SIFT picks examples greedily, each time the one that
minimises the posterior variance at the prompt given those already picked. Unlike
nearest-neighbour retrieval it gains almost nothing from an example whose information an earlier
pick already carried (a near-duplicate), so it moves on to a novel, informative one. An example
may be picked again (a second observation of it still reduces the variance; with a small ``lam``
by little), as in the paper.

The greedy loop is exact and incremental: the posterior covariance after ``j`` picks is the prior
minus ``j`` rank-one terms, ``k_j(a, b) = k(a, b) - sum_i v_i(a) v_i(b)``, with
``v_j(x) = k_{j-1}(x, x_j) / sqrt(k_{j-1}(x_j, x_j) + lam)``; picking ``x`` lowers the variance at
the prompt by ``k_j(x*, x)^2 / (k_j(x, x) + lam)``. One pick costs O(N d + N j) for N candidates of
dimension d.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ponder.errors import ConfigError


@dataclass
class Selection:
    """Which corpus examples were picked, in order (SIFT may repeat one), and the prompt's posterior
    variance before any pick and after each: ``variances[j]`` is sigma^2 after ``j`` picks.
    ``stopped_early`` says the adaptive rule stopped before ``k`` picks."""

    indices: list[int]
    variances: list[float]
    stopped_early: bool = False

    @property
    def final_variance(self) -> float:
        return self.variances[-1]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _check(query: np.ndarray, corpus: np.ndarray, k: int, lam: float | None = None) -> None:
    if corpus.ndim != 2 or corpus.shape[0] == 0:
        raise ConfigError("the corpus is empty: test-time training needs at least one solved example")
    if query.ndim != 1 or query.shape[0] != corpus.shape[1]:
        raise ConfigError(
            f"the prompt embedding has shape {tuple(query.shape)}; the corpus embeddings are "
            f"{corpus.shape[1]}-dimensional"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k (examples to select) must be a whole number >= 1, got {k!r}")
    if lam is not None and not (lam > 0 and np.isfinite(lam)):
        raise ConfigError(f"lam (SIFT's regularisation / noise variance) must be > 0, got {lam!r}")


def posterior_variance(query: np.ndarray, selected: np.ndarray, lam: float) -> float:
    """sigma^2(x* | X) by the closed form (the reference the greedy loop must match).

    ``query`` is one embedding ``(d,)``, ``selected`` the embeddings of the picks ``(m, d)`` (rows
    may repeat); the kernel is the plain inner product of what is passed in.
    """
    query = np.asarray(query, dtype=np.float64)
    selected = np.asarray(selected, dtype=np.float64).reshape(-1, query.shape[0])
    prior = float(query @ query)
    if selected.shape[0] == 0:
        return prior
    gram = selected @ selected.T + lam * np.eye(selected.shape[0])
    cross = selected @ query
    return prior - float(cross @ np.linalg.solve(gram, cross))


def sift_select(
    query: np.ndarray,
    corpus: np.ndarray,
    k: int,
    lam: float = 0.1,
    threshold: float | None = None,
    allow_repeats: bool = True,
) -> Selection:
    """Greedy SIFT: up to ``k`` picks from ``corpus`` (``(N, d)``) for the prompt ``query`` (``(d,)``).

    The kernel is the inner product of the rows as given; pass unit-norm embeddings (see
    :func:`normalize_rows`) for SIFT's cosine kernel. ``threshold`` is the adaptive rule: stop as
    soon as the prompt's posterior variance is at or below it (before any pick if it already is),
    so prompts the corpus covers well get few examples. Ties go to the lowest index. With
    ``allow_repeats=False`` each example is picked at most once. ``k`` may not exceed the corpus.
    """
    query = np.asarray(query, dtype=np.float64)
    corpus = np.asarray(corpus, dtype=np.float64)
    _check(query, corpus, k, lam)
    n = corpus.shape[0]
    if k > n:
        # Repeats would make it computable, but asking for more examples than exist is almost
        # always a mistake (a wrong corpus file, a truncated split): say so.
        raise ConfigError(f"k={k} is larger than the corpus ({n} examples): ask for at most {n}")
    cross = corpus @ query  # k_j(x*, x) for every candidate x
    diag = np.einsum("ij,ij->i", corpus, corpus)  # k_j(x, x)
    variance = float(query @ query)
    basis: list[np.ndarray] = []  # v_i over the corpus
    basis_q: list[float] = []  # v_i(x*)
    picked: list[int] = []
    variances = [variance]
    taken = np.zeros(n, dtype=bool)
    while len(picked) < k:
        if threshold is not None and variance <= threshold:
            return Selection(picked, variances, stopped_early=True)
        gain = cross**2 / (diag + lam)
        if not allow_repeats:
            gain = np.where(taken, -np.inf, gain)
        j = int(np.argmax(gain))
        # Column j of the current posterior covariance, over the corpus and at the prompt.
        column = corpus @ corpus[j]
        for v in basis:
            column -= v * v[j]
        scale = np.sqrt(diag[j] + lam)
        v_new = column / scale
        vq_new = cross[j] / scale
        basis.append(v_new)
        basis_q.append(vq_new)
        cross = cross - v_new * vq_new
        diag = np.maximum(diag - v_new**2, 0.0)  # clamp rounding below zero
        variance = max(variance - vq_new**2, 0.0)
        picked.append(j)
        taken[j] = True
        variances.append(variance)
    return Selection(picked, variances)


def nearest_neighbours(query: np.ndarray, corpus: np.ndarray, k: int, lam: float = 0.1) -> Selection:
    """The ``k`` corpus rows with the largest inner product with ``query`` (cosine similarity for
    unit-norm rows), most similar first, ties to the lowest index: the retrieval baseline. The
    variances are SIFT's posterior variance after each prefix, so both selections read on one scale."""
    query, corpus = _distinct_picks_allowed(query, corpus, k, lam, "nearest-neighbour retrieval")
    order = np.argsort(-(corpus @ query), kind="stable")[:k]
    return _with_variances(query, corpus, [int(i) for i in order], lam)


def random_selection(
    query: np.ndarray, corpus: np.ndarray, k: int, lam: float = 0.1, seed: int = 0
) -> Selection:
    """``k`` distinct corpus rows drawn uniformly at random (seeded): the control that separates
    what a selection rule adds from what fine-tuning on any task data adds. The variances are
    SIFT's posterior variance after each prefix, as for the other rules."""
    query, corpus = _distinct_picks_allowed(query, corpus, k, lam, "random selection")
    picked = np.random.default_rng(seed).choice(corpus.shape[0], size=k, replace=False)
    return _with_variances(query, corpus, [int(i) for i in picked], lam)


def _distinct_picks_allowed(
    query: np.ndarray, corpus: np.ndarray, k: int, lam: float, rule: str
) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 arrays for a rule that picks each corpus row at most once."""
    query = np.asarray(query, dtype=np.float64)
    corpus = np.asarray(corpus, dtype=np.float64)
    _check(query, corpus, k, lam)
    if k > corpus.shape[0]:
        raise ConfigError(
            f"k={k} is larger than the corpus ({corpus.shape[0]} examples): {rule} "
            "picks each example at most once"
        )
    return query, corpus


def _with_variances(query: np.ndarray, corpus: np.ndarray, picked: list[int], lam: float) -> Selection:
    """``picked`` with SIFT's posterior variance after each prefix, so every rule reads on one scale."""
    variances = [posterior_variance(query, corpus[picked[:m]], lam) for m in range(len(picked) + 1)]
    return Selection(picked, variances)
