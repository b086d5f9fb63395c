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
    relevance = Relevance(retrieved.shape[0], query_of_pair, candidate_of_pair, slices)
    return relevance.compute(retrieved, ks)


class Relevance:
    """The eval pairs of Q queries, prepared once to score many lists of the same queries
    (choosing a blend scores over a thousand): `compute(retrieved, ks)` is `compute` above."""

    def __init__(self, num_queries: int, query_of_pair, candidate_of_pair, slices=None):
        query_of_pair = np.asarray(query_of_pair, np.int64)
        candidate_of_pair = np.asarray(candidate_of_pair, np.int64)
        self._all = _Pairs(num_queries, query_of_pair, candidate_of_pair)
        self._slices = {}
        for name, member in (slices or {}).items():
            keep = member[candidate_of_pair]
            pairs = _Pairs(num_queries, query_of_pair[keep], candidate_of_pair[keep])
            self._slices[name] = (member, pairs)

    def compute(self, retrieved: np.ndarray, ks: Sequence[int]) -> dict:
        hits = self._all.hits(retrieved)
        out = {"all": self._all.metrics(retrieved, ks, hits)}
        for name, (member, pairs) in self._slices.items():
            # A slice's hits are the hits on its members (its pairs are a subset of all pairs).
            in_slice = hits & member[np.maximum(retrieved, 0)]
            out[name] = pairs.metrics(retrieved, ks, in_slice)
        return out


class _Pairs:
    """One slice's pairs: the distinct (query, candidate) keys sorted, relevant items per query."""

    def __init__(self, num_queries: int, query_of_pair: np.ndarray, candidate_of_pair: np.ndarray):
        self.query_of_pair = query_of_pair
        self.candidate_of_pair = candidate_of_pair
        self.base = int(candidate_of_pair.max(initial=0)) + 1  # key = query * base + candidate
        self.keys = np.unique(query_of_pair * self.base + candidate_of_pair)
        self.relevant = np.bincount(self.keys // self.base, minlength=num_queries)
        self.used = self.relevant > 0

    def hits(self, retrieved: np.ndarray) -> np.ndarray:
        """[Q, K] bool: retrieved[q, r] is one of q's candidates."""
        if not len(self.keys):
            return np.zeros(retrieved.shape, bool)
        valid = (retrieved >= 0) & (retrieved < self.base)
        keys = np.arange(retrieved.shape[0])[:, None] * self.base + np.where(valid, retrieved, 0)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return valid & (self.keys[at] == keys)

    def metrics(self, retrieved: np.ndarray, ks: Sequence[int], hits: np.ndarray) -> dict:
        """Metrics of `retrieved` given its `hits` on these pairs."""
        result: dict = {"num_pairs": int(len(self.query_of_pair))}
        result["num_queries"] = int(self.used.sum())
        ranks = np.arange(1, retrieved.shape[1] + 1)
        precision = np.cumsum(hits, axis=1) / ranks
        # Position of each pair's candidate in its query's list (K_max if absent).
        positions = _positions(retrieved, self.query_of_pair, self.candidate_of_pair)
        relevant, used = self.relevant, self.used
        for k in ks:
            if k > retrieved.shape[1]:
                raise ValueError(f"k={k} exceeds the {retrieved.shape[1]} retrieved items")
            found = hits[:, :k].sum(axis=1)
            ap = (hits[:, :k] * precision[:, :k]).sum(axis=1) / np.maximum(
                np.minimum(relevant, k), 1
            )
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
