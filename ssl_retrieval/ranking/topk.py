"""Exact top-k: of a [B, N] score matrix (`exact_top_k`), and over the whole corpus in bounded
memory (`top_k`, `top_k_many`), for evaluation, the blend's choice and the export alike.

Every recommender (the neural model, TopPopular, feature kNN, co-occurrence) is a *scorer*:
`scores(query_indices, start, stop) -> [Q, stop - start]` scores of the queries against corpus
items start..stop-1. `top_k` walks the corpus in chunks and keeps a running top k per query, so
memory is O(query_batch * (corpus_chunk + k)) whatever the corpus size.

Exclusions: each query's own item is never retrieved; optional extra exclusions per query
(training positives, the filtered setting). Ties: the lower corpus index wins (tf.math.top_k keeps
the lower position first, and chunks are merged in corpus order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ssl_retrieval import progress_bar
from ssl_retrieval.compat import tf

Scorer = Callable[[np.ndarray, int, int], "np.ndarray | tf.Tensor"]
_EXCLUDED = -np.inf


def embedding_scorer(query_embeddings: np.ndarray, item_embeddings: np.ndarray) -> Scorer:
    """Cosine scorer (rows are unit vectors): q [N_q, d] of corpus items, items [N, d]."""
    items = as_tensor(item_embeddings)
    # Shared towers give one matrix for both: one tensor.
    queries = items if query_embeddings is item_embeddings else as_tensor(query_embeddings)

    def scores(query_indices, start, stop):
        q = tf.gather(queries, query_indices)
        return tf.matmul(q, items[start:stop], transpose_b=True)

    return scores


def as_tensor(array) -> tf.Tensor:
    """A float32 tensor that shares the memory of a float32, C-contiguous, 64-byte-aligned
    array (other arrays are copied into one first), through DLPack: tf.constant copies, and at
    1M x 128 it kept 1 GB for the 512 MB matrix. The array must not change afterwards."""
    array = np.asarray(array)
    if array.ndim != 2 or not array.size:
        return tf.constant(array, tf.float32)
    if not (
        array.dtype == np.float32
        and array.flags.c_contiguous
        and array.ctypes.data % _ALIGNMENT == 0
    ):
        nbytes = array.size * 4
        buffer = np.empty(nbytes + _ALIGNMENT, np.uint8)
        offset = -buffer.ctypes.data % _ALIGNMENT
        aligned = buffer[offset : offset + nbytes].view(np.float32).reshape(array.shape)
        aligned[...] = array
        array = aligned
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


_ALIGNMENT = 64  # what TensorFlow's CPU kernels check tensors for


def exact_top_k(scores, k, chunk: int = 1024):
    """tf.math.top_k(scores, k) of [B, N] scores, as (values, int64 indices), faster at N = 1M
    (`bench/exact_ranking.py`: 1.7x for one query, 2.4x for 16, 6.5x for 100; the machine was
    loaded by two training runs): the top k lie in the k chunks of `chunk` items with the largest
    maxima, so one reduce_max over the row and a top-k over k * chunk candidates replace the
    top-k over N. Ties keep the lower index first, as tf.math.top_k does (the chosen chunks are
    gathered in corpus order)."""
    batch, n = tf.shape(scores)[0], tf.shape(scores)[1]
    padded = tf.pad(scores, [[0, 0], [0, (-n) % chunk]], constant_values=float("-inf"))
    chunks = tf.reshape(padded, [batch, -1, chunk])
    picked = tf.minimum(k, tf.shape(chunks)[1])
    best = tf.sort(tf.math.top_k(tf.reduce_max(chunks, axis=2), picked).indices, axis=1)
    candidates = tf.reshape(tf.gather(chunks, best, batch_dims=1), [batch, -1])
    values, positions = tf.math.top_k(candidates, tf.minimum(k, n))
    indices = tf.gather(best, positions // chunk, batch_dims=1) * chunk + positions % chunk
    return values, tf.cast(indices, tf.int64)


@tf.function(reduce_retracing=True)
def _merge(best_values, best_indices, chunk_scores, start, k):
    values, indices = exact_top_k(chunk_scores, tf.minimum(k, tf.shape(chunk_scores)[1]))
    indices = indices + start
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
    **bounds,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus indices and scores for each query, the query item itself excluded.

    Args:
      scorer: see module docstring.
      query_indices: [Q] corpus index of each query item.
      num_items: corpus size N.
      k: how many to return (at most N - 1).
      exclude: optional, per query, corpus indices to leave out as well.
      **bounds: `top_k_many`'s query_batch and corpus_chunk (memory bounds).

    Returns:
      (indices [Q, k] int64, scores [Q, k] float32), best first; -1 / -inf where fewer than k
      items were left after the exclusions.
    """
    return top_k_many(
        lambda rows, start, stop: [(None, scorer(rows, start, stop))],
        query_indices,
        num_items,
        k,
        exclude,
        **bounds,
    )[None]


