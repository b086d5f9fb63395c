"""Benchmark of the link graph's terms in the SavedModel's graph (`links.LinkRows`), per batch of
queries: the item-kNN score and the two-step paths by gathering the rows of each query's
profile (what the export does) against the sparse-dense product of the whole matrix with the
profiles (the first implementations).

Prints JSON lines, measured in this run on the same links and similarity:
  {"figure": "link_terms", "term", "method", "batch", "ms"}: milliseconds per batch
  {"figure": "comparison", "term", "batch", "speedup", "same_scores"}

The links are random with the Debian index's shape (63,436 items, 295,000 links, targets drawn
by a power law), the similarity `links.knn_similarity` of them (BM25, 200 neighbours per item).

  .venv/bin/python bench/link_terms.py [--num_items=63436] [--links=295000] [--repeats=20]

With --similarity_only it builds the similarity alone (the product does not fit at a million
items: it is dense [N, batch]) and prints its build time and size beside the links' own, with the
sum over linked items of their degree squared, the pairs implicit's BM25 visits:
  .venv/bin/python bench/link_terms.py --similarity_only --num_items=1000000 --links=10000000
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import sparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval.compat import tf  # noqa: E402
from ssl_retrieval.ranking import links as links_lib  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def knn_by_product(rows_module, similarity: sparse.csr_matrix):
    """The first implementation: S^T times the dense profiles, [N, N] x [N, B]."""
    coo = similarity.tocoo()
    matrix = tf.sparse.SparseTensor(
        np.stack([coo.row, coo.col], axis=1).astype(np.int64),
        coo.data.astype(np.float32),
        similarity.shape,
    )

    @tf.function
    def log_knn(rows):
        counts = tf.math.expm1(rows_module.log_links(rows))
        own = tf.one_hot(tf.maximum(rows, 0), similarity.shape[0], dtype=tf.float32)
        profiles = counts + own * tf.cast(rows >= 0, tf.float32)[:, tf.newaxis]
        knn = tf.sparse.sparse_dense_matmul(matrix, profiles, adjoint_a=True, adjoint_b=True)
        return tf.math.log1p(tf.maximum(tf.transpose(knn), 0.0))

    return log_knn


def paths_by_product(rows_module, counts: sparse.csr_matrix):
    """The first implementation of the paths: the links' indicator times the dense profiles."""
    coo = counts.tocoo()
    matrix = tf.sparse.SparseTensor(
        np.stack([coo.row, coo.col], axis=1).astype(np.int64),
        np.ones(coo.nnz, np.float32),
        counts.shape,
    )

    @tf.function
    def log_paths(rows):
        linked = tf.cast(rows_module.log_links(rows) > 0, tf.float32)
        paths = tf.sparse.sparse_dense_matmul(matrix, linked, adjoint_b=True)
        return tf.math.log1p(tf.transpose(paths))

    return log_paths


def timed(function, rows, repeats: int) -> tuple[float, np.ndarray]:
    out = function(rows).numpy()  # traced and warmed up
    start = time.perf_counter()
    for _ in range(repeats):
        function(rows)
    return (time.perf_counter() - start) / repeats * 1000, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=63436)
    parser.add_argument("--links", type=int, default=295_000)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--similarity_only", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.num_items
    sources = rng.integers(n, size=args.links)
    targets = (rng.pareto(1.2, size=args.links) * 50).astype(np.int64) % n
    counts = links_lib.matrix(sources, targets, n)
    start = time.perf_counter()
    similarity = links_lib.knn_similarity(counts)
    degrees = np.diff(counts.indptr)
    emit(
        figure="similarity",
        num_items=n,
        links=args.links,
        seconds=round(time.perf_counter() - start, 2),
        nnz=int(similarity.nnz),
        mb=round((similarity.nnz * 12 + (n + 1) * 8) / 2**20, 1),
        links_mb=round((counts.nnz * 12 + (n + 1) * 8) / 2**20, 1),
        max_degree=int(degrees.max()),
        pairs_visited=int(links_lib.knn_pairs(counts)),
    )
    if args.similarity_only:
        return
    module = links_lib.LinkRows(counts, similarity)
    functions = {
        ("knn", "gather"): tf.function(module.log_knn),
        ("knn", "product"): knn_by_product(module, similarity),
        ("paths", "gather"): tf.function(module.log_paths),
        ("paths", "product"): paths_by_product(module, counts),
    }
    for batch in [int(b) for b in args.batches.split(",")]:
        rows = tf.constant(rng.integers(n, size=batch), tf.int64)
        results = {}
        for (term, method), function in functions.items():
            ms, out = timed(function, rows, args.repeats)
            results[term, method] = (ms, out)
            emit(figure="link_terms", term=term, method=method, batch=batch, ms=round(ms, 2))
        for term in ("knn", "paths"):
            (fast, a), (slow, b) = results[term, "gather"], results[term, "product"]
            same = bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))
            speedup = round(slow / fast, 1)
            emit(figure="comparison", term=term, batch=batch, speedup=speedup, same_scores=same)


if __name__ == "__main__":
    main()
