"""Recall@K and MAP@K over retrieved lists, overall and on item slices (paper 4.2, appendix .2).

Per query, the relevant set is its eval candidates (deduplicated). With hits[r] = 1 when the
item at rank r (from 1) is relevant:
  Recall@K = sum_{r<=K} hits[r] / |relevant|
  MAP@K    = sum_{r<=K} hits[r] * precision@r / min(|relevant|, K)
both averaged over queries. Per-pair recall@K is the share of eval pairs whose candidate is in
its query's top K (duplicate pairs count each time). A slice (head, tail, cold) restricts the
relevant sets to the slice's candidates; queries left without a relevant item are skipped, and
the number of queries used is reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _hits(retrieved: np.ndarray, query_of_pair: np.ndarray, candidate_of_pair: np.ndarray):
    """[Q, K] bool: retrieved[q, r] is one of q's (pair-listed) candidates."""
    num_items = int(max(retrieved.max(initial=0), candidate_of_pair.max(initial=0))) + 2
    relevant_keys = np.unique(query_of_pair * num_items + candidate_of_pair)
    q = np.arange(retrieved.shape[0])[:, None]
    keys = q * num_items + retrieved
    return np.isin(keys, relevant_keys) & (retrieved >= 0)


def compute(
    retrieved: np.ndarray,
    query_of_pair: np.ndarray,
    candidate_of_pair: np.ndarray,
    ks: Sequence[int],
    slices: dict[str, np.ndarray] | None = None,
) -> dict:
    """Metrics of retrieved lists against eval pairs.

    Args:
      retrieved: [Q, K_max] corpus indices, best first (-1 = nothing).
      query_of_pair: [P] row of `retrieved` (query number) of each eval pair.
      candidate_of_pair: [P] corpus index of each eval pair's candidate.
      ks: cut-offs, each <= K_max.
      slices: name -> [N] bool over corpus indices (is the candidate in the slice).

    Returns:
      {"all": metrics, "<slice>": metrics, ...}, metrics = {"recall@K", "map@K",
      "pair_recall@K", "num_queries", "num_pairs"}.
    """
    query_of_pair = np.asarray(query_of_pair, np.int64)
    candidate_of_pair = np.asarray(candidate_of_pair, np.int64)
    out = {"all": _compute_one(retrieved, query_of_pair, candidate_of_pair, ks, None)}
    for name, member in (slices or {}).items():
        keep = member[candidate_of_pair]
        out[name] = _compute_one(
            retrieved, query_of_pair[keep], candidate_of_pair[keep], ks, member
        )
    return out


def _compute_one(retrieved, query_of_pair, candidate_of_pair, ks, member):
    num_queries = retrieved.shape[0]
    result: dict = {"num_pairs": int(len(query_of_pair))}
    unique_pairs = np.unique(np.stack([query_of_pair, candidate_of_pair], axis=1), axis=0)
    relevant = (
        np.bincount(unique_pairs[:, 0], minlength=num_queries)
        if len(unique_pairs)
        else (np.zeros(num_queries, np.int64))
    )
    used = relevant > 0
    result["num_queries"] = int(used.sum())
    hits = _hits(retrieved, query_of_pair, candidate_of_pair)
    if member is not None:
        hits &= member[np.maximum(retrieved, 0)] & (retrieved >= 0)
    ranks = np.arange(1, retrieved.shape[1] + 1)
    precision = np.cumsum(hits, axis=1) / ranks
    # Position of each pair's candidate in its query's list (K_max if absent).
    positions = _positions(retrieved, query_of_pair, candidate_of_pair)
    for k in ks:
        if k > retrieved.shape[1]:
            raise ValueError(f"k={k} exceeds the {retrieved.shape[1]} retrieved items")
        found = hits[:, :k].sum(axis=1)
        ap = (hits[:, :k] * precision[:, :k]).sum(axis=1) / np.maximum(np.minimum(relevant, k), 1)
        if result["num_queries"]:
            result[f"recall@{k}"] = float((found[used] / relevant[used]).mean())
            result[f"map@{k}"] = float(ap[used].mean())
        else:
            result[f"recall@{k}"] = result[f"map@{k}"] = float("nan")
        result[f"pair_recall@{k}"] = (
            float((positions < k).mean()) if len(positions) else float("nan")
        )
    return result


def _positions(retrieved, query_of_pair, candidate_of_pair):
    if not len(query_of_pair):
        return np.zeros(0, np.int64)
    rows = retrieved[query_of_pair]
    match = rows == candidate_of_pair[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), retrieved.shape[1])
