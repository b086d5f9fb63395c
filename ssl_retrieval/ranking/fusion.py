"""A fused ranking: one score from the rankings' terms, its weights fit on validation pairs.

Slots (`blend.py`) give the popular, cold and similar rankings a fixed share of every list, so a
query whose answers are all hubs still gets its similar slots, and one whose answers are all
look-alikes its popular ones. A fused ranking lets each query's list take what scores best for
it: score(q, c) = sum_i w_i f_i(q, c) over `scores.FEATURES` (the cosine, the TF-IDF cosine,
log(1 + training count), whether the item is cold, log(1 + links) and their products, with
`--blend_two_hop` log(1 + two-step paths in the links), with `--blend_item_knn` log(1 + the
BM25 item-kNN's score) and its products, and with `--blend_als` a factorisation's score of the
links U[q] . V[c] and its products), with w fit on the validation pairs (`--blend_fusion_loss`:
logistic regression over every pair, or a softmax over each query's candidates, `fit_listwise`):

- candidates: each validation query's top `FIT_DEPTH` items of a few rankings (`CANDIDATES`:
  the cosine, the popularity prior at three strengths, cosine + TF-IDF, the cold ranking, the
  known links, TF-IDF alone), labelled by whether they are one of its validation candidates;
- slices weigh the same: the positives of the head, the tail and the cold items are each given
  a third of the positives' total weight, so the fit is not the head's alone (the objective the
  blend is chosen by is the mean over slices too);
- features standardised, L2-regularised (C = 1), the weights then scaled back, so the score is a
  plain linear function of the features (the same in evaluation and in the SavedModel's graph).

On held-out halves of the validation queries (fit on one, scored on the other; one seed of the
recipe each) the fused ranking, in the popular ranking's slots, lifted the mean over slices of
Recall@10 from 0.448 to 0.512 on Debian (head 0.525 -> 0.604, tail 0.376 -> 0.420, cold 0.395
-> 0.463), 0.177 -> 0.200 on the linked source and 0.290 -> 0.297 on the synthetic one; at
Recall@50 it was level (+0.015, +0.001, -0.008). So it is one more candidate of the blend's grid,
and validation chooses (`evaluation/blend_choice.py`, which scores it on queries it was not fit
on: `fit_out_of_fold`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from ssl_retrieval.compat import tf
from ssl_retrieval.ranking import links as links_lib
from ssl_retrieval.ranking import scores

FIT_DEPTH = 100
CANDIDATES = {
    "cos": scores.popular(0.0),
    "prior 0.03": scores.popular(0.03),
    "prior 0.08": scores.popular(0.08),
    "prior 0.2": scores.popular(0.2),
    "cos + tfidf": scores.similar(1.0, 0.0),
    "cold": scores.cold(4.0),
    "linked": scores.linked(),
    "tfidf": scores.Ranking(content_weight=50.0),  # TF-IDF first, the cosine breaking ties
}
# With --blend_als the factorisation's own top items join the candidates too (its score alone,
# as a fused ranking), so its fit sees the items the term would bring in (the other fits do not:
# `Pairs.base`).
ALS_CANDIDATE = scores.fused([float(f == "als") for f in scores.FEATURES])
# Each slice's positives weigh a third of all positives (module docstring); with
# --blend_fusion_head_shares the blend also tries fits where the head's weigh more.
SLICE_WEIGHTS = (1.0, 1.0, 1.0)  # head, tail, cold


def pair_features(
    corpus,
    queries: np.ndarray,
    items: np.ndarray,
    paths: bool = True,
    knn: bool = False,
    als: bool = False,
    degree: bool = False,
) -> np.ndarray:
    """[P, len(FEATURES)] features of the (query, item) corpus index pairs; without `paths`
    the two-step paths' column is 0, without `knn` the item-kNN's (their sparse products are
    the costly terms; `knn` builds `corpus.knn` if it has none: `retrieve.Corpus.item_knn`),
    without `als` the factorisation's (with it, `corpus.als` must hold the factors), without
    `degree` the query degree's products."""
    cos = np.einsum(
        "pd,pd->p",
        np.asarray(corpus.query_embeddings)[queries],
        np.asarray(corpus.item_embeddings)[items],
    )
    terms = {"log_counts": np.asarray(corpus.log_counts, np.float32)[items][np.newaxis, :]}
    if corpus.content is not None:
        content = sp.csr_matrix(corpus.content)
        terms["tfidf"] = np.asarray(content[queries].multiply(content[items]).sum(axis=1)).T
    if corpus.links is not None:
        links = np.asarray(sp.csr_matrix(corpus.links)[queries, items]).reshape(1, -1)
        terms["log_links"] = np.log1p(links)
        if paths:
            terms["log_paths"] = np.log1p(_paths(corpus.links, queries, items))[np.newaxis, :]
        if knn:
            knn_terms = _log_knn(corpus.links, corpus.item_knn(), queries, items)
            terms["log_knn"] = knn_terms[np.newaxis, :]
        if degree:
            terms["log_degree"] = links_lib.log_degrees(corpus.links)[queries][np.newaxis, :]
    if als:
        terms["als"] = corpus.als.pairs(queries, items)[np.newaxis, :]
    values = scores.feature_values(
        tf.constant(cos[np.newaxis, :], tf.float32),
        **{k: tf.constant(v, tf.float32) for k, v in terms.items()},
    )
    # The log count enters reshaped to [1, P]: one value per pair, as the others.
    return np.stack([values[f].numpy()[0] for f in scores.FEATURES], axis=1)


