"""The score of every ranking a blend merges, one formula for evaluation and export alike.

    score(q, c) = cos(q, c) + content_weight * tfidf(q, c)
                  + popularity_weight * log(1 + n_c) + links_weight * log(1 + links(q, c))

over the items the ranking keeps (`only`): every item, the cold ones (n_c = 0: no training pair
has them as candidate) or the ones linked to the query (links(q, c) > 0: training pairs between
q and c, either direction); the others score -inf. n_c is the training count of candidate c
(`popularity.py`), tfidf the cosine of the two items' TF-IDF vectors (`tfidf.py`), links the
training link counts (`links.py`).

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

    def __post_init__(self):
        if self.only not in ONLY:
            raise ValueError(f"a ranking keeps one of {ONLY}, got {self.only!r}")

    @property
    def needs_content(self) -> bool:
        return bool(self.content_weight)

    @property
    def needs_counts(self) -> bool:
        return bool(self.popularity_weight) or self.only == "cold"

    @property
    def needs_links(self) -> bool:
        return bool(self.links_weight) or self.only == "linked"


def popular(beta: float) -> Ranking:
    return Ranking(popularity_weight=float(beta))


def similar(content_weight: float, popularity_penalty: float) -> Ranking:
    return Ranking(float(content_weight), -float(popularity_penalty))


def cold(content_weight: float) -> Ranking:
    return Ranking(float(content_weight), only="cold")


def linked() -> Ranking:
    return Ranking(links_weight=LINKS_WEIGHT, only="linked")


def score(ranking: Ranking, cosines, tfidf=None, log_counts=None, log_links=None):
    """[B, M] scores of `ranking` from its terms over the same M corpus items.

    Args:
      cosines: [B, M] cos(q, c), the query's own item already at -inf where it is excluded.
      tfidf: [B, M] TF-IDF cosines (when the ranking has a content weight).
      log_counts: [M] or [1, M] log(1 + n_c) (popularity weight, or the cold ranking).
      log_links: [B, M] log(1 + links(q, c)) (links weight, or the linked ranking).
    """
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
