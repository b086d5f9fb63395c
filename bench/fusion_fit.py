"""Benchmark of fitting the fused rankings of one blend choice: the candidate pairs and their
features computed once and each fit taking its rows (`fusion.Pairs`, since this benchmark)
against computed again for every fit (before: the full fit and the two folds' fits, for the
fused ranking without and with the two-step paths, six feature computations per choice).

Prints JSON lines, measured in this run on the same corpus, links and validation pairs:
  {"figure": "fusion_fits", "method": "pairs_once" | "pairs_per_fit", "seconds", ...}
  {"figure": "comparison", "speedup", "same_weights"}

The corpus is random, with the Debian corpus's shape: unit embeddings, Zipf training counts, a
TF-IDF matrix with about 11 non-zeros per item, training links with a power-law in-degree,
and 2,000 validation queries with a few candidates each. The candidate lists are random items
(the fit's cost is in the pairs' features, not in where the candidates come from).

  .venv/bin/python bench/fusion_fit.py [--num_items=63436] [--num_queries=2000]
"""

import argparse
import json
import os
import sys
import time
import types

import numpy as np
from scipy import sparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_retrieval.ranking import fusion  # noqa: E402


def emit(**fields):
    print(json.dumps(fields), flush=True)


def make_inputs(args, rng):
    n = args.num_items
    embeddings = rng.normal(size=(n, args.dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    counts = rng.zipf(1.5, size=n).clip(max=10**6) - 1
    rows = np.repeat(np.arange(n), args.nnz_per_item)
    cols = rng.integers(args.values, size=len(rows))
    content = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, args.values))
    content = sparse.diags(1 / np.sqrt(content.multiply(content).sum(axis=1)).A1) @ content
    # Links: each item links to a few others, the targets drawn by a power law.
    sources = rng.integers(n, size=args.links)
    targets = (rng.pareto(1.2, size=args.links) * 50).astype(np.int64) % n
    links = sparse.csr_matrix((np.ones(args.links), (sources, targets)), shape=(n, n))
    corpus = types.SimpleNamespace(
        query_embeddings=embeddings,
        item_embeddings=embeddings,
        log_counts=np.log1p(counts).astype(np.float32),
        content=content,
        links=links + links.T,
    )
    queries = np.sort(rng.choice(n, size=args.num_queries, replace=False))
    lists = rng.integers(n, size=(len(queries), args.candidates))
    # Each query's validation candidates: three of its own candidates, so there are positives.
    picked = lists[:, :3]
    data = types.SimpleNamespace(
        eval_query=np.repeat(queries, 3),
        eval_candidate=picked.ravel(),
        head=counts >= np.quantile(counts, 0.9),
        cold=counts == 0,
    )
    return corpus, data, queries, lists


def pairs_once(corpus, data, queries, lists, fold_of):
    pairs = fusion.Pairs.of(corpus, data, lists, queries, paths=True)
    out = []
    for two_hop in (False, True):
        out.append(fusion.fit(pairs, two_hop))
        out += fusion.fit_out_of_fold(pairs, queries, fold_of, two_hop)
    return out


def pairs_per_fit(corpus, data, queries, lists, fold_of):
    out = []
    for two_hop in (False, True):
        whole = fusion.Pairs.of(corpus, data, lists, queries, paths=two_hop)
        out.append(fusion.fit(whole, two_hop))
        for f in range(int(fold_of.max()) + 1):
            others = fold_of != f
            fold = fusion.Pairs.of(corpus, data, lists[others], queries[others], paths=two_hop)
            out.append(fusion.fit(fold, two_hop))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=63436)
    parser.add_argument("--num_queries", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=800, help="per query (8 lists of 100)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--values", type=int, default=200_000, help="TF-IDF vocabulary size")
    parser.add_argument("--nnz_per_item", type=int, default=11)
    parser.add_argument("--links", type=int, default=295_000)
    args = parser.parse_args()
    corpus, data, queries, lists = make_inputs(args, np.random.default_rng(0))
    fold_of = fusion.folds(queries)
    results = {}
    for name, method in (("pairs_once", pairs_once), ("pairs_per_fit", pairs_per_fit)):
        start = time.perf_counter()
        results[name] = method(corpus, data, queries, lists, fold_of)
        seconds = time.perf_counter() - start
        emit(figure="fusion_fits", method=name, seconds=round(seconds, 2), fits=6, **vars(args))
        results[name + "_seconds"] = seconds
    same = all(
        np.allclose(a, b, rtol=1e-6, atol=1e-9)
        for a, b in zip(results["pairs_once"], results["pairs_per_fit"], strict=True)
    )
    emit(
        figure="comparison",
        speedup=round(results["pairs_per_fit_seconds"] / results["pairs_once_seconds"], 2),
        same_weights=bool(same),
    )


if __name__ == "__main__":
    main()
