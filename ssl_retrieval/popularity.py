"""A popularity prior added at retrieval time: score(q, c) = cos(q, c) + beta * log(1 + n_c).

Trained with the plain in-batch softmax, a two-tower model learns roughly the pointwise mutual
information of query and candidate: popular candidates are in-batch negatives in proportion to
their popularity, so the model learns to demote them (Yi et al. 2019). That is what makes its
tail and cold neighbours good, and it is why it misses the hubs (libc6, python3) that most
held-out links of a power-law graph point to. The logQ correction puts popularity back during
training, into the embeddings, and the tail pays for it. Adding it back at retrieval instead
keeps the embeddings as they are and makes the trade-off one number, beta, chosen on validation
(`choose_beta`) and changeable at serving time without retraining.

`n_c` is the number of training pairs whose candidate is c (`stats/candidate_counts.tsv`): items
never seen as a candidate get no boost. The prior is an extra dimension: queries [q, beta] and
items [c, log(1 + n_c)] under the inner product, so exact search and ScaNN (dot product) serve it
like any embedding.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ssl_retrieval import atomic

FILE = "popularity_prior.json"
DEFAULT_GRID = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)
OBJECTIVES = ("slices", "all")
SLICES = ("all", "head", "tail", "cold")


def log_counts(data_dir: str, item_ids) -> np.ndarray:
    """[N] float32 log(1 + training-candidate count) of each id of `item_ids`."""
    from ssl_retrieval import model as model_lib  # noqa: PLC0415  (imports TensorFlow)

    ids, shares, total = model_lib.candidate_counts(data_dir)
    counts = dict(zip(ids, (s * total for s in shares), strict=True))
    return np.log1p(np.array([counts.get(str(i), 0.0) for i in item_ids], np.float32))


def augment(queries: np.ndarray, items: np.ndarray, prior: np.ndarray, beta: float):
    """([Nq, d + 1], [N, d + 1]) whose inner products are cos + beta * prior."""
    queries = np.concatenate([queries, np.full((len(queries), 1), beta, np.float32)], axis=1)
    items = np.concatenate([items, prior.astype(np.float32)[:, None]], axis=1)
    return queries.astype(np.float32), items.astype(np.float32)


def objective_value(metrics: dict, objective: str = "slices", metric: str = "recall@50") -> float:
    """What beta is chosen by: `metric` overall ("all"), or its mean over the all, head, tail
    and cold slices ("slices", the default). Overall recall is dominated by links to hubs, and
    choosing by it alone trades most of the tail away for a fraction of a point; the slice mean
    weighs the tail and cold items, which this project exists for, as much as the hubs."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    if objective == "all":
        return float(metrics["all"][metric])
    values = [metrics[s][metric] for s in SLICES if s in metrics]
    values = [v for v in values if v == v]  # a slice without queries (NaN) does not count
    return float(np.mean(values)) if values else float("nan")


def choose_beta(
    evaluate_at, grid=DEFAULT_GRID, metric: str = "recall@50", objective: str = "slices"
) -> dict:
    """The beta of `grid` with the best `objective_value`; ties: the smaller beta.

    Args:
      evaluate_at: beta -> metrics dict as `evaluation.evaluate` returns.

    Returns: {"beta", "metric", "objective", "grid": [{"beta", "value", "metrics"}]}.
    """
    trials = []
    for beta in sorted(float(b) for b in grid):
        metrics = evaluate_at(beta)
        value = objective_value(metrics, objective, metric)
        trials.append({"beta": beta, "value": value, "metrics": metrics})
    best = max(trials, key=lambda t: (t["value"], -t["beta"]))
    return {"beta": best["beta"], "metric": metric, "objective": objective, "grid": trials}


def save(model_dir: str, choice: dict) -> None:
    atomic.write_json(os.path.join(model_dir, FILE), choice)


def load_beta(model_dir: str) -> float:
    """The beta chosen on validation for this model; 0 when it was never chosen."""
    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        return 0.0
    with open(path) as f:
        return float(json.load(f)["beta"])


def resolve_popularity_prior(model_dir: str, popularity_prior: str | float) -> float:
    """beta: "auto" = the one chosen on validation for this model (0 if none), else a number."""
    if popularity_prior == "auto":
        return load_beta(model_dir)
    try:
        beta = float(popularity_prior)
    except ValueError:
        raise ValueError(
            f"--popularity_prior must be 'auto' or a number >= 0, got {popularity_prior!r}"
        ) from None
    if not beta >= 0:
        raise ValueError(f"--popularity_prior must be >= 0, got {popularity_prior!r}")
    return beta
