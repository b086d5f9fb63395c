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

    .venv/bin/python results/head_frontier/synthetic_bound.py \
        --data_dir=runs/synthetic/data > results/head_frontier/synthetic_bound.jsonl

It prints one JSON line per (split, tail slots, zero-count slots) with Recall@10 per slice, as
the evaluator computes it (`evaluator.list_scorer`).
"""

from __future__ import annotations

import argparse
import json

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


def sweep(data_dir: str, split: str, num_clusters: int, max_slots: int):
    data = evaluator.load_eval_data(data_dir, split)
    cluster, orders = cluster_orders(data, num_clusters)
    known: dict[int, set] = {}
    for query, candidate in zip(data.train_query, data.train_candidate, strict=True):
        known.setdefault(int(query), set()).add(int(candidate))
    queries = np.unique(data.eval_query)
    score = evaluator.list_scorer(data)
    for tail_slots in range(max_slots + 1):
        for zero_slots in range(max_slots + 1):
            lists = np.full((len(queries), K), -1)
            for row, query in enumerate(queries):
                skip = known.get(int(query), set()) | {int(query)}
                head, tail, zero = (
                    [item for item in part if item not in skip] for part in orders[cluster[query]]
                )
                picked = head[: K - tail_slots - zero_slots] + tail[:tail_slots] + zero[:zero_slots]
                lists[row, : len(picked)] = picked
            metrics = score(lists, [K])
            yield {
                "split": split,
                "tail_slots": tail_slots,
                "zero_count_slots": zero_slots,
                **{name: round(m[f"recall@{K}"], 4) for name, m in metrics.items()},
            }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="preprocessed synthetic data")
    parser.add_argument("--num_clusters", type=int, default=316, help="the generator's clusters")
    parser.add_argument("--max_slots", type=int, default=4, help="largest slots of each kind")
    args = parser.parse_args()
    for split in ("validation", "eval"):
        for row in sweep(args.data_dir, split, args.num_clusters, args.max_slots):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
