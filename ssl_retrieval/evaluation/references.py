"""Reference recommenders on the same evaluator, to tell whether the neural model is worth it.

  top_popular   the most frequent training candidates, the same list for every query (the
                paper's appendix baseline; its Recall@K is the CDF of the K-th item).
  feature_knn   cosine of TF-IDF vectors over the item's categorical and multi-hot values (the
                id excluded): content similarity without any training pair.
  cooccurrence  item-item collaborative filtering from the training pairs: c scores
                sum_{c' linked from q} co(c', c) + co(q, c), where co(a, b) counts training
                queries linking to both a and b. The query's own training links are not scored:
                a pair lives in exactly one split, so they are never eval answers. Ties and
                empty rows fall back to popularity.

Each is a `topk.Scorer` over corpus chunks, so the evaluator treats them like the model. The
established libraries (LightFM, implicit's ALS and item-kNN, the query's own links) are beside
them in peers.py, tuned on validation; `--recommender` takes both (`peers.RECOMMENDERS`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ssl_retrieval.ranking import tfidf, topk

# The project's own references: the blend's `references` objective compares with these.
RECOMMENDERS = ("top_popular", "feature_knn", "cooccurrence")


def training_counts(data) -> np.ndarray:
    """[N] how many training pairs have each item as candidate."""
    return np.bincount(data.train_candidate, minlength=data.num_items)


def popularity(data) -> np.ndarray:
    """[N] training-candidate counts, scaled into [0, 1]."""
    counts = training_counts(data).astype(np.float64)
    return counts / max(counts.max(), 1.0)


def top_popular(data) -> topk.Scorer:
    scores = popularity(data).astype(np.float32)

    def scorer(rows, start, stop):
        return np.broadcast_to(scores[start:stop], (len(rows), stop - start))

    return scorer


def tfidf_matrix(data_dir: str, item_ids: np.ndarray) -> sp.csr_matrix:
    """[N, V] L2-normalised binary TF-IDF rows over categorical and multi-hot values."""
    matrix = tfidf.build(data_dir).matrix
    if matrix.shape[0] != len(item_ids):
        raise ValueError(f"{data_dir}: {matrix.shape[0]} corpus items, expected {len(item_ids)}")
    return matrix


def feature_knn(data, data_dir: str, content=None, product=None) -> topk.Scorer:
    """`content`: the corpus TF-IDF matrix when the caller already has it (read once);
    `product`: a `tfidf.product` of it that other scorers of the same pass share."""
    if product is None:
        x = content if content is not None else tfidf_matrix(data_dir, data.item_ids)
        product = tfidf.product(x)
    tie_break = 1e-6 * popularity(data)

    def scorer(rows, start, stop):
        scores = product(rows, start, stop)
        return (scores + tie_break[start:stop]).astype(np.float32)

    return scorer


def cooccurrence(data) -> topk.Scorer:
    n = data.num_items
    links = sp.csr_matrix(
        (np.ones(len(data.train_query)), (data.train_query, data.train_candidate)), shape=(n, n)
    )
    links.data = np.minimum(links.data, 1.0)
    co = (links.T @ links).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    co_cols = co.tocsc()
    tie_break = 1e-6 * popularity(data)
    batch: list = [None, None, None]  # rows, and their links and co rows by column

    def scorer(rows, start, stop):
        if batch[0] is not rows:  # once per query batch, not per corpus chunk
            batch[:] = [rows, links[rows].tocsr(), co[rows].tocsc()]
        scores = batch[1] @ co_cols[:, start:stop] + batch[2][:, start:stop]
        # Counts are whole numbers, so any order of the sums gives the same; log1p(0) = 0, so
        # only the non-zeros need it.
        scores.data = np.log1p(scores.data)
        return (scores.toarray() + tie_break[start:stop]).astype(np.float32)

    return scorer


def make(name: str, data, data_dir: str, content=None, product=None) -> topk.Scorer:
    if name == "top_popular":
        return top_popular(data)
    if name == "feature_knn":
        return feature_knn(data, data_dir, content, product)
    if name == "cooccurrence":
        return cooccurrence(data)
    raise ValueError(f"--recommender must be model or one of {list(RECOMMENDERS)}, got {name!r}")
