"""Established libraries as reference recommenders ("peers"), each tuned on validation.

What a practitioner would otherwise use, on the same evaluator as the model (whole corpus, the
query itself excluded, per-query Recall@K and MAP@K by slice):

  links    the query's own training links in either direction (a pair q -> c or c -> q),
           ranked by how many there are, then by popularity: what the known links give alone.
  als      implicit's `AlternatingLeastSquares` on the training links: score U[q] . V[c].
  itemknn  implicit's `BM25Recommender` item-kNN (K neighbours per item) on the training links,
           plus the query's links: score (e_q + R[q]) S[:, c], the neighbours of the query item
           itself and of each item it links to, weighted by the link count (what implicit's
           `recommend` sums, with the query item added to its own profile). The similarity
           keeps each item as its own neighbour, so the query's links score too.
  lightfm  LightFM, WARP loss, hybrid: an item's features are its identity and its categorical
           and multi-hot values (`tfidf.build`'s tokens, binary), each row summing to 1 as
           LightFM's `Dataset` normalises them; the query item is a "user" with the same
           features. Score b_u[q] + b_i[c] + P[q] . Q[c] (`model.predict`).
  tfidf_prior  no library and no learned model: the feature kNN's TF-IDF cosine plus beta *
           log(1 + training count), the recipe's popularity prior on content similarity alone
           (the ablation's "popularity + TF-IDF without the model": what the learned model adds
           over the two terms the blend also uses). Beta is tuned like the others' parameters.

The link graph as implicit's user x item matrix R: every corpus item is both a user (a query)
and an item (a candidate). R[q, c] counts the training pairs q -> c; with `both_ways` (a grid
option, chosen on validation) the pairs c -> q count as well, so an item that is only ever linked
to still has a profile. LightFM takes the pairs one way (its features give every query a
representation). A query whose row of R is empty (no training links) has no user vector in ALS
and no profile beyond itself in the kNN: ALS ranks popularity for it, the kNN the neighbours of
the query item, then popularity. Ties (links, kNN) go to the more popular item.

Every peer is a `topk.Scorer` over corpus chunks (the products of the fitted arrays, never a
`recommend` call per query), so `evaluator.evaluate` ranks the whole corpus for it as for the
model. Each is fitted on the training pairs only.

Tuning: every point of the peer's grid (`GRIDS`; `--peer_grid` replaces it) is fitted and
evaluated on a fixed sample of validation queries (the trainer's: 2,000 queries, seed 0); the
objective is the mean over K in (10, 50) of the all-slice Recall@K per query. The best point
(the first on a tie) is evaluated on the split asked for; its parameters and every point's
validation values are recorded beside the metrics. The eval (test) split is never read while
tuning. LightFM's epochs come from one run per other setting, evaluated as it reaches each
number of epochs (`fit_partial`: the same as a fresh fit for that many epochs).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from ssl_retrieval import progress_bar
from ssl_retrieval.cli import option
from ssl_retrieval.data_dir import DataDir
from ssl_retrieval.evaluation import references
from ssl_retrieval.ranking import factors, tfidf, topk

PEERS = ("links", "als", "itemknn", "lightfm", "tfidf_prior")
# Every reference recommender `evaluate --recommender` takes: the project's own, then the peers.
RECOMMENDERS = references.RECOMMENDERS + PEERS

# The documented grids: every combination is a point. ALS: 15 iterations of its conjugate
# gradient solver (the library's default); alpha scales the confidence of a link: on Debian's
# validation split the library's default 1 scored 0.27-0.29, 10 0.44, 100-300 0.50 (3000: 0.39),
# where a larger regularization helped a little. LightFM: WARP, adagrad; the epochs of one
# setting are points of one run.
GRIDS: dict[str, dict[str, tuple]] = {
    "links": {},
    "als": {
        "factors": (64, 128, 256),
        "regularization": (1.0, 10.0),
        "alpha": (10.0, 100.0),
        "iterations": (15,),
        "both_ways": (False, True),
    },
    # Past its K neighbours an item scores nothing, and popularity orders the rest: on Debian's
    # validation split a short list then popularity beat a long one (K 5: 0.350, 10: 0.316,
    # 30: 0.267, 1000: 0.255; K 1 leaves the query's links, then popularity: 0.247).
    "itemknn": {
        "K": (5, 10, 30, 100, 300, 1000),
        "K1": (1.2,),
        "B": (0.75,),
        "both_ways": (False, True),
    },
    # On Debian's validation split a larger learning rate won at every number of epochs (0.05,
    # the library's default: 0.485 at 40 epochs, 0.1: 0.529, 0.2: 0.562, 0.4: 0.584), and more
    # epochs won up to the 160 tried (64 factors, 0.4: 0.600 at 80, 0.616 at 160), slowly: an
    # epoch takes about a second there on an idle machine, so 160 is where the grid stops.
    "lightfm": {
        "factors": (64, 128),
        "learning_rate": (0.2, 0.4),
        "regularization": (0.0,),
        "epochs": (20, 40, 80, 160),
    },
    # The popularity prior's strengths the blend's grid tries (ranking/config.py), and more: the
    # TF-IDF cosine is on another scale than the model's.
    "tfidf_prior": {"beta": (0.01, 0.03, 0.08, 0.12, 0.2, 0.4)},
}

# What --peer_params leaves out (and what a grid that leaves a parameter out uses): the
# libraries' defaults, with the factors and K the issue's untuned runs used.
DEFAULTS: dict[str, dict] = {
    "links": {},
    "als": {
        "factors": 128,
        "regularization": 0.01,
        "alpha": 1.0,
        "iterations": 15,
        "both_ways": False,
    },
    "itemknn": {"K": 200, "K1": 1.2, "B": 0.75, "both_ways": False},
    "lightfm": {"factors": 64, "learning_rate": 0.05, "regularization": 0.0, "epochs": 20},
    "tfidf_prior": {"beta": 0.08},
}

OBJECTIVE = "mean over K in tune_ks of the all-slice Recall@K per query, on validation"


@dataclasses.dataclass(frozen=True)
class PeerOptions:
    """How a peer is fitted and tuned (the `--peer_*` and `--seed` flags of evaluate)."""

    peer_params: str = option(
        "",
        "Peers only: JSON object of the peer's parameters (e.g. '{\"factors\": 128}'; missing "
        "ones take peers.DEFAULTS); given, the peer is not tuned on validation.",
    )
    peer_grid: str = option(
        "",
        "Peers only: JSON object {parameter: [values]} replacing the peer's tuning grid "
        "(peers.GRIDS); parameters left out take peers.DEFAULTS.",
    )
    seed: int = option(
        0, "Peers only: random seed of ALS and LightFM (their results depend on it)."
    )
    peer_threads: int = option(2, "Peers only: threads of the libraries' fitting.")
    peer_tune_queries: int = option(
        2000, "Peers only: validation queries the tuning evaluates (fixed sample, seed 0)."
    )
    peer_tune_ks: tuple[int, ...] = option(
        (10, 50), "Peers only: the tuning objective is the mean all-slice Recall@K over these K."
    )

    def __post_init__(self):
        for name in ("peer_params", "peer_grid"):
            _json_object(name, getattr(self, name))
        if self.peer_threads < 1:
            raise ValueError(f"--peer_threads must be >= 1, got {self.peer_threads}")
        if self.peer_tune_queries < 1:
            raise ValueError(f"--peer_tune_queries must be >= 1, got {self.peer_tune_queries}")
        if not self.peer_tune_ks or min(self.peer_tune_ks) < 1:
            raise ValueError(f"--peer_tune_ks must be positive integers, got {self.peer_tune_ks}")

    @property
    def tuned(self) -> bool:
        return not self.peer_params

    def params(self, name: str) -> dict:
        """The parameters --peer_params gives `name`, completed from `DEFAULTS`."""
        return _complete(name, _json_object("peer_params", self.peer_params), "--peer_params")

    def grid(self, name: str) -> dict[str, tuple]:
        """{parameter: values} to tune `name` over: --peer_grid, else `GRIDS`."""
        given = _json_object("peer_grid", self.peer_grid)
        if not given:
            return GRIDS[name]
        for key, values in given.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"--peer_grid: {key} must be a non-empty list, got {values!r}")
        _complete(name, {k: v[0] for k, v in given.items()}, "--peer_grid")
        return {k: tuple(v) for k, v in given.items()}


def _json_object(flag: str, text: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{flag} is not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{flag} must be a JSON object, got {text!r}")
    return value


def _complete(name: str, params: dict, flag: str) -> dict:
    """`DEFAULTS[name]` updated by `params`, each value checked against its default's type."""
    defaults = DEFAULTS[name]
    out = dict(defaults)
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(
                f"{flag}: {name} has no parameter {key!r} (its parameters: {sorted(defaults)})"
            )
        kind = type(defaults[key])
        ok = isinstance(value, bool) == (kind is bool) and isinstance(value, int | float)
        if kind is int and ok:
            ok = float(value).is_integer() and value >= 1
        if not ok:
            raise ValueError(f"{flag}: {name}'s {key} must be a {kind.__name__}, got {value!r}")
        out[key] = kind(value)
    return out


