"""The merge of several rankings' lists into one list: the one implementation that evaluation,
the blend's choice and the export (in the SavedModel's graph) all call.

A blend's list of k is a sequence of segments, each a slice of one ranking's top list (e.g. the
first 3 of the linked ranking, the first 6 of the popular one, then the similar ranking, then
the rest of the popular one); the merge walks them in order and keeps each item where it first
comes, skipping -1 padding, until k are listed.

Each ranking's list names an item at most once (top-k lists do), so an item is a repeat exactly
when an earlier segment of *another* list holds it: where each list's items sit in each other
list is found once (`Lists.positions`), and every merge of the same lists (choosing a blend
merges them for hundreds of slot counts) is then a few masks and one compaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ssl_retrieval.compat import tf

# (ranking name, start, stop): that ranking's list[:, start:stop]; stop None = to its end.
Segment = tuple[str, "int | tf.Tensor", "int | tf.Tensor | None"]


class Lists:
    """Top lists of several rankings for the same queries.

    Args:
      indices: name -> [Q, L] corpus indices, best first, -1 padding; each row names an item
        at most once.
      scores: name -> [Q, L] the ranking's scores (optional: merged lists then carry them).
    """

    def __init__(self, indices: Mapping, scores: Mapping | None = None):
        self.names = list(indices)
        self.indices = {n: _matrix(v, tf.int64) for n, v in indices.items()}
        self.scores = None
        if scores is not None:
            self.scores = {n: _matrix(scores[n], tf.float32) for n in self.names}
        self._positions: dict[tuple[str, str], tf.Tensor] = {}

    def positions(self, name: str, other: str) -> tf.Tensor:
        """[Q, L_name] position of each item of `name`'s list in `other`'s (L_other if absent)."""
        key = (name, other)
        if key not in self._positions:
            items, within = self.indices[name], self.indices[other]
            match = tf.logical_and(
                tf.equal(items[:, :, tf.newaxis], within[:, tf.newaxis, :]),
                items[:, :, tf.newaxis] >= 0,
            )
            first = tf.argmax(tf.cast(match, tf.int32), axis=2, output_type=tf.int64)
            width = tf.shape(within, out_type=tf.int64)[1]
            self._positions[key] = tf.where(tf.reduce_any(match, axis=2), first, width)
        return self._positions[key]

    def merge(self, segments: Sequence[Segment], k) -> Merged:
        """The list of `k` (an int or a scalar tensor) that walks `segments` in order."""
        pieces, keeps, sources = [], [], []
        for i, (name, start, stop) in enumerate(segments):
            items = self.indices[name][:, start:stop]
            keep = items >= 0
            for other, other_start, other_stop in segments[:i]:
                if other == name:  # segments of one list do not overlap
                    continue
                at = self.positions(name, other)[:, start:stop]  # its width where absent
                if other_stop is None:
                    other_stop = tf.shape(self.indices[other], out_type=tf.int64)[1]
                earlier = tf.logical_and(
                    at >= tf.cast(other_start, tf.int64), at < tf.cast(other_stop, tf.int64)
                )
                keep = tf.logical_and(keep, tf.logical_not(earlier))
            pieces.append((name, start, stop))
            keeps.append(keep)
            sources.append(tf.fill(tf.shape(items), self.names.index(name)))
        keep = tf.concat(keeps, axis=1)
        shape = [None, k]

        def first_k(values, padding):
            return tf.ragged.boolean_mask(values, keep).to_tensor(padding, shape=shape)

        indices = first_k(tf.concat([self.indices[n][:, a:b] for n, a, b in pieces], 1), -1)
        scores = None
        if self.scores is not None:
            concatenated = tf.concat([self.scores[n][:, a:b] for n, a, b in pieces], 1)
            scores = first_k(concatenated, float("-inf"))
        return Merged(indices, scores, first_k(tf.concat(sources, 1), -1), self.names)


def _matrix(values, dtype) -> tf.Tensor:
    """A [Q, L] tensor of known rank (lists made in a graph loop may have none; the merge's
    masks need it)."""
    return tf.ensure_shape(tf.convert_to_tensor(values, dtype), [None, None])


class Merged:
    """A merged list: `indices` [Q, k] (-1 pads), `scores` [Q, k] (each item's score in the
    ranking that listed it; None without scores), `sources` [Q, k] (that ranking, as an index
    of `names`; -1 pads)."""

    def __init__(self, indices, scores, sources, names):
        self.indices, self.scores, self.sources, self.names = indices, scores, sources, names
