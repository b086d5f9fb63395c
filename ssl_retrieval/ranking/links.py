"""The training links of each item, in either direction: the linked ranking's data.

links(q, c) counts the training pairs (q, c) and (c, q); paths(q, c) counts the items x linked to
both (two steps q - x - c in the links, whatever their counts: co-occurrence); knn(q, c) is the
BM25 item-kNN's score, the established item-to-item collaborative filter (implicit's
`BM25Recommender`, as the `itemknn` peer ranks: `evaluation/peers.py`): (e_q + links[q]) S[:, c],
S the BM25-weighted cosine of the items' link rows, each row's `KNN_NEIGHBOURS` largest kept.
The paths and the kNN score are terms of the fused ranking (`scores.FEATURES`). On data whose links come in both
directions (a wiki's "see also", a store's "related items") a held-out link's reverse is often a
training pair, so an item's known links are the best first answers; on directed data (a package
and its dependencies) they rarely are, and the blend gives them no slots. Which holds is chosen
on validation (`blend.py`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp

from ssl_retrieval.compat import tf

# The BM25 item-kNN's parameters: the `itemknn` peer's defaults (implicit's K, K1, B).
KNN_NEIGHBOURS = 200
KNN_K1 = 1.2
KNN_B = 0.75
# The similarity's build time grows with the pairs of items that share a linked item: above
# KNN_SLOW_PAIRS it says so, at the rate measured under load (1.1e10 pairs in 168 s; Debian's
# 5.1e8 take 4 s on a quiet machine: docs/scaling.md).
KNN_SLOW_PAIRS = 1e10
KNN_PAIRS_PER_SECOND = 6.8e7


def matrix(train_query, train_candidate, num_items: int) -> sp.csr_matrix:
    """[N, N] float32 link counts, symmetric (a pair counts for both of its items), zero diagonal.

    Args:
      train_query, train_candidate: [T] corpus indices of the training pairs.
    """
    query = np.asarray(train_query, np.int64)
    candidate = np.asarray(train_candidate, np.int64)
    ones = np.ones(2 * len(query), np.float32)
    rows = np.concatenate([query, candidate])
    columns = np.concatenate([candidate, query])
    counts = sp.csr_matrix((ones, (rows, columns)), shape=(num_items, num_items))
    counts.setdiag(0)
    counts.eliminate_zeros()
    counts.sum_duplicates()
    counts.sort_indices()
    return counts


def log_links(counts: sp.csr_matrix, rows, start: int, stop: int) -> np.ndarray:
    """[len(rows), stop - start] float32 log(1 + links) of the query items `rows` with corpus
    items start..stop-1."""
    block = counts[np.asarray(rows)][:, start:stop]
    block.data = np.log1p(block.data)
    return block.toarray().astype(np.float32)


def log_degrees(counts: sp.csr_matrix) -> np.ndarray:
    """[N] log(1 + each item's distinct training neighbours, either direction): the query's
    degree of the fused ranking's "logq*" terms (`scores.DEGREE_TERMS`)."""
    return np.log1p(np.diff(sp.csr_matrix(counts).indptr)).astype(np.float32)


def indicator(counts: sp.csr_matrix) -> sp.csr_matrix:
    """[N, N] float32 1 where two items are linked (symmetric, like `counts`)."""
    linked = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    linked.data[:] = 1.0
    return linked


def log_paths(linked: sp.csr_matrix, rows, start: int, stop: int) -> np.ndarray:
    """[len(rows), stop - start] float32 log(1 + paths) of the query items `rows` with corpus
    items start..stop-1; `linked` is `indicator(counts)` (symmetric: the items linked to c are
    its row, so paths(q, c) is the dot product of rows q and c)."""
    block = (linked[np.asarray(rows)] @ linked[start:stop].T).tocsr()
    block.data = np.log1p(block.data)
    return block.toarray().astype(np.float32)


def knn_similarity(counts: sp.csr_matrix) -> sp.csr_matrix:
    """[N, N] float32 BM25 item-kNN similarity of the items' link rows (implicit's
    `BM25Recommender` on the symmetric counts as a user x item matrix, one thread so that every
    call gives the same matrix): each row keeps its `KNN_NEIGHBOURS` largest, the item itself
    among them."""
    from implicit.nearest_neighbours import BM25Recommender  # noqa: PLC0415  (when used)
    from implicit.utils import ParameterWarning  # noqa: PLC0415

    pairs = knn_pairs(counts)
    if pairs > KNN_SLOW_PAIRS:
        logging.warning(
            "item-kNN similarity: %.1e pairs of items share a linked item (a hub's links); "
            "building it takes about %.0f min on one core (--noblend_item_knn skips it)",
            pairs,
            pairs / KNN_PAIRS_PER_SECOND / 60,
        )

    model = BM25Recommender(K=KNN_NEIGHBOURS, K1=KNN_K1, B=KNN_B, num_threads=1)
    with warnings.catch_warnings():
        # BM25Recommender.fit hands its own weighting (a COO matrix) to a CSR routine.
        warnings.simplefilter("ignore", ParameterWarning)
        model.fit(sp.csr_matrix(counts, dtype=np.float32), show_progress=False)
    similarity = sp.csr_matrix(model.similarity, dtype=np.float32)
    similarity.sort_indices()
    return similarity


def knn_pairs(counts: sp.csr_matrix) -> float:
    """The pairs of items the BM25 similarity's build visits: those that share a linked item,
    the sum over items of their degree squared."""
    degrees = np.diff(sp.csr_matrix(counts).indptr).astype(np.float64)
    return float((degrees**2).sum())


def knn_scores(counts: sp.csr_matrix, similarity: sp.csr_matrix, rows) -> sp.csr_matrix:
    """[len(rows), N] sparse item-kNN scores of the query items `rows`: their profiles
    e_q + counts[q] times `similarity` (`knn_similarity`)."""
    rows = np.asarray(rows)
    own = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (np.arange(len(rows)), rows)),
        shape=(len(rows), counts.shape[1]),
    )
    return (sp.csr_matrix(counts)[rows] + own) @ sp.csr_matrix(similarity)


