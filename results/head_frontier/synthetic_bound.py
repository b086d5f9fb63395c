"""How much of `synthetic`'s tail and cold slices any list of ten can hold beside its head.

The generator (ssl_retrieval/sources/synthetic.py) draws a pair's candidate from the query's
cluster (prob. 0.9) by a Zipf law over the item's rank in the cluster, and an item's features
depend on its cluster only. So, given what a recommender sees (features and training counts),
the items of a cluster with the same training count are exchangeable, and the best list it can
make is the query's cluster ordered by training count, minus the query's own training
candidates (a split by pair puts a repeated pair in one split, so a known link is not a held-out
one). This script builds that list from the generator's true cluster (the features name it: the
TF-IDF nearest zero-count item of 2,000 sampled items is always in their cluster) and sweeps
the slots it gives to the best non-head items and to random zero-count items of the cluster:
the trade between the head and the other slices at Recall@10.

    .venv/bin/python results/head_frontier/synthetic_bound.py --raw_dir=runs/synthetic/raw \
        --data_dir=runs/synthetic/data > results/head_frontier/synthetic_bound.jsonl

It prints one JSON line per (split, tail slots, zero-count slots) with Recall@10 per slice, as
the evaluator computes it (`evaluator.list_scorer`).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ssl_retrieval.evaluation import evaluator

K = 10


def cluster_orders(data, num_clusters: int, seed: int = 0):
    """{cluster: (head items, other items with counts, zero-count items)}, each best first."""
    index = np.array([int(item_id[1:]) for item_id in data.item_ids])
    cluster = index % num_clusters
    counts = np.bincount(data.train_candidate, minlength=len(index))
    tie = np.random.default_rng(seed).random(len(index))
    orders = {}
    for c in range(num_clusters):
        members = np.flatnonzero(cluster == c)
        members = members[np.lexsort((tie[members], -counts[members]))]
        head = data.head[members]
        orders[c] = (
            members[head],
            members[~head & (counts[members] > 0)],
            members[counts[members] == 0],
        )
    return cluster, orders


def best_lists(data, num_clusters: int) -> np.ndarray:
    """[Q, 3, K] per eval query (sorted): the first K of its cluster's head, other counted and
    zero-count items (`cluster_orders`), without the query and its training candidates; -1 pads."""
    cluster, orders = cluster_orders(data, num_clusters)
    known: dict[int, set] = {}
    for query, candidate in zip(data.train_query, data.train_candidate, strict=True):
        known.setdefault(int(query), set()).add(int(candidate))
    queries = np.unique(data.eval_query)
    out = np.full((len(queries), 3, K), -1)
    for row, query in enumerate(queries):
        skip = known.get(int(query), set()) | {int(query)}
        for part, items in enumerate(orders[cluster[query]]):
            kept = [item for item in items[: K + len(skip)] if item not in skip][:K]
            out[row, part, : len(kept)] = kept
    return out


def sweep(data_dir: str, split: str, num_clusters: int, max_slots: int):
    data = evaluator.load_eval_data(data_dir, split)
    best = best_lists(data, num_clusters)
    score = evaluator.list_scorer(data)
    for tail_slots in range(max_slots + 1):
        for zero_slots in range(max_slots + 1):
            head_slots = K - tail_slots - zero_slots
            lists = np.concatenate(
                [best[:, 0, :head_slots], best[:, 1, :tail_slots], best[:, 2, :zero_slots]], axis=1
            )
            metrics = score(lists, [K])
            yield {
                "split": split,
                "tail_slots": tail_slots,
                "zero_count_slots": zero_slots,
                **{name: round(m[f"recall@{K}"], 4) for name, m in metrics.items()},
            }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw_dir", required=True, help="the source's raw data (summary.json)")
    parser.add_argument("--data_dir", required=True, help="its preprocessed data")
    parser.add_argument("--max_slots", type=int, default=4, help="largest slots of each kind")
    args = parser.parse_args()
    with open(os.path.join(args.raw_dir, "summary.json")) as f:
        num_clusters = json.load(f)["num_clusters"]
    for split in ("validation", "eval"):
        for row in sweep(args.data_dir, split, num_clusters, args.max_slots):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
