"""Benchmark of choosing the blend: the grid's 15 rankings in one pass over the corpus against
one pass per ranking (what training did before `topk.top_k_many`), and the grid's merges with
the lists' positions found once per set of lists against once per merge.

Prints JSON lines, measured in this run on the same embeddings, counts and TF-IDF matrix:
  {"figure": "blend_rankings", "method": "one_pass" | "pass_per_ranking", "seconds", ...}
  {"figure": "comparison", "speedup", "same_lists", "goal": ">= 3"}
  {"figure": "grid_merges", "merge_seconds", "merger_seconds", "speedup", "same_lists"}: the
    grid's merges of each (popular, similar) pair by a fresh `merge.Lists` per merge and by one
    `merge.Lists` per pair
  {"figure": "merge_walk", "eager_seconds", "graph_seconds", "speedup", "same_lists"}: the same
    merges (one `merge.Lists` per pair) with the walk run op by op and as one traced graph (what
    `merge.Lists.merge` does when called eagerly)

Embeddings are random unit vectors, training counts Zipf, the TF-IDF matrix a random sparse
one with the Debian corpus's density (about 11 non-zeros per item over 200k values). The
rankings are the default grid: 6 popular (beta) and 9 similar (w, gamma).

  .venv/bin/python bench/blend.py [--num_items=63436] [--num_queries=2000] [--dim=64]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import sparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval.ranking import blend as blend_lib  # noqa: E402
from ssl_retrieval.ranking import config, merge, retrieve, scores, topk  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=63436)
    parser.add_argument("--num_queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--values", type=int, default=200_000, help="TF-IDF vocabulary size")
    parser.add_argument("--nnz_per_item", type=int, default=11)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.num_items
    embeddings = rng.normal(size=(n, args.dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    log_counts = np.log1p(rng.zipf(1.5, size=n).clip(max=10**6) - 1).astype(np.float32)
    rows = np.repeat(np.arange(n), args.nnz_per_item)
    cols = rng.integers(args.values, size=len(rows))
    content = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, args.values))
    norms = np.sqrt(content.multiply(content).sum(axis=1)).A1
    content = sparse.diags(1 / norms) @ content
    queries = rng.choice(n, size=args.num_queries, replace=False)
    rankings = {("popular", b): scores.popular(b) for b in config.DEFAULT_BETAS}
    for w in config.DEFAULT_CONTENT_WEIGHTS:
        for gamma in config.DEFAULT_POPULARITY_PENALTIES:
            rankings["similar", w, gamma] = scores.similar(w, gamma)
    corpus = retrieve.Corpus(embeddings, embeddings, log_counts, content)
    scorer = retrieve.scorer(corpus, rankings)
    topk.top_k_many(scorer, queries[:8], n, 50)  # warm-up: tf.function tracing, not timed

    together, one_pass = timed(lambda: topk.top_k_many(scorer, queries, n, 50))
    emit(
        figure="blend_rankings",
        method="one_pass",
        seconds=round(one_pass, 2),
        rankings=len(rankings),
    )

    apart, per_ranking = timed(
        lambda: {
            name: retrieve.top_lists(corpus, {name: ranking}, queries, 50)[name]
            for name, ranking in rankings.items()
        }
    )
    emit(figure="blend_rankings", method="pass_per_ranking", seconds=round(per_ranking, 2))

    same = all(np.array_equal(together[r][0], apart[r][0]) for r in rankings)
    emit(
        figure="comparison",
        num_items=n,
        num_queries=args.num_queries,
        speedup=round(per_ranking / one_pass, 2),
        same_lists=same,
        goal=">= 3",
    )

    # The grid's merges: every prior share of each (popular, similar) pair, with a fresh
    # `merge.Lists` per merge (positions found each time) and with one per pair.
    pairs = [(r, s) for r in rankings if r[0] == "popular" for s in rankings if s[0] == "similar"]
    blends = [
        blend_lib.Blend(prior_share=share) for share in config.DEFAULT_PRIOR_SHARES if share < 1
    ]

    def lists(p, s):
        return merge.Lists({"popular": together[p][0], "similar": together[s][0]})

    def merged(ks=(50,)):
        """The grid's lists of each k, one `merge.Lists` per pair."""
        out = []
        for p, s in pairs:
            pair = lists(p, s)
            out += [pair.merge(b.segments(k), k).indices.numpy() for b in blends for k in ks]
        return out

    fresh, fresh_seconds = timed(
        lambda: [
            lists(p, s).merge(b.segments(50), 50).indices.numpy() for p, s in pairs for b in blends
        ]
    )
    shared, shared_seconds = timed(merged)
    emit(
        figure="grid_merges",
        merges=len(fresh),
        merge_seconds=round(fresh_seconds, 2),
        merger_seconds=round(shared_seconds, 2),
        speedup=round(fresh_seconds / shared_seconds, 2),
        same_lists=same_lists(fresh, shared),
    )

    # The walk op by op against as one graph per sequence of rankings (traced before timing).
    merged((10, 50))
    graph, graph_seconds = timed(lambda: merged((10, 50)))
    compiled, merge._compiled_walk = merge._compiled_walk, merge._walk
    try:
        eager, eager_seconds = timed(lambda: merged((10, 50)))
    finally:
        merge._compiled_walk = compiled
    emit(
        figure="merge_walk",
        merges=len(graph),
        eager_seconds=round(eager_seconds, 2),
        graph_seconds=round(graph_seconds, 2),
        speedup=round(eager_seconds / graph_seconds, 2),
        same_lists=same_lists(eager, graph),
    )


def timed(run):
    """(what `run()` returns, its wall-clock seconds)."""
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def same_lists(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


if __name__ == "__main__":
    main()
