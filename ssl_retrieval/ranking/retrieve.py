"""Rankings over the whole corpus, exactly, in one pass: what evaluation and the blend's choice
retrieve (the export computes the same scores in its graph, `scores.score`).

`Corpus` holds what the rankings are scored from; `top_lists` ranks any set of rankings in one
pass over the corpus (the embeddings' product, the TF-IDF product and the links are made once
per corpus chunk for all of them); `retriever` makes a blend's lists of every size asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ssl_retrieval.compat import tf
from ssl_retrieval.ranking import factors, merge, scores, tfidf, topk
from ssl_retrieval.ranking import links as links_lib
from ssl_retrieval.ranking.blend import Blends


@dataclasses.dataclass
class Corpus:
    """The terms of the rankings' scores, corpus item by corpus item.

    Attributes:
      query_embeddings: [N, d] query-tower embeddings of the corpus items (unit rows; the same
        array as `item_embeddings` when the towers are shared).
      item_embeddings: [N, d] item-tower embeddings.
      log_counts: [N] log(1 + training-candidate count).
      content: [N, V] TF-IDF rows (`tfidf.py`), when a ranking has a TF-IDF term.
      links: [N, N] training link counts (`links.py`), when a ranking uses links.
      knn: [N, N] the item-kNN similarity of the links (`links.knn_similarity`), when a fused
        ranking weighs the kNN score: `item_knn()` builds it from `links` the first time.
      als: the links' factors (`factors.Factors`), when a fused ranking weighs them.
    """

    query_embeddings: np.ndarray
    item_embeddings: np.ndarray
    log_counts: np.ndarray
    content: sp.spmatrix | None = None
    links: sp.spmatrix | None = None
    knn: sp.spmatrix | None = None
    als: factors.Factors | None = None

    @property
    def num_items(self) -> int:
        return len(self.item_embeddings)

    def item_knn(self) -> sp.spmatrix:
        """`knn`, built from `links` when first asked for (a few seconds for Debian)."""
        if self.knn is None:
            self.knn = links_lib.knn_similarity(self.links)
        return self.knn


def scorer(
    corpus: Corpus, rankings: Mapping[Hashable, scores.Ranking], content_product=None
) -> topk.MultiScorer:
    """{key: scores of ranking} per corpus chunk, for `topk.top_k_many`.

    `content_product`: a `tfidf.product` of `corpus.content` that other scorers of the same
    pass share (the feature kNN reference); made here when needed and not given.
    """
    cosine = topk.embedding_scorer(corpus.query_embeddings, corpus.item_embeddings)
    needs_content = any(r.needs_content for r in rankings.values())
    needs_links = any(r.needs_links for r in rankings.values())
    knn = _KnnRows(corpus) if any(r.needs_knn for r in rankings.values()) else None
    needs_als = any(r.needs_als for r in rankings.values())
    degrees = None
    if any(r.needs_degree for r in rankings.values()):
        degrees = links_lib.log_degrees(corpus.links)
    linked = None
    if any(r.needs_paths for r in rankings.values()):
        linked = links_lib.indicator(corpus.links)
    if needs_content and content_product is None:
        content_product = tfidf.product(corpus.content)
    log_counts = tf.constant(np.asarray(corpus.log_counts, np.float32)[np.newaxis, :])

    def chunk_scores(rows, start, stop):
        cos = topk.exclude_own(cosine(rows, start, stop), rows, start, stop)
        terms = {"log_counts": log_counts[:, start:stop]}
        if needs_content:
            terms["tfidf"] = tf.constant(content_product(rows, start, stop), tf.float32)
        if needs_links:
            terms["log_links"] = tf.constant(links_lib.log_links(corpus.links, rows, start, stop))
        if linked is not None:
            terms["log_paths"] = tf.constant(links_lib.log_paths(linked, rows, start, stop))
        if knn is not None:
            terms["log_knn"] = tf.constant(knn.log_knn(rows, start, stop))
        if needs_als:
            terms["als"] = tf.constant(corpus.als.scores(rows, start, stop))
        if degrees is not None:
            terms["log_degree"] = tf.constant(degrees[np.asarray(rows)][:, np.newaxis])
        for key, ranking in rankings.items():
            yield key, scores.score(ranking, cos, **terms)

    return chunk_scores


class _KnnRows:
    """log(1 + knn) of a batch of query rows by corpus chunk: the rows' scores against the
    whole corpus are one sparse product per batch (`links.knn_scores`), kept by column, and
    each chunk of the same batch slices them instead of multiplying again."""

    def __init__(self, corpus: Corpus):
        self.corpus, self.rows, self.scores = corpus, None, None

    def log_knn(self, rows, start: int, stop: int) -> np.ndarray:
        rows = np.asarray(rows)
        if self.rows is None or not np.array_equal(rows, self.rows):
            found = links_lib.knn_scores(self.corpus.links, self.corpus.item_knn(), rows)
            self.rows, self.scores = rows, found.tocsc()
        block = self.scores[:, start:stop]
        block.data = np.log1p(np.maximum(block.data, 0))
        return block.toarray().astype(np.float32)


def top_lists(
    corpus: Corpus,
    rankings: Mapping[Hashable, scores.Ranking],
    queries: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
) -> dict:
    """{key: ([Q, k] corpus indices, [Q, k] scores)} of each ranking for the query items
    `queries` [Q] (corpus indices), the query itself excluded; -1 / -inf pad."""
    return topk.top_k_many(scorer(corpus, rankings), queries, corpus.num_items, k, exclude)


def merged(blend, lists: Mapping[str, np.ndarray], k: int) -> np.ndarray:
    """[Q, k] corpus indices of `blend`'s list of k from its rankings' top lists {name: [Q, L]}."""
    return merge.Lists(lists).merge(blend.segments(k), k).indices.numpy()


# (query corpus indices [Q], cut-offs ks, per-query exclusions or None) -> {k: [Q, k] lists}.
Retriever = Callable[[np.ndarray, Sequence[int], "Sequence[np.ndarray] | None"], dict]


def retriever(corpus: Corpus, blends: Blends) -> Retriever:
    """The lists of `blends` (the blend of each list size) for query items, for any ks: every
    ranking the blends need is retrieved in one pass at the largest k, then merged per k."""
    by_ranking = {r for _, b in blends for r in b.rankings().values()}
    rankings = {r: r for r in by_ranking}

    def retrieve(queries, ks, exclude=None):
        found = top_lists(corpus, rankings, queries, max(ks), exclude)
        out = {}
        for k in ks:
            blend = blends.for_k(k)
            lists = {name: found[r][0] for name, r in blend.rankings().items()}
            out[k] = merged(blend, lists, k)
        return out

    return retrieve
