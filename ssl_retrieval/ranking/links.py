"""The training links of each item, in either direction: the linked ranking's data.

links(q, c) counts the training pairs (q, c) and (c, q); paths(q, c) counts the items x linked to
both (two steps q - x - c in the links, whatever their counts: co-occurrence), a term of the
fused ranking (`scores.FEATURES`). On data whose links come in both
directions (a wiki's "see also", a store's "related items") a held-out link's reverse is often a
training pair, so an item's known links are the best first answers; on directed data (a package
and its dependencies) they rarely are, and the blend gives them no slots. Which holds is chosen
on validation (`blend.py`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ssl_retrieval.compat import tf


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


class LinkRows(tf.Module):
    """The link counts in the SavedModel's graph (variables, by row): `log_links(rows)` is
    what `log_links` gives in evaluation, for corpus rows given as a tensor."""

    def __init__(self, counts: sp.csr_matrix):
        super().__init__()
        counts = counts.tocsr()
        counts.sort_indices()
        self.num_items = counts.shape[1]
        self.row_splits = tf.Variable(np.asarray(counts.indptr, np.int64), trainable=False)
        self.columns = tf.Variable(np.asarray(counts.indices, np.int64), trainable=False)
        self.log_counts = tf.Variable(np.log1p(counts.data).astype(np.float32), trainable=False)

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

    def log_paths(self, rows):
        """[B, N] log(1 + paths) of corpus rows [B] with every corpus item: `log_paths`."""
        linked = tf.cast(self.log_links(rows) > 0, tf.float32)  # [B, N]
        items = tf.RaggedTensor.from_row_splits(self.columns, self.row_splits)
        matrix = tf.sparse.SparseTensor(
            tf.stack([items.value_rowids(), self.columns], axis=1),
            tf.ones_like(self.log_counts),
            [self.num_items, self.num_items],
        )
        # Symmetric links: paths[b, c] = sum_x linked[b, x] * links[c, x].
        paths = tf.sparse.sparse_dense_matmul(matrix, linked, adjoint_b=True)  # [N, B]
        return tf.math.log1p(tf.transpose(paths))