class LinkRows(tf.Module):
    """The link counts in the SavedModel's graph (variables, by row): `log_links(rows)` is
    what `log_links` gives in evaluation, for corpus rows given as a tensor."""

    def __init__(self, counts: sp.csr_matrix, similarity: sp.csr_matrix | None = None):
        super().__init__()
        counts = counts.tocsr()
        counts.sort_indices()
        self.num_items = counts.shape[1]
        self.row_splits = tf.Variable(np.asarray(counts.indptr, np.int64), trainable=False)
        self.columns = tf.Variable(np.asarray(counts.indices, np.int64), trainable=False)
        self.log_counts = tf.Variable(np.log1p(counts.data).astype(np.float32), trainable=False)
        # The item-kNN similarity (`knn_similarity`), when a ranking weighs the kNN score.
        if similarity is not None:
            similarity = sp.csr_matrix(similarity, dtype=np.float32)
            similarity.sort_indices()
            self.knn_row_splits = tf.Variable(
                np.asarray(similarity.indptr, np.int64), trainable=False
            )
            self.knn_columns = tf.Variable(
                np.asarray(similarity.indices, np.int64), trainable=False
            )
            self.knn_values = tf.Variable(similarity.data, trainable=False)

    def log_links(self, rows):
        """[B, N] log(1 + links) of corpus rows [B] with every corpus item (rows < 0: none)."""
        safe = tf.maximum(rows, 0)
        starts = tf.gather(self.row_splits, safe)
        stops = tf.where(rows >= 0, tf.gather(self.row_splits, safe + 1), starts)
        positions = tf.ragged.range(starts, stops)
        flat = positions.flat_values
        indices = tf.stack([positions.value_rowids(), tf.gather(self.columns, flat)], axis=1)
        shape = tf.stack([tf.shape(rows, out_type=tf.int64)[0], self.num_items])
        return tf.scatter_nd(indices, tf.gather(self.log_counts, flat), shape)

    def log_degree(self, rows):
        """[B, 1] log(1 + the distinct items linked to corpus rows [B]) (rows < 0: 0):
        `log_degrees`."""
        safe = tf.maximum(rows, 0)
        degree = tf.gather(self.row_splits, safe + 1) - tf.gather(self.row_splits, safe)
        degree = tf.where(rows >= 0, degree, tf.zeros_like(degree))
        return tf.math.log1p(tf.cast(degree, tf.float32))[:, tf.newaxis]

    def log_paths(self, rows):
        """[B, N] log(1 + paths) of corpus rows [B] with every corpus item: `log_paths`."""
        # Symmetric links: paths[b, c] = sum over the items x linked to b of links[x, c] > 0.
        linked, _ = self._linked(rows)
        ones = tf.ones_like(self.log_counts)
        matrix = (self.row_splits, self.columns, ones)
        return tf.math.log1p(self._spread(linked, tf.ones_like(linked, tf.float32), *matrix))

    def log_knn(self, rows):
        """[B, N] log(1 + knn) of corpus rows [B] with every corpus item (`knn_scores`), the
        similarity rows of the query itself (weight 1) and of its linked items (weight their
        link count) summed."""
        matrix = (self.knn_row_splits, self.knn_columns, self.knn_values)
        linked, counts = self._linked(rows)
        knn = self._spread(linked, counts, *matrix)
        # The query's own row, as a profile of one item (none for rows < 0).
        own = tf.RaggedTensor.from_tensor(tf.maximum(rows, 0)[:, tf.newaxis])
        present = tf.RaggedTensor.from_tensor(tf.cast(rows >= 0, tf.float32)[:, tf.newaxis])
        knn += self._spread(own, present, *matrix)
        return tf.math.log1p(tf.maximum(knn, 0.0))

    def _linked(self, rows):
        """([B, (links)] the items linked to each row, [B, (links)] their link counts)."""
        safe = tf.maximum(rows, 0)
        starts = tf.gather(self.row_splits, safe)
        stops = tf.where(rows >= 0, tf.gather(self.row_splits, safe + 1), starts)
        positions = tf.ragged.range(starts, stops)
        counts = tf.math.expm1(tf.gather(self.log_counts, positions))
        return tf.gather(self.columns, positions), counts

    def _spread(self, profile, weights, splits, columns, values):
        """[B, N] for each query b, the sum over its `profile` items x ([B, (P)] ragged) of
        `weights`[b, x] times row x of a CSR matrix (`splits`, `columns`, `values`). Only the
        profile's rows are gathered, its size times a row's entries per query, not the whole
        matrix (bench/link_terms.py)."""
        items = profile.flat_values
        entries = tf.ragged.range(tf.gather(splits, items), tf.gather(splits, items + 1))
        which = entries.value_rowids()  # the profile item each entry comes from
        query = tf.gather(profile.value_rowids(), which)
        spread = tf.gather(weights.flat_values, which) * tf.gather(values, entries.flat_values)
        indices = tf.stack([query, tf.gather(columns, entries.flat_values)], axis=1)
        shape = tf.stack([profile.nrows(out_type=tf.int64), self.num_items])
        return tf.scatter_nd(indices, spread, shape)  # repeated (query, column) pairs add up
