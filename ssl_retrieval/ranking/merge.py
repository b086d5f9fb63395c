"""The merge of several rankings' lists into one list: the one implementation that evaluation,
the blend's choice and the export (in the SavedModel's graph) all call.

A blend's list of k is a sequence of segments, each a slice of one ranking's top list (e.g. the
first 3 of the linked ranking, the first 6 of the popular one, then the similar ranking, then
the rest of the popular one); the merge walks them in order and keeps each item where it first
comes, skipping -1 padding, until k are listed.

Each ranking's list names an item at most once (top-k lists do), so an item is a repeat exactly
when an earlier segment of *another* list holds it: where each list's items sit in each other
list is found once (`Lists.positions`), and every merge of the same lists (choosing a blend
merges them for hundreds of slot counts) is then a few masks and one compaction (a top_k of
the kept columns). Called eagerly, that walk runs as one traced graph per sequence of rankings
(`_compiled_walk`: op by op, each merge of tiny lists cost milliseconds of dispatch).
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
        names = tuple(name for name, _, _ in segments)
        bounds = [
            (_int64(start), _int64(tf.shape(self.indices[name])[1] if stop is None else stop))
            for name, start, stop in segments
        ]
        positions = {
            f"{name} in {other}": self.positions(name, other)
            for i, name in enumerate(names)
            for other in set(names[:i]) - {name}
        }
        used = sorted(set(names))
        indices = {n: self.indices[n] for n in used}
        scores = None if self.scores is None else {n: self.scores[n] for n in used}
        sources = tf.constant([self.names.index(n) for n in names], tf.int32)
        # Eagerly (choosing a blend merges the same lists hundreds of times) the walk runs as
        # one graph per sequence of rankings; in a graph (the export) it is inlined as it is.
        if tf.executing_eagerly():  # k a tensor: one trace serves every list size
            walked = _compiled_walk(names, indices, scores, positions, bounds, sources, _int64(k))
        else:
            walked = _walk(names, indices, scores, positions, bounds, sources, k)
        return Merged(*walked, self.names)


def _walk(names, indices, scores, positions, bounds, sources, k):
    """(indices, scores or None, sources) of the list of `k` that walks the segments
    `names[i]`[:, bounds[i]]: each item kept where it first comes, then the first k kept."""
    keeps, pieces, source_of = [], [], []
    for i, (name, (start, stop)) in enumerate(zip(names, bounds, strict=True)):
        items = indices[name][:, start:stop]
        keep = items >= 0
        for other, (other_start, other_stop) in zip(names[:i], bounds[:i], strict=True):
            if other == name:  # segments of one list do not overlap
                continue
            at = positions[f"{name} in {other}"][:, start:stop]  # its width where absent
            earlier = tf.logical_and(at >= other_start, at < other_stop)
            keep = tf.logical_and(keep, tf.logical_not(earlier))
        keeps.append(keep)
        pieces.append((name, start, stop))
        source_of.append(tf.fill(tf.shape(items), sources[i]))
    keep = tf.concat(keeps, axis=1)
    # Kept entries first, in walk order, then k columns of padding: the columns of the list of
    # k, found once for the items, their scores and their sources alike.
    keep = tf.pad(keep, [[0, 0], [0, k]])
    column = tf.range(tf.shape(keep, out_type=tf.int64)[1])
    rank = tf.where(keep, column, column + tf.shape(keep, out_type=tf.int64)[1])  # no ties
    size = k if isinstance(k, int) else tf.cast(k, tf.int32)  # an int keeps the shape [Q, k]
    taken = tf.math.top_k(-rank, k=size, sorted=True).indices
    listed = tf.gather(keep, taken, batch_dims=1)

    def first_k(values, padding):
        values = tf.pad(values, [[0, 0], [0, k]], constant_values=padding)
        return tf.where(listed, tf.gather(values, taken, batch_dims=1), padding)

    merged = first_k(tf.concat([indices[n][:, a:b] for n, a, b in pieces], 1), -1)
    merged_scores = None
    if scores is not None:
        concatenated = tf.concat([scores[n][:, a:b] for n, a, b in pieces], 1)
        merged_scores = first_k(concatenated, float("-inf"))
    return merged, merged_scores, first_k(tf.concat(source_of, 1), -1)


# No autograph: the walk's loops are over Python lists, and autograph would re-read the source.
_compiled_walk = tf.function(_walk, reduce_retracing=True, autograph=False)


def _int64(value) -> tf.Tensor:
    return tf.cast(value, tf.int64)


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
