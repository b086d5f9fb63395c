"""The score of every ranking a blend merges, one formula for evaluation and export alike.

    score(q, c) = cos(q, c) + content_weight * tfidf(q, c)
                  + popularity_weight * log(1 + n_c) + links_weight * log(1 + links(q, c))

over the items the ranking keeps (`only`): every item, the cold ones (n_c = 0: no training pair
has them as candidate) or the ones linked to the query (links(q, c) > 0: training pairs between
q and c, either direction); the others score -inf. n_c is the training count of candidate c
(`popularity.py`), tfidf the cosine of the two items' TF-IDF vectors (`tfidf.py`), links the
training link counts (`links.py`).

or, for a *fused* ranking, a linear function of those terms, their products and the two-step
paths log(1 + paths(q, c)) (the items linked to an item linked to q: co-occurrence; `links.py`),
the BM25 item-kNN's score, a factorisation of the links (`factors.py`) and, with
`--blend_query_degree`, each term times the query's own degree in the links (`FEATURES`), its
weights fit on validation by `fusion.py`: one score that ranks popular items, look-alikes and
cold items together, per query, where slots give each a fixed share of the list.

The four rankings of a blend (`blend.py`):
  popular   cos + beta * log(1 + n_c): the hubs most held-out links of a power-law graph go to;
  similar   cos + w * tfidf - gamma * log(1 + n_c): look-alikes, a little further down the tail;
  cold      cos + w_cold * tfidf over the cold items, which only their features can find;
  linked    the query's own training neighbours, by link count (ties by cosine): on data whose
            links come in both directions, the known links are the best first answers.
"""

from __future__ import annotations

import dataclasses

from ssl_retrieval.compat import tf

ONLY = ("all", "cold", "linked")
# The terms a fused ranking weighs: cos(q, c), the TF-IDF cosine, log(1 + n_c), whether c is cold
# (n_c = 0), log(1 + links(q, c)), products that let one term count differently where another is
# large (a cold item's TF-IDF, a popular item's cosine), log(1 + two-step paths q - x - c), and
# log(1 + the BM25 item-kNN's score) with its products (`links.py`), and a factorisation's score
# U[q] . V[c] of the links with its products (`factors.py`).
DEGREE_TERMS = tuple(
    f"logq*{term}" for term in ("cos", "tfidf", "logn", "cold", "loglinks", "logknn", "als")
)
FEATURES = (
    "cos",
    "tfidf",
    "logn",
    "cold",
    "loglinks",
    "logn^2",
    "cos*tfidf",
    "cos*logn",
    "tfidf*cold",
    "cos*cold",
    "tfidf*logn",
    "tfidf^2",
    "cos^2",
    "loglinks*cos",
    "loglinks*logn",
    # Added later: a blend.json written before a term existed gives it weight 0 (by name).
    "logpaths",
    "logknn",
    "logknn*cos",
    "logknn*logn",
    "logknn^2",
    "als",
    "als*cos",
    "als*logn",
    # The query's own degree, log(1 + its distinct training neighbours) (`links.log_degrees`),
    # times each term: how much a term counts may depend on how well the links know the query
    # (a hub's known links and kNN score against a barely linked item's features).
    *DEGREE_TERMS,
)
_CONTENT = {f for f in FEATURES if "tfidf" in f}
_LINKS = {f for f in FEATURES if "loglinks" in f}
_COUNTS = {f for f in FEATURES if "logn" in f or "cold" in f}
PATHS = {"logpaths"}
KNN = {f for f in FEATURES if "logknn" in f}
ALS = {f for f in FEATURES if "als" in f.split("*")}
DEGREE = set(DEGREE_TERMS)
# The linked ranking orders neighbours by link count first: log(1 + count) steps are at least
# log(3/2) = 0.405 apart, so a weight of 10 puts 4 between counts, more than any cosine span (2).
LINKS_WEIGHT = 10.0


@dataclasses.dataclass(frozen=True)
class Ranking:
    """One ranking's weights (see the module docstring)."""

    content_weight: float = 0.0
    popularity_weight: float = 0.0
    links_weight: float = 0.0
    only: str = "all"
    fusion: tuple[float, ...] = ()  # a fused ranking: a weight per `FEATURES`, the rest unused

    def __post_init__(self):
        if self.only not in ONLY:
            raise ValueError(f"a ranking keeps one of {ONLY}, got {self.only!r}")
        if self.fusion and len(self.fusion) != len(FEATURES):
            raise ValueError(f"a fused ranking weighs {len(FEATURES)} features, got {self.fusion}")

    def _fused(self, names: set[str]) -> bool:
        return any(w for f, w in zip(FEATURES, self.fusion, strict=False) if f in names)

    @property
    def needs_content(self) -> bool:
        return bool(self.content_weight) or self._fused(_CONTENT)

    @property
    def needs_counts(self) -> bool:
        return bool(self.popularity_weight) or self.only == "cold" or self._fused(_COUNTS)

    @property
    def needs_paths(self) -> bool:
        return self._fused(PATHS)

    @property
    def needs_knn(self) -> bool:
        return self._fused(KNN)

    @property
    def needs_als(self) -> bool:
        """The links' factors (`factors.py`; they are fit from the links but shipped alone)."""
        return self._fused(ALS)

    @property
    def needs_degree(self) -> bool:
        """The query's degree in the training links (`links.log_degrees`)."""
        return self._fused(DEGREE)

    @property
    def needs_links(self) -> bool:
        """The training links (the paths, the kNN score and the degree come from them too)."""
        return (
            bool(self.links_weight)
            or self.only == "linked"
            or self._fused(_LINKS)
            or self.needs_paths
            or self.needs_knn
            or self.needs_degree
        )


