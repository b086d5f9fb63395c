"""Nearest-neighbour indexes over item embeddings: ScaNN, and brute force as fallback/reference.

Both are `tf.Module`s with `search(queries [B, d], k) -> (scores [B, k], indices [B, k])` by dot
product (embeddings are unit vectors, so this is cosine), and both save inside a SavedModel.
ScaNN (Guo et al. 2020) is a tree partitioning (about sqrt(N) leaves), asymmetric hashing with
anisotropic quantisation (threshold 0.2) and exact re-ordering of the best candidates, built with
`scann.scann_ops` directly (TFRS's ScaNN layer does not expose the anisotropic threshold) and
saved the way TFRS saves it: the searcher's state as variables, the handle recreated on load.
A SavedModel holding it needs `import scann` before `tf.saved_model.load` in the process.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from ssl_retrieval import progress_bar
from ssl_retrieval.compat import tf
from ssl_retrieval.ranking import topk
from ssl_retrieval.serving.config import ScannParams

DEFAULT_SCANN = ScannParams()


class BruteForceIndex(tf.Module):
    """Exact dot-product top-k (matmul + top_k)."""

    kind = "brute_force"

    def __init__(self, embeddings: np.ndarray):
        super().__init__()
        self.embeddings = tf.Variable(embeddings.astype(np.float32), trainable=False)
        self.params = {}

    def search(self, queries, k):
        scores = tf.matmul(queries, self.embeddings, transpose_b=True)
        values, indices = tf.math.top_k(scores, k=k)
        return values, tf.cast(indices, tf.int64)


class ScannIndex(tf.Module):
    """ScaNN index over `embeddings` [N, d]; `k` at search is capped by the build's `max_k`."""

    kind = "scann"

    def __init__(self, embeddings: np.ndarray, max_k: int, params: ScannParams = DEFAULT_SCANN):
        super().__init__()
        import scann  # noqa: F401, PLC0415  (registers the ScaNN ops)
        from scann.scann_ops.py import scann_ops  # noqa: PLC0415

        n = embeddings.shape[0]
        self.params = params.resolved(n)
        p = self.params
        start = time.time()
        builder = scann_ops.builder(embeddings.astype(np.float32), max_k, "dot_product")
        if n >= 2 * p["num_leaves"] and p["num_leaves"] > 1:
            builder = builder.tree(
                num_leaves=p["num_leaves"],
                num_leaves_to_search=p["num_leaves_to_search"],
                training_sample_size=p["training_sample_size"],
            )
        builder = builder.score_ah(
            p["dimensions_per_block"],
            anisotropic_quantization_threshold=p["anisotropic_quantization_threshold"],
        ).reorder(max(p["reorder"], max_k))
        searcher = builder.build(shared_name=f"ssl_retrieval/{uuid.uuid4()}")
        self.build_seconds = time.time() - start
        self.state = searcher.serialize_to_module()
        self._searcher = None

    def search(self, queries, k):
        from scann.scann_ops.py import scann_ops  # noqa: PLC0415

        searcher = scann_ops.searcher_from_module(self.state)
        result = searcher.search_batched_parallel(queries, final_num_neighbors=k)
        return result.distances, tf.cast(result.indices, tf.int64)


def build(kind: str, embeddings: np.ndarray, max_k: int, params: ScannParams = DEFAULT_SCANN):
    """The index of `kind` ("scann" or "brute_force") with its build time in `build_seconds`."""
    if kind == "brute_force":
        start = time.time()
        index = BruteForceIndex(embeddings)
        index.build_seconds = time.time() - start
        return index
    if kind == "scann":
        return ScannIndex(embeddings, max_k, params)
    raise ValueError(f"--index must be scann or brute_force, got {kind!r}")


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int, chunk: int = 64):
    """Indices [Q, k] of each query's k highest dot products, best first (`topk.exact_top_k`
    of each chunk's products: a chunk of 64 queries holds a [64, N] matrix, 256 MB at 1M). Its
    progress is a bar ("brute force", queries): at 1M items, the slow half of a recall check."""
    items = topk.as_tensor(embeddings)  # no copy
    k = min(k, len(embeddings))
    out = [np.zeros((0, k), np.int64)]
    with progress_bar.Bar("brute force", len(queries), "queries") as bar:
        for start in range(0, len(queries), chunk):
            scores = tf.matmul(
                tf.constant(queries[start : start + chunk], tf.float32), items, transpose_b=True
            )
            out.append(topk.exact_top_k(scores, k)[1].numpy())
            bar.update(len(out[-1]))
    return np.concatenate(out)


def recall_against_brute_force(index, embeddings: np.ndarray, queries: np.ndarray, k: int = 10):
    """Mean |approx top k ∩ exact top k| / k over `queries` [Q, d].

    The exact top k is computed `chunk` queries at a time: a [1000, 1M] score matrix would be
    4 GB, a chunk of 64 is 256 MB."""
    truth = exact_top_k(embeddings, queries, k)
    _, approx = index.search(tf.constant(queries, tf.float32), k)
    approx = approx.numpy()
    overlap = [len(set(a) & set(t)) for a, t in zip(approx, truth, strict=True)]
    return float(np.mean(overlap) / k)