def _paths(counts, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[P] two-step paths between the pairs' items, one sparse product per distinct query."""
    linked = links_lib.indicator(counts)
    distinct, row = np.unique(queries, return_inverse=True)
    paths = (linked[distinct] @ linked).tocsr()
    return np.asarray(paths[row, items]).ravel()


def _log_knn(counts, similarity, queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[P] log(1 + the item-kNN's score) of the pairs, one product per distinct query."""
    distinct, row = np.unique(queries, return_inverse=True)
    found = links_lib.knn_scores(counts, similarity, distinct).tocsr()
    return np.log1p(np.maximum(np.asarray(found[row, items]).ravel(), 0))


def candidate_pairs(lists: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) corpus indices of each query's candidates: the items of its row of
    `lists` [Q, L] (the candidate rankings' top lists side by side), each once."""
    rows, items = [], []
    for row, query in zip(lists, queries, strict=True):
        found = np.unique(row[row >= 0])
        found = found[found != query]
        rows.append(np.full(len(found), query))
        items.append(found)
    return np.concatenate(rows), np.concatenate(items)


@dataclasses.dataclass(frozen=True)
class Pairs:
    """The fit's examples, computed once per blend choice: every (query, candidate) pair of
    the validation queries, its features, label and slice. The full fit and each fold's fit
    take rows of it (`fit`), so the costly terms (the TF-IDF products, the two-step paths, the
    item-kNN scores) are computed once, not once per fit."""

    queries: np.ndarray  # [P] corpus index of the pair's query
    items: np.ndarray  # [P] corpus index of its candidate
    features: np.ndarray  # [P, len(FEATURES)]
    labels: np.ndarray  # [P] whether the candidate is one of the query's validation candidates
    head: np.ndarray  # [P] the candidate's slice
    cold: np.ndarray
    paths: bool  # whether the two-step paths' column was counted
    knn: bool  # whether the item-kNN's columns were
    als: bool = False  # whether the factorisation's columns were
    degree: bool = False  # whether the query degree's products were
    # [P] whether the pair is among the candidates without the factorisation's own (None: all
    # are): the fits without the factorisation take only these, as they would without it.
    base: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        corpus,
        data,
        lists: np.ndarray,
        queries: np.ndarray,
        paths: bool = True,
        knn: bool = False,
        als: bool = False,
        base_width: int | None = None,
        degree: bool = False,
    ):
        """The candidates of `queries` [Q] (corpus indices, rows of `lists` [Q, L], the
        candidate rankings' top lists side by side) and their validation labels in `data`
        (`evaluator.EvalData`); without `paths` (`knn`, `als`, `degree`) the two-step paths'
        (the item-kNN's, the factorisation's, the query degree's) columns are 0.
        `base_width`: the first columns of `lists` that are the candidates without the
        factorisation's (`base`)."""
        pair_queries, pair_items = candidate_pairs(lists, queries)
        base = None
        if base_width is not None:
            n = data.num_items
            within = candidate_pairs(lists[:, :base_width], queries)
            base = np.isin(pair_queries * n + pair_items, within[0] * n + within[1])
        relevant = set(zip(data.eval_query.tolist(), data.eval_candidate.tolist(), strict=True))
        labels = np.array(
            [
                (q, c) in relevant
                for q, c in zip(pair_queries.tolist(), pair_items.tolist(), strict=True)
            ],
            dtype=bool,
        )
        return cls(
            queries=pair_queries,
            items=pair_items,
            features=pair_features(corpus, pair_queries, pair_items, paths, knn, als, degree),
            labels=labels,
            head=np.asarray(data.head)[pair_items],
            cold=np.asarray(data.cold)[pair_items],
            paths=paths,
            knn=knn,
            als=als,
            degree=degree,
            base=base,
        )


def fit(
    pairs: Pairs,
    two_hop: bool = False,
    knn: bool = False,
    als: bool = False,
    degree: bool = False,
    rows: np.ndarray | None = None,
    shares=SLICE_WEIGHTS,
    loss: str = "pointwise",
) -> tuple[float, ...]:
    """The fused ranking's weights (one per `scores.FEATURES`), fit on `pairs` (the `rows`
    [P] bool of them, default all), the head's, tail's and cold items' positives weighing
    `shares` (`sample_weights`); the two-step paths' weight is 0 unless `two_hop`, the
    item-kNN's unless `knn`, the factorisation's unless `als`, the query degree's unless
    `degree` (then `pairs` must have been computed with them). `loss`: pointwise (logistic
    regression over the pairs) or listwise (a softmax over each query's candidates:
    `fit_listwise`)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415  (only when fitting)

    if two_hop and not pairs.paths:
        raise ValueError("fitting the two-step paths' weight needs Pairs.of(..., paths=True)")
    if knn and not pairs.knn:
        raise ValueError("fitting the item-kNN's weights needs Pairs.of(..., knn=True)")
    if als and not pairs.als:
        raise ValueError("fitting the factorisation's weights needs Pairs.of(..., als=True)")
    if degree and not pairs.degree:
        raise ValueError("fitting the query degree's weights needs Pairs.of(..., degree=True)")
    rows = np.ones(len(pairs.labels), bool) if rows is None else rows
    if not als and pairs.base is not None:
        rows = rows & pairs.base  # the pairs it would have without the factorisation
    labels = pairs.labels[rows]
    weights = sample_weights(labels, pairs.head[rows], pairs.cold[rows], shares)
    left_out = (
        (set() if two_hop else scores.PATHS)
        | (set() if knn else scores.KNN)
        | (set() if als else scores.ALS)
        | (set() if degree else scores.DEGREE)
    )
    used = np.array([f not in left_out for f in scores.FEATURES])
    features = pairs.features[rows][:, used]
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    if loss == "listwise":
        coef = fit_listwise((features - mean) / scale, labels, pairs.queries[rows], weights)
    elif loss == "pointwise":
        model = LogisticRegression(C=1.0, max_iter=2000)
        model.fit((features - mean) / scale, labels, sample_weight=weights)
        coef = model.coef_[0]
    else:
        raise ValueError(f"unknown fusion loss {loss!r}: pointwise or listwise")
    out = np.zeros(len(scores.FEATURES))
    out[used] = coef / scale
    return tuple(float(w) for w in out)


def fit_listwise(
    features: np.ndarray, labels: np.ndarray, queries: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """[F] weights w minimising, over each query q's candidates C_q (the rows sharing its
    `queries` value), sum over its positives p of weights[p] * -log softmax_{c in C_q}(x_c . w)
    [p], plus |w|^2 / 2 (the pointwise fit's L2 at C = 1). A query without a positive adds
    nothing; so does anything common to all of one query's candidates (no intercept).

    Newton steps in a trust region: the loss is convex in F weights, so its F x F Hessian is
    cheap, and a dozen steps reach the minimum where a quasi-Newton method took over a hundred
    passes over the pairs (700,000 of them on Debian)."""
    from scipy import optimize  # noqa: PLC0415  (only when fitting)

    if not np.any(labels):
        return np.zeros(features.shape[1])  # no query has a positive: nothing to order by
    order = np.argsort(queries, kind="stable")
    x, y = features[order].astype(np.float64), labels[order].astype(np.float64)
    positive_weight = weights[order] * y
    starts = np.flatnonzero(np.r_[True, queries[order][1:] != queries[order][:-1]])
    sizes = np.diff(np.r_[starts, len(x)])
    # Each query's positives' total weight: how many times its log-normaliser is paid.
    group_weight = np.add.reduceat(positive_weight, starts)
    keep = np.repeat(group_weight > 0, sizes)  # a query without a positive adds nothing
    x, positive_weight = x[keep], positive_weight[keep]
    starts = np.r_[0, np.cumsum(sizes[group_weight > 0])[:-1]]
    sizes, group_weight = sizes[group_weight > 0], group_weight[group_weight > 0]

    def softmax(w):
        s = x @ w
        top = np.maximum.reduceat(s, starts)
        e = np.exp(s - np.repeat(top, sizes))
        total = np.add.reduceat(e, starts)
        return s, top + np.log(total), e / np.repeat(total, sizes)

    def loss_and_gradient(w):
        s, log_normaliser, p = softmax(w)
        loss = group_weight @ log_normaliser - positive_weight @ s + 0.5 * w @ w
        return loss, x.T @ (np.repeat(group_weight, sizes) * p - positive_weight) + w

    def hessian(w):
        p = softmax(w)[2]
        mean = np.add.reduceat(x * p[:, np.newaxis], starts)  # [G, F] each query's E_p[x]
        spread = (x * (np.repeat(group_weight, sizes) * p)[:, np.newaxis]).T @ x
        return spread - (mean * group_weight[:, np.newaxis]).T @ mean + np.eye(x.shape[1])

    found = optimize.minimize(
        loss_and_gradient,
        np.zeros(x.shape[1]),
        jac=True,
        hess=hessian,
        method="trust-exact",
        options={"gtol": 1e-6},
    )
    return found.x


def sample_weights(
    labels: np.ndarray, head: np.ndarray, cold: np.ndarray, shares=SLICE_WEIGHTS
) -> np.ndarray:
    """1 for negatives; the positives of each slice (head, tail, cold) share `shares`'s part
    of the positives' total."""
    weights = np.ones(len(labels))
    positives = labels.sum()
    slices = (head & ~cold, ~head & ~cold, cold)
    for member, share in zip(slices, shares, strict=True):
        mask = labels & member
        if mask.any():
            weights[mask] = share * positives / (sum(shares) * mask.sum())
    return weights


def folds(queries: np.ndarray, count: int = 2, seed: int = 0) -> np.ndarray:
    """[Q] the fold (0 .. count-1) of each query, a fixed random split."""
    order = np.random.default_rng(seed).permutation(len(queries))
    out = np.empty(len(queries), np.int64)
    out[order] = np.arange(len(queries)) % count
    return out


def fit_out_of_fold(
    pairs: Pairs,
    queries: np.ndarray,
    fold_of: np.ndarray,
    two_hop: bool = False,
    knn: bool = False,
    als: bool = False,
    degree: bool = False,
    shares=SLICE_WEIGHTS,
    loss: str = "pointwise",
) -> list[tuple[float, ...]]:
    """Per fold of `queries` [Q] (`fold_of` [Q]), the weights fit on the other folds' pairs:
    the fused ranking of a query is then scored with weights that never saw its pairs."""
    return [
        fit(
            pairs,
            two_hop,
            knn,
            als,
            degree,
            ~np.isin(pairs.queries, queries[fold_of == f]),
            shares,
            loss,
        )
        for f in range(int(fold_of.max()) + 1)
    ]