def grid_points(grid: dict[str, tuple], name: str) -> list[dict]:
    """Every combination of `grid`'s values, completed from `DEFAULTS[name]`, in grid order."""
    keys = list(grid)
    return [
        {**DEFAULTS[name], **dict(zip(keys, values, strict=True))}
        for values in itertools.product(*(grid[k] for k in keys))
    ]


# ----------------------------------------------------------------------------- the link graph


def link_matrix(data, both_ways: bool) -> sp.csr_matrix:
    """[N, N] float32 R: R[q, c] counts the training pairs q -> c (and c -> q: `both_ways`)."""
    n = data.num_items
    rows, cols = data.train_query, data.train_candidate
    if both_ways:
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    ones = np.ones(len(rows), np.float32)
    return sp.csr_matrix((ones, (rows, cols)), shape=(n, n))  # duplicates add up


# ----------------------------------------------------------------------------- the peers

# (data, grid points, context) -> (point, scorer) for every point, fitted on the training pairs.
Fitter = Callable[[object, list, "Context"], Iterator[tuple[dict, "topk.Scorer"]]]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a fit needs besides the pairs: the data dir (LightFM's features), seed, threads."""

    data_dir: object
    seed: int = 0
    num_threads: int = 2


def links_scorer(data) -> topk.Scorer:
    """The query's own training links in either direction by count, then popularity."""
    links = link_matrix(data, both_ways=True)
    # Counts are whole numbers, so half the popularity (in [0, 1]) orders ties and no more.
    tie_break = 0.5 * references.popularity(data)

    def scorer(rows, start, stop):
        return (links[rows][:, start:stop].toarray() + tie_break[start:stop]).astype(np.float32)

    return scorer


def _fit_links(data, points, context):
    for point in points:
        yield point, links_scorer(data)


def factor_scorer(
    users: np.ndarray,
    items: np.ndarray,
    user_bias: np.ndarray | None = None,
    item_bias: np.ndarray | None = None,
    fallback: np.ndarray | None = None,
    fallback_scores: np.ndarray | None = None,
) -> topk.Scorer:
    """users[q] . items[c] (+ user_bias[q] + item_bias[c]); rows where `fallback` [N] is True
    score `fallback_scores` [N] instead."""

    def scorer(rows, start, stop):
        scores = users[rows] @ items[start:stop].T
        if item_bias is not None:
            scores += item_bias[None, start:stop]
        if user_bias is not None:
            scores += user_bias[rows][:, None]
        if fallback is not None:
            scores[fallback[rows]] = fallback_scores[start:stop]
        return scores.astype(np.float32, copy=False)

    return scorer


def _fit_als(data, points, context):
    popularity = references.popularity(data).astype(np.float32)
    for point in points:
        links = link_matrix(data, point["both_ways"])
        params = {k: v for k, v in point.items() if k != "both_ways"}
        found = factors.fit(links, **params, seed=context.seed, num_threads=context.num_threads)
        empty = np.diff(links.indptr) == 0
        yield (
            point,
            factor_scorer(found.users, found.items, fallback=empty, fallback_scores=popularity),
        )


def knn_scorer(similarity: sp.csr_matrix, links: sp.csr_matrix, popularity) -> topk.Scorer:
    """(e_q + links[q]) @ similarity, ties (and empty profiles) to the more popular item.

    The tie-break is below any positive score: profiles weigh each item by a whole count, so a
    positive score is at least the smallest positive similarity."""
    profiles = (sp.identity(links.shape[0], np.float32, format="csr") + links).tocsr()
    columns = similarity.tocsc()
    smallest = similarity.data[similarity.data > 0].min() if similarity.nnz else 1.0
    tie_break = 1e-6 * float(smallest) * np.asarray(popularity, np.float64)

    def scorer(rows, start, stop):
        scores = (profiles[rows] @ columns[:, start:stop]).toarray().astype(np.float64)
        return (scores + tie_break[start:stop]).astype(np.float32)

    return scorer


def _fit_itemknn(data, points, context):
    from implicit.nearest_neighbours import BM25Recommender  # noqa: PLC0415
    from implicit.utils import ParameterWarning  # noqa: PLC0415

    popularity = references.popularity(data)
    for point in points:
        links = link_matrix(data, point["both_ways"])
        model = BM25Recommender(
            K=point["K"], K1=point["K1"], B=point["B"], num_threads=context.num_threads
        )
        with warnings.catch_warnings():
            # BM25Recommender.fit hands its own weighting (a COO matrix) to a CSR routine.
            warnings.simplefilter("ignore", ParameterWarning)
            model.fit(links, show_progress=False)
        yield point, knn_scorer(model.similarity, links, popularity)


def lightfm_features(data_dir, num_items: int) -> sp.csr_matrix:
    """[N, N + V] float32: identity and the item's categorical and multi-hot tokens (binary),
    each row summing to 1 (LightFM's `Dataset` normalisation)."""
    tokens = tfidf.build(data_dir).matrix.tocsr(copy=True)
    if tokens.shape[0] != num_items:
        raise ValueError(f"{data_dir}: {tokens.shape[0]} corpus items, expected {num_items}")
    tokens.data[:] = 1.0
    features = sp.hstack([sp.identity(num_items, np.float32, format="csr"), tokens]).tocsr()
    sums = np.asarray(features.sum(axis=1)).ravel()
    return (sp.diags(1.0 / sums) @ features).tocsr().astype(np.float32)


def _fit_lightfm(data, points, context):
    from lightfm import LightFM  # noqa: PLC0415

    features = lightfm_features(context.data_dir, data.num_items)
    interactions = link_matrix(data, both_ways=False).tocoo()
    # Points that differ only in their epochs are one run, evaluated as it passes each.
    runs: dict[tuple, list[dict]] = {}
    for point in points:
        runs.setdefault(tuple((k, v) for k, v in point.items() if k != "epochs"), []).append(point)
    for setting, same in runs.items():
        setting = dict(setting)
        model = LightFM(
            no_components=setting["factors"],
            loss="warp",
            learning_rate=setting["learning_rate"],
            item_alpha=setting["regularization"],
            user_alpha=setting["regularization"],
            random_state=context.seed,
        )
        done = 0
        # One epoch a call, the same as one call for them all: a progress bar of the epochs.
        with progress_bar.Bar("lightfm", max(p["epochs"] for p in same), "epochs") as bar:
            for point in sorted(same, key=lambda p: p["epochs"]):
                for _ in range(point["epochs"] - done):
                    model.fit_partial(
                        interactions,
                        user_features=features,
                        item_features=features,
                        epochs=1,
                        num_threads=context.num_threads,
                    )
                    bar.update(1)
                done = point["epochs"]
                yield point, lightfm_scorer(model, features)


def lightfm_scorer(model, features: sp.csr_matrix) -> topk.Scorer:
    """`model.predict` of every (query, corpus item) pair, from the representations it has now."""
    user_bias, users = model.get_user_representations(features)
    item_bias, items = model.get_item_representations(features)
    return factor_scorer(users, items, user_bias, item_bias)


def tfidf_prior_scorer(knn: topk.Scorer, log_counts: np.ndarray, beta: float) -> topk.Scorer:
    """The feature kNN's scores plus beta * log(1 + training count)."""

    def scorer(rows, start, stop):
        return (knn(rows, start, stop) + beta * log_counts[start:stop]).astype(np.float32)

    return scorer


def _fit_tfidf_prior(data, points, context):
    knn = references.feature_knn(data, str(context.data_dir))
    log_counts = np.log1p(references.training_counts(data)).astype(np.float32)
    for point in points:
        yield point, tfidf_prior_scorer(knn, log_counts, float(point["beta"]))


FITTERS: dict[str, Fitter] = {
    "links": _fit_links,
    "als": _fit_als,
    "itemknn": _fit_itemknn,
    "lightfm": _fit_lightfm,
    "tfidf_prior": _fit_tfidf_prior,
}


def fits(name: str, data, points: list[dict], context: Context) -> Iterator[tuple[dict, object]]:
    """(point, scorer) of `name` fitted on `data`'s training pairs, for each of `points`."""
    if name not in FITTERS:
        raise ValueError(f"--recommender: {name!r} is not a peer (peers: {list(PEERS)})")
    return FITTERS[name](data, points, context)


def fit(name: str, data, params: dict, context: Context) -> topk.Scorer:
    """The scorer of `name` with `params` (completed from `DEFAULTS`)."""
    ((_, scorer),) = list(fits(name, data, [_complete(name, params, "params")], context))
    return scorer


# ----------------------------------------------------------------------------- tuning


def objective(metrics: dict, ks) -> float:
    """The tuning objective: mean over `ks` of the all-slice Recall@K per query."""
    return float(np.mean([metrics["all"][f"recall@{k}"] for k in ks]))


def tune(name: str, data_dir, options: PeerOptions) -> tuple[dict, topk.Scorer, dict]:
    """Fits every grid point on the training pairs and evaluates it on the validation sample.

    Reads the validation and training pairs only (never the eval split).

    Returns:
      (best point, its scorer, the tuning record written beside the metrics).
    """
    from ssl_retrieval.evaluation import evaluator  # noqa: PLC0415  (imports TensorFlow)

    start = time.time()
    source = DataDir.of(data_dir)
    try:
        source.files("validation")
    except ValueError as e:
        raise ValueError(
            f"{e}: {name} is tuned on the validation split; give --peer_params to skip tuning"
        ) from None
    validation = evaluator.load_eval_data(source, "validation")
    total = len(np.unique(validation.eval_query))
    sample_seed = evaluator.QUERY_SAMPLE_SEED
    validation = evaluator.sample_queries(validation, options.peer_tune_queries, sample_seed)
    grid = options.grid(name)
    points = grid_points(grid, name)
    context = Context(source, options.seed, options.peer_threads)
    records, best = [], None
    began = time.time()
    for point, scorer in fits(name, validation, points, context):
        fitted = time.time()
        metrics = evaluator.evaluate(validation, scorer, sorted(set(options.peer_tune_ks)))
        value = objective(metrics, options.peer_tune_ks)
        records.append(
            {
                "params": point,
                "value": value,
                "metrics": metrics,
                # A point of a LightFM run counts the epochs since the previous point.
                "fit_seconds": round(fitted - began, 2),
                "eval_seconds": round(time.time() - fitted, 2),
            }
        )
        logging.info("peers: %s %s validation %.4f", name, point, value)
        if best is None or value > best[0]:
            best = (value, point, scorer)
        began = time.time()
    value, point, scorer = best
    record = {
        "split": "validation",
        "objective": OBJECTIVE,
        "ks": list(options.peer_tune_ks),
        "queries": {
            "evaluated": len(np.unique(validation.eval_query)),
            "of": total,
            "seed": sample_seed,
        },
        "grid": {k: list(v) for k, v in grid.items()},
        "points": records,
        "best_value": value,
        "seconds": round(time.time() - start, 2),
    }
    return point, scorer, record


def make(name: str, data, data_dir, options: PeerOptions) -> tuple[topk.Scorer, dict]:
    """The scorer of peer `name` for `data`'s queries and what to record beside its metrics.

    Tuned on validation unless `options` gives its parameters; the scorer is fitted on the
    training pairs either way (those of `data`, the same in every split)."""
    start = time.time()
    context = Context(data_dir, options.seed, options.peer_threads)
    if options.tuned:
        params, scorer, tuning = tune(name, data_dir, options)
    else:
        params, tuning = options.params(name), None
        ((_, scorer),) = list(fits(name, data, [params], context))
    record = {
        "name": name,
        "params": params,
        "tuned": options.tuned,
        "tuning": tuning,
        "seed": options.seed,
        "num_threads": options.peer_threads,
        "seconds": round(time.time() - start, 2),
    }
    return scorer, {"peer": record}
