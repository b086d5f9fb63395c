"""Exact top-k retrieval over the whole corpus, in bounded memory.

Every recommender (the neural model, TopPopular, feature kNN, co-occurrence) is a *scorer*:
`scores(query_indices, start, stop) -> [Q, stop - start]` scores of the queries against corpus
items start..stop-1. `top_k` walks the corpus in chunks and keeps a running top k per query, so
memory is O(query_batch * (corpus_chunk + k)) whatever the corpus size.

Exclusions: each query's own item is never retrieved; optional extra exclusions per query
(training positives, the filtered setting). Ties: the lower corpus index wins (tf.math.top_k keeps
the lower position first, and chunks are merged in corpus order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ssl_retrieval.compat import tf

Scorer = Callable[[np.ndarray, int, int], "np.ndarray | tf.Tensor"]
_EXCLUDED = -np.inf


def embedding_scorer(query_embeddings: np.ndarray, item_embeddings: np.ndarray) -> Scorer:
    """Cosine scorer (rows are unit vectors): q [N_q, d] of corpus items, items [N, d]."""
    queries = tf.constant(query_embeddings, tf.float32)
    items = tf.constant(item_embeddings, tf.float32)

    def scores(query_indices, start, stop):
        q = tf.gather(queries, query_indices)
        return tf.matmul(q, items[start:stop], transpose_b=True)

    return scores


@tf.function(reduce_retracing=True)
def _merge(best_values, best_indices, chunk_scores, start, k):
    values, positions = tf.math.top_k(chunk_scores, k=tf.minimum(k, tf.shape(chunk_scores)[1]))
    indices = tf.cast(positions, tf.int64) + start
    values = tf.concat([best_values, values], axis=1)
    indices = tf.concat([best_indices, indices], axis=1)
    top_values, order = tf.math.top_k(values, k=tf.minimum(k, tf.shape(values)[1]))
    return top_values, tf.gather(indices, order, batch_dims=1)


def top_k(
    scorer: Scorer,
    query_indices: np.ndarray,
    num_items: int,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    query_batch: int = 1024,
    corpus_chunk: int = 32768,
    log_every: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus indices and scores for each query, the query item itself excluded.

    Args:
      scorer: see module docstring.
      query_indices: [Q] corpus index of each query item.
      num_items: corpus size N.
      k: how many to return (at most N - 1).
      exclude: optional, per query, corpus indices to leave out as well.
      query_batch, corpus_chunk: memory bounds.

    Returns:
      (indices [Q, k] int64, scores [Q, k] float32), best first; -1 / -inf where fewer than k
      items were left after the exclusions.
    """
    query_indices = np.asarray(query_indices, dtype=np.int64)
    k = int(min(k, num_items - 1))
    all_indices = np.full((len(query_indices), k), -1, np.int64)
    all_scores = np.full((len(query_indices), k), -np.inf, np.float32)
    batches = range(0, len(query_indices), query_batch)
    for b, lo in enumerate(batches):
        rows = query_indices[lo : lo + query_batch]
        n = len(rows)
        best_values = tf.fill([n, 0], np.float32(0))
        best_indices = tf.zeros([n, 0], tf.int64)
        for start in range(0, num_items, corpus_chunk):
            stop = min(num_items, start + corpus_chunk)
            chunk = tf.cast(tf.convert_to_tensor(scorer(rows, start, stop)), tf.float32)
            chunk = _exclude(chunk, rows, start, stop, exclude, lo)
            best_values, best_indices = _merge(
                best_values, best_indices, chunk, tf.constant(start, tf.int64), tf.constant(k)
            )
        values = best_values.numpy()
        indices = best_indices.numpy()
        indices[~np.isfinite(values)] = -1
        all_indices[lo : lo + n, : indices.shape[1]] = indices
        all_scores[lo : lo + n, : values.shape[1]] = values
        if log_every and (b + 1) % log_every == 0:
            logging.info(
                "retrieval: %d / %d queries", min(lo + n, len(query_indices)), len(query_indices)
            )
    return all_indices, all_scores


def _exclude(chunk, rows, start, stop, exclude, offset):
    """Sets the scores of each query's own item (and its exclusions) in this chunk to -inf."""
    row_ids, col_ids = [], []
    own = np.flatnonzero((rows >= start) & (rows < stop))
    row_ids.append(own)
    col_ids.append(rows[own] - start)
    if exclude is not None:
        for r in range(len(rows)):
            extra = np.asarray(exclude[offset + r], dtype=np.int64)
            extra = extra[(extra >= start) & (extra < stop)]
            if len(extra):
                row_ids.append(np.full(len(extra), r))
                col_ids.append(extra - start)
    r = np.concatenate(row_ids)
    if not len(r):
        return chunk
    c = np.concatenate(col_ids)
    updates = tf.fill([len(r)], tf.constant(_EXCLUDED, tf.float32))
    return tf.tensor_scatter_nd_update(chunk, np.stack([r, c], axis=1), updates)
