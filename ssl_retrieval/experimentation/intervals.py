"""Seed-paired statistics over results.jsonl records, shared by the report and the claims.

A record is one run: {"method", "fraction", "seed", "params", "metrics"} with metrics as the
evaluator writes them ({"all": {...}, "head": {...}, ...}). Intervals are 95% t intervals of the
mean over seeds; a comparison of two methods pairs their runs by seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

# Per query: the mean over queries of the share of their held-out candidates found. Per pair:
# the share of held-out pairs whose candidate is in its query's top K, the paper's metric (its
# appendix gives TopPopular Recall@K as the CDF of the K-th most frequent item, i.e. per pair).
COLUMN_NAMES = {
    "recall@10": "Recall@10 per query",
    "recall@50": "Recall@50 per query",
    "pair_recall@10": "Recall@10 per pair",
    "pair_recall@50": "Recall@50 per pair",
}


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n); the half-width is NaN for a single value."""
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(values[0]), float("nan"), 1
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half), n


def per_seed(results, fraction, method, slice_name="all", column="recall@50") -> dict:
    """seed -> the metric of `method`'s plain run (no sweep params) at `fraction`."""
    return {
        r["seed"]: r["metrics"][slice_name][column]
        for r in results
        if r["method"] == method
        and r["fraction"] == fraction
        and not r.get("params")
        and column in r["metrics"][slice_name]  # runs evaluated before a metric existed
    }


def paired(results, fraction, method, other, slice_name="all", column="recall@50") -> dict:
    """seed -> method - other, over the seeds both ran."""
    a = per_seed(results, fraction, method, slice_name, column)
    b = per_seed(results, fraction, other, slice_name, column)
    return {s: a[s] - b[s] for s in a.keys() & b.keys()}


def paired_differences(results, fraction, method, baseline, slice_name, column):
    """method - baseline over seed-matched runs: (mean, 95% half-width, n seeds).

    Seeds align data order and initialisation, so the paired difference removes the seed's
    share of the noise that an unpaired comparison of two intervals keeps.
    """
    return mean_ci(list(paired(results, fraction, method, baseline, slice_name, column).values()))


def verdict(mean: float, half: float, n: int) -> str:
    """'better' / 'worse' when the 95% interval excludes 0, else 'no difference shown'."""
    if n < 2 or math.isnan(half):
        return "too few seeds"
    if mean - half > 0:
        return "better"
    if mean + half < 0:
        return "worse"
    return "no difference shown"
