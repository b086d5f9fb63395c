"""Benchmark of the export's exact rankings: their TF-IDF term and their top-k, each against the
way the export computed it before.

A blend with a TF-IDF term or cold slots ranks the whole corpus for every query it serves
(exporter.SimilarItemsModule). Its two costs besides the [B, N] product of embeddings:

1. The [B, N] TF-IDF cosines, two ways, timed on the same corpus and queries and checked to
agree:
  "sparse_dense_matmul": the corpus matrix [N, V] as a SparseTensor times the queries as dense
      [B, V] vectors: a pass over the matrix's non-zeros, slowly growing with B;
  "postings": the posting lists (the matrix by column) of each query's few tokens gathered and
      summed into the scores (a segment sum over flattened [B * N] positions): work
      proportional to the lists' lengths times B;
  "postings_scatter_nd": the same sums as the export did them before, tf.scatter_nd at
      [M, 2] (row, item) indices.
tfidf.ContentVectors takes the postings up to POSTINGS_MAX_BATCH queries, the product above.


2. The top k of [B, N] scores: tf.math.top_k over the row against topk.exact_top_k (the top
chunk maxima first), on the same random scores, checked to be equal.

Prints JSON lines (and appends them to --out):
  {"figure": "content_similarity", "method", "batch", "queries", "seconds", "queries_per_s",
   "items", "tokens", "nonzeros", "postings_per_query"}
  {"figure": "content_similarity_speedup", "batch", "postings_speedup" (matmul / postings),
   "segment_sum_speedup" (postings_scatter_nd / postings), "max_abs_diff"}
  {"figure": "top_k", "method": "tf.math.top_k" | "exact_top_k", "batch", "k", "seconds_per_batch"}
  {"figure": "top_k_speedup", "batch", "k", "speedup", "equal"}
  {"figure": "exact_ranking_chunks", "batch", "chunk", "seconds_per_batch", "queries_per_s",
   "max_abs_diff_vs_first", "same_indices_vs_first"}                    3. a batch's whole exact ranking (cosines with random
                                       64-d embeddings + TF-IDF, top k) at once and in row chunks
                                       of exporter.EXACT_CHUNK's kind, scores and top-k positions compared with the first.

The corpus is read from --data_dir (its TF-IDF, tfidf.build) or, without it, made up: --num_items
items, each with one value of a 100-value and of a 1,000-value categorical feature and 2 to 6
words of an 8,000-word Zipf vocabulary (the shape of the synthetic source at 1M items).

  .venv/bin/python bench/exact_ranking.py [--num_items=1000000] [--batches=1,100]
      [--data_dir=runs/scale/data] [--out=results/bench/exact_ranking.json]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval.compat import tf  # noqa: E402
from ssl_retrieval.ranking import tfidf, topk  # noqa: E402
from ssl_retrieval.serving import exporter  # noqa: E402


def made_up_corpus(num_items: int, seed: int = 0) -> tfidf.Tfidf:
    rng = np.random.default_rng(seed)
    words = 8000
    zipf = 1.0 / np.arange(1, words + 1)
    zipf /= zipf.sum()
    category = rng.integers(0, 100, num_items)
    brand = rng.integers(0, 1000, num_items)
    lengths = rng.integers(2, 7, num_items)
    title = rng.choice(words, size=int(lengths.sum()), p=zipf)
    token_sets = []
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(num_items):
        tokens = {f"category={category[i]}", f"brand={brand[i]}"}
        tokens.update(f"title={w}" for w in title[starts[i] : starts[i + 1]])
        token_sets.append(tokens)
    return tfidf.from_token_sets(["category", "brand", "title"], token_sets)


def postings_by_scatter_nd(vectors: tfidf.ContentVectors, queries):
    """The posting-list cosines as the export summed them before: scatter_nd at [M, 2] indices
    (the export now takes a segment sum over flattened positions)."""
    rows, items, weights = vectors.posting_entries(queries)
    shape = [tf.shape(queries)[0], vectors.num_items]
    return tf.scatter_nd(tf.stack([rows, items], axis=1), weights, shape)


def timed(fn, batches):
    fn(batches[0])  # trace and warm up
    start = time.perf_counter()
    for batch in batches:
        fn(batch).numpy()
    return time.perf_counter() - start


def top_k_lines(n: int, batches: list[int], k: int, repeats: int = 5) -> list[dict]:
    rng = np.random.default_rng(2)
    lines = []
    for batch in batches:
        scores = tf.constant(rng.standard_normal((batch, n), dtype=np.float32))
        plain = tf.function(lambda s: tf.math.top_k(s, k))
        chunked = tf.function(lambda s: topk.exact_top_k(s, k))
        seconds = {}
        for method, fn in (("tf.math.top_k", plain), ("exact_top_k", chunked)):
            fn(scores)
            start = time.perf_counter()
            for _ in range(repeats):
                fn(scores)[0].numpy()
            seconds[method] = (time.perf_counter() - start) / repeats
            lines.append(
                {
                    "figure": "top_k",
                    "method": method,
                    "batch": batch,
                    "k": k,
                    "items": n,
                    "seconds_per_batch": round(seconds[method], 4),
                }
            )
        a, b = plain(scores), chunked(scores)
        equal = bool(
            np.array_equal(a.values.numpy(), b[0].numpy())
            and np.array_equal(a.indices.numpy(), b[1].numpy())
        )
        lines.append(
            {
                "figure": "top_k_speedup",
                "batch": batch,
                "k": k,
                "speedup": round(seconds["tf.math.top_k"] / seconds["exact_top_k"], 1),
                "equal": equal,
            }
        )
    return lines


def chunk_lines(vectors, n: int, batch: int, chunks: list[int], k: int, dim: int = 64) -> list:
    """The export's exact ranking of `batch` queries (cosines with every item + TF-IDF cosines,
    top k) in one piece and in row chunks (exporter._in_chunks, exporter.EXACT_CHUNK)."""
    rng = np.random.default_rng(3)
    items = tf.constant(rng.standard_normal((n, dim), dtype=np.float32))
    queries = tf.constant(rng.standard_normal((batch, dim), dtype=np.float32))
    rows = tf.constant(rng.choice(n, size=batch, replace=False), tf.int64)

    def rank(queries, rows):
        scores = tf.matmul(queries, items, transpose_b=True)
        scores += vectors.similarities(vectors.of_rows(rows))
        return list(topk.exact_top_k(scores, k))

    lines, results = [], {}
    for chunk in chunks:
        fn = tf.function(
            lambda q, r, c=chunk: exporter._in_chunks(rank, [q, r], [tf.float32, tf.int64], c)
        )
        fn(queries, rows)
        start = time.perf_counter()
        for _ in range(3):
            results[chunk] = [t.numpy() for t in fn(queries, rows)]
        seconds = (time.perf_counter() - start) / 3
        lines.append(
            {
                "figure": "exact_ranking_chunks",
                "batch": batch,
                "chunk": chunk,
                "items": n,
                "seconds_per_batch": round(seconds, 3),
                "queries_per_s": round(batch / seconds, 1),
                # The same to the last bits: matmul blocking and the TF-IDF method (postings
                # for small chunks) depend on the chunk.
                "max_abs_diff_vs_first": float(
                    np.abs(results[chunk][0] - results[chunks[0]][0]).max()
                ),
                "same_indices_vs_first": float(np.mean(results[chunk][1] == results[chunks[0]][1])),
            }
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_items", type=int, default=1_000_000)
    parser.add_argument("--data_dir", default=None, help="Use this data dir's corpus TF-IDF.")
    parser.add_argument("--batches", default="1,100", help="Query batch sizes to time.")
    parser.add_argument("--queries", type=int, default=400, help="Queries timed per batch size.")
    parser.add_argument("--k", type=int, default=101, help="Top-k size (the export's max_k + 1).")
    parser.add_argument(
        "--chunks",
        default="100,32,16,8,4",
        help="Row chunks of one batch of --chunk_batch queries ranked exactly (cosines, TF-IDF, "
        "top k): the first is the whole batch at once.",
    )
    parser.add_argument("--chunk_batch", type=int, default=100)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    content = tfidf.build(args.data_dir) if args.data_dir else made_up_corpus(args.num_items)
    matrix = content.matrix.tocsr()
    n, v = matrix.shape
    vectors = tfidf.ContentVectors(content)
    postings = np.diff(matrix.tocsc().indptr)
    rng = np.random.default_rng(1)

    @tf.function(reduce_retracing=True)
    def by_postings(rows):
        return vectors._by_postings(vectors.of_rows(rows))

    @tf.function(reduce_retracing=True)
    def by_postings_scatter_nd(rows):
        return postings_by_scatter_nd(vectors, vectors.of_rows(rows))

    @tf.function(reduce_retracing=True)
    def by_matmul(rows):
        return vectors._by_product(vectors.of_rows(rows))

    lines = []
    for batch in [int(b) for b in args.batches.split(",")]:
        rows = rng.choice(n, size=max(batch, args.queries // batch * batch), replace=False)
        batches = [tf.constant(rows[i : i + batch], tf.int64) for i in range(0, len(rows), batch)]
        per_query = float(np.mean([postings[matrix[r].indices].sum() for r in rows[:200]]))
        seconds = {}
        methods = (
            ("postings", by_postings),
            ("postings_scatter_nd", by_postings_scatter_nd),
            ("sparse_dense_matmul", by_matmul),
        )
        for method, fn in methods:
            seconds[method] = timed(fn, batches)
            lines.append(
                {
                    "figure": "content_similarity",
                    "method": method,
                    "batch": batch,
                    "queries": len(rows),
                    "seconds": round(seconds[method], 3),
                    "queries_per_s": round(len(rows) / seconds[method], 1),
                    "items": n,
                    "tokens": v,
                    "nonzeros": int(matrix.nnz),
                    "postings_per_query": round(per_query, 1),
                }
            )
        first = batches[0]
        expected = (matrix[first.numpy()] @ matrix.T).toarray()
        diff = max(float(np.abs(fn(first).numpy() - expected).max()) for _, fn in methods)
        lines.append(
            {
                "figure": "content_similarity_speedup",
                "batch": batch,
                "postings_speedup": round(seconds["sparse_dense_matmul"] / seconds["postings"], 1),
                "segment_sum_speedup": round(
                    seconds["postings_scatter_nd"] / seconds["postings"], 1
                ),
                "max_abs_diff": diff,
            }
        )
    lines += top_k_lines(n, [int(b) for b in args.batches.split(",")], k=args.k)
    chunks = [int(c) for c in args.chunks.split(",")]
    lines += chunk_lines(vectors, n, args.chunk_batch, chunks, k=args.k)
    for line in lines:
        print(json.dumps(line), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


if __name__ == "__main__":
    main()