# (query corpus indices, start, stop) -> (ranking, [Q, stop - start] scores) pairs: several
# rankings that share work (one matrix product for all of them), scored in one pass over the
# corpus. An iterator, so that one ranking's chunk is alive at a time.
MultiScorer = Callable[[np.ndarray, int, int], Iterable]


def top_k_many(
    scorer: MultiScorer,
    query_indices: np.ndarray,
    num_items: int,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    query_batch: int = 1024,
    corpus_chunk: int = 32768,
) -> dict:
    """`top_k` of every ranking `scorer` returns, in one pass over the corpus: {ranking: (indices,
    scores)}. What the rankings share (the embeddings' product, the TF-IDF product) is computed
    once per chunk instead of once per ranking. Its progress is a bar ("retrieval", queries)."""
    query_indices = np.asarray(query_indices, dtype=np.int64)
    k = int(min(k, num_items - 1))
    out: dict = {}
    with progress_bar.Bar("retrieval", len(query_indices), "queries") as bar:
        for lo in range(0, len(query_indices), query_batch):
            rows = query_indices[lo : lo + query_batch]
            n = len(rows)
            best: dict = {}
            for start in range(0, num_items, corpus_chunk):
                stop = min(num_items, start + corpus_chunk)
                for key, chunk in scorer(rows, start, stop):
                    chunk = tf.cast(tf.convert_to_tensor(chunk), tf.float32)
                    chunk = _exclude(chunk, rows, start, stop, exclude, lo)
                    values, indices = best.get(
                        key, (tf.fill([n, 0], np.float32(0)), tf.zeros([n, 0], tf.int64))
                    )
                    best[key] = _merge(
                        values, indices, chunk, tf.constant(start, tf.int64), tf.constant(k)
                    )
            for key, (values, indices) in best.items():
                if key not in out:
                    out[key] = (
                        np.full((len(query_indices), k), -1, np.int64),
                        np.full((len(query_indices), k), -np.inf, np.float32),
                    )
                values, indices = values.numpy(), indices.numpy()
                indices[~np.isfinite(values)] = -1
                out[key][0][lo : lo + n, : indices.shape[1]] = indices
                out[key][1][lo : lo + n, : values.shape[1]] = values
            bar.update(n)
    if not len(query_indices):  # no batch ran: ask the scorer which rankings it has
        keys = [key for key, _ in scorer(query_indices, 0, min(1, num_items))]
        out = {key: (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)) for key in keys}
    return out


def exclude_own(chunk, rows, start, stop):
    """`chunk` with each query's own item at -inf: a scorer whose rankings share a term sets it
    there once (then `top_k_many` finds them excluded and does not copy each ranking's chunk)."""
    return _exclude(tf.convert_to_tensor(chunk), np.asarray(rows), start, stop, None, 0)


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
    positions = np.stack([r, c], axis=1)
    # Already excluded (`exclude_own`): no copy of the chunk.
    if (tf.gather_nd(chunk, positions).numpy() == _EXCLUDED).all():
        return chunk
    updates = tf.fill([len(r)], tf.constant(_EXCLUDED, chunk.dtype))
    return tf.tensor_scatter_nd_update(chunk, positions, updates)
