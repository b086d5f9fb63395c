"""A popularity prior added at retrieval time: score(q, c) = cos(q, c) + beta * log(1 + n_c).

Trained with the plain in-batch softmax, a two-tower model learns roughly the pointwise mutual
information of query and candidate: popular candidates are in-batch negatives in proportion to
their popularity, so the model learns to demote them (Yi et al. 2019). That is what makes its
tail and cold neighbours good, and it is why it misses the hubs (libc6, python3) that most
held-out links of a power-law graph point to. The logQ correction puts popularity back during
training, into the embeddings, and the tail pays for it. Adding it back at retrieval instead
keeps the embeddings as they are and makes the trade-off one number, beta, chosen on validation
with the rest of the blend (`blend.py`) and changeable at serving time without retraining.

`n_c` is the number of training pairs whose candidate is c (`stats/candidate_counts.tsv`): items
never seen as a candidate get no boost. The prior is an extra dimension: queries [q, beta] and
items [c, log(1 + n_c)] under the inner product, so exact search and ScaNN (dot product) serve it
like any embedding.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ssl_retrieval.data_dir import DataDir

# Written by models trained before blends (blend.py), which read it as their beta.
FILE = "popularity_prior.json"


def log_counts(data_dir, item_ids) -> np.ndarray:
    """[N] float32 log(1 + training-candidate count) of each id of `item_ids`.

    `data_dir`: a path or a `DataDir` (its candidate counts)."""
    ids, counts = DataDir.of(data_dir).candidate_counts
    counts = dict(zip(ids, counts, strict=True))
    return np.log1p(np.array([counts.get(str(i), 0.0) for i in item_ids], np.float32))


def augment(queries: np.ndarray, items: np.ndarray, prior: np.ndarray, beta: float):
    """([Nq, d + 1], [N, d + 1]) whose inner products are cos + beta * prior."""
    queries = np.concatenate([queries, np.full((len(queries), 1), beta, np.float32)], axis=1)
    items = np.concatenate([items, prior.astype(np.float32)[:, None]], axis=1)
    return queries.astype(np.float32), items.astype(np.float32)


def load_beta(model_dir: str) -> float:
    """The beta chosen on validation for this model; 0 when it was never chosen."""
    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        return 0.0
    with open(path) as f:
        return float(json.load(f)["beta"])
