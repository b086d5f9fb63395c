"""A factorisation of the training links, as a term of the fused ranking (`--blend_als`).

als(q, c) = U[q] . V[c], U and V the user and item factors of implicit's
`AlternatingLeastSquares` fit on the symmetric link counts (`links.matrix`: a pair counts for
both of its items), each row of the matrix a "user" (the query item) and each column an item.
It is the `als` peer's model (`evaluation/peers.py`) at the parameters `PARAMS`: what the
peers' tuning chose on validation at fraction 1.0 over Debian, `linked`, `linked` both ways and
`synthetic` (alpha 100 and the links both ways in 4 of 4, regularization 10 in 3). The number of
factors is the one setting that mattered there (on `linked` both ways 256 factors ranked the
validation head's top ten at 0.66 against 128's 0.55; on Debian 128 led), so the blend's choice
can fit each size of `--blend_als_factors` and keep the one whose own ranking is best on
validation (`evaluation/blend_choice.py`). The default is one size, 128: with 128 and 256 the
blend's objective stayed level on each dataset tried (Debian, `linked`, `linked` both ways;
results/head_frontier). A query with no training links has U[q] = 0, so the term is 0 for it,
as for a query given by its features.

The factors are fit when the blend is chosen and kept beside `blend.json` (`FILE`), so that
evaluation and the export score with the factors the fused ranking's weights were fit on.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.sparse as sp

from ssl_retrieval import atomic

FILE = "blend_als.npz"
PARAMS = {"factors": 128, "regularization": 10.0, "alpha": 100.0, "iterations": 15}


@dataclasses.dataclass(frozen=True)
class Factors:
    """users [N, f] and items [N, f] float32: als(q, c) = users[q] . items[c]."""

    users: np.ndarray
    items: np.ndarray

    def scores(self, rows, start: int, stop: int) -> np.ndarray:
        """[len(rows), stop - start] float32 als(q, c) of the query items `rows` with corpus
        items start..stop-1."""
        return (self.users[np.asarray(rows)] @ self.items[start:stop].T).astype(np.float32)

    def pairs(self, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[P] als(q, c) of the (query, item) corpus index pairs."""
        return np.einsum("pf,pf->p", self.users[queries], self.items[items]).astype(np.float32)


def fit(
    counts: sp.spmatrix,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int,
    seed: int = 0,
    num_threads: int = 0,
) -> Factors:
    """implicit's ALS on `counts` [N, N] (rows the query items): its user and item factors.
    `num_threads` 0: every core (each row is solved alone, so the factors do not depend on it)."""
    import threadpoolctl  # noqa: PLC0415  (implicit loads only when a factorisation is fit)
    from implicit.cpu.als import AlternatingLeastSquares  # noqa: PLC0415

    # implicit's own threads do the work; a multi-threaded BLAS under them only contends (and
    # implicit warns of it when the model is made).
    with threadpoolctl.threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=num_threads,
        )
        counts = sp.csr_matrix(counts, dtype=np.float32)
        model.fit(counts, show_progress=False)
    users = np.array(model.user_factors, np.float32)
    # The solver's few conjugate-gradient steps leave a row without links near its random
    # start, not at 0: set it, so such a query's term is 0 as the module says.
    users[np.diff(counts.indptr) == 0] = 0
    return Factors(users, np.asarray(model.item_factors, np.float32))


def save(model_dir: str, found: Factors) -> None:
    """Writes `FILE` in `model_dir` (through a temporary file and a rename)."""
    path = os.path.join(model_dir, FILE)
    atomic.write_with(path, lambda f: np.savez(f, users=found.users, items=found.items))


def load(model_dir: str) -> Factors:
    """The factors `save` wrote; a clear error when the model's blend needs them and they are
    missing (a blend.json copied without them)."""
    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: the model's blend weighs the links' factorisation (--blend_als) but its "
            "factors are missing; choose the blend again (python -m ssl_retrieval.blend)"
        )
    with np.load(path) as found:
        return Factors(found["users"], found["items"])


def remove(model_dir: str) -> None:
    """Deletes `FILE` (a blend chosen again without the factorisation no longer needs it)."""
    path = os.path.join(model_dir, FILE)
    if os.path.exists(path):
        os.remove(path)