def popular(beta: float) -> Ranking:
    return Ranking(popularity_weight=float(beta))


def similar(content_weight: float, popularity_penalty: float) -> Ranking:
    return Ranking(float(content_weight), -float(popularity_penalty))


def cold(content_weight: float) -> Ranking:
    return Ranking(float(content_weight), only="cold")


def linked() -> Ranking:
    return Ranking(links_weight=LINKS_WEIGHT, only="linked")


def fused(weights) -> Ranking:
    return Ranking(fusion=tuple(float(w) for w in weights))


def feature_values(
    cosines,
    tfidf=None,
    log_counts=None,
    log_links=None,
    log_paths=None,
    log_knn=None,
    als=None,
    log_degree=None,
) -> dict:
    """{feature: [B, M] values} of `FEATURES` (absent terms are 0); the same broadcasting as
    `score`'s arguments. Fitting a fusion (`fusion.py`) calls it on candidate pairs, scoring on
    corpus chunks: one formula."""
    zero = tf.zeros_like(cosines)
    cos = cosines
    tf_idf = zero if tfidf is None else tf.cast(tfidf, cos.dtype) + zero
    logn = (
        zero if log_counts is None else tf.reshape(tf.cast(log_counts, cos.dtype), [1, -1]) + zero
    )
    links = zero if log_links is None else tf.cast(log_links, cos.dtype) + zero
    paths = zero if log_paths is None else tf.cast(log_paths, cos.dtype) + zero
    knn = zero if log_knn is None else tf.cast(log_knn, cos.dtype) + zero
    factorised = zero if als is None else tf.cast(als, cos.dtype) + zero
    degree = zero if log_degree is None else tf.cast(log_degree, cos.dtype) + zero
    cold = tf.cast(logn <= 0, cos.dtype)
    values = {
        "cos": cos,
        "tfidf": tf_idf,
        "logn": logn,
        "cold": cold,
        "loglinks": links,
        "logn^2": logn * logn,
        "cos*tfidf": cos * tf_idf,
        "cos*logn": cos * logn,
        "tfidf*cold": tf_idf * cold,
        "cos*cold": cos * cold,
        "tfidf*logn": tf_idf * logn,
        "tfidf^2": tf_idf * tf_idf,
        "cos^2": cos * cos,
        "loglinks*cos": links * cos,
        "loglinks*logn": links * logn,
        "logpaths": paths,
        "logknn": knn,
        "logknn*cos": knn * cos,
        "logknn*logn": knn * logn,
        "logknn^2": knn * knn,
        "als": factorised,
        "als*cos": factorised * cos,
        "als*logn": factorised * logn,
    }
    for name in DEGREE_TERMS:
        values[name] = degree * values[name.split("*")[1]]
    return values


def _fused_score(weights, cosines, **terms):
    """sum_i w_i f_i; an excluded item (cos -inf) stays -inf (its products would be nan)."""
    excluded = tf.math.is_inf(cosines)
    values = feature_values(tf.where(excluded, tf.zeros_like(cosines), cosines), **terms)
    out = tf.zeros_like(cosines)
    for name, weight in zip(FEATURES, weights, strict=True):
        if weight:
            out = out + tf.cast(weight, out.dtype) * values[name]
    return tf.where(excluded, tf.cast(float("-inf"), out.dtype), out)


def score(ranking: Ranking, cosines, tfidf=None, log_counts=None, log_links=None, **fused_terms):
    """[B, M] scores of `ranking` from its terms over the same M corpus items.

    Args:
      cosines: [B, M] cos(q, c), the query's own item already at -inf where it is excluded.
      tfidf: [B, M] TF-IDF cosines (when the ranking has a content weight).
      log_counts: [M] or [1, M] log(1 + n_c) (popularity weight, or the cold ranking).
      log_links: [B, M] log(1 + links(q, c)) (links weight, or the linked ranking).
      fused_terms: the terms only a fused ranking weighs, named as `feature_values` names them:
        log_paths [B, M] log(1 + two-step paths from q to c) ("logpaths"), log_knn [B, M]
        log(1 + the item-kNN's score of c for q) ("logknn"), als [B, M] U[q] . V[c], the links'
        factorisation ("als"), log_degree [B, 1] log(1 + the query's distinct training
        neighbours) ("logq*"; 0 for a query that is no corpus item).
    """
    if ranking.fusion:
        common = {"tfidf": tfidf, "log_counts": log_counts, "log_links": log_links}
        return _fused_score(ranking.fusion, cosines, **common, **fused_terms)
    out = cosines
    if ranking.content_weight:
        out = out + tf.cast(ranking.content_weight, out.dtype) * tfidf
    if ranking.popularity_weight or ranking.only == "cold":
        counts = tf.reshape(tf.cast(log_counts, out.dtype), [1, -1])
    if ranking.popularity_weight:
        out = out + tf.cast(ranking.popularity_weight, out.dtype) * counts
    if ranking.links_weight:
        out = out + tf.cast(ranking.links_weight, out.dtype) * log_links
    if ranking.only == "cold":
        out = tf.where(counts > 0, tf.cast(float("-inf"), out.dtype), out)
    elif ranking.only == "linked":
        out = tf.where(log_links > 0, out, tf.cast(float("-inf"), out.dtype))
    return out
