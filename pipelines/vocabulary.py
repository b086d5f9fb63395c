"""Vocabularies of the sparse features and normalisation constants of the dense ones.

A vocabulary lists a feature's values by the number of items that have them (descending, ties
by value), capped by `max_vocab` and `min_count`; the id vocabulary is the whole corpus. Values
outside it map to the OOV bucket(s) in the model. Writing one vocabulary file gathers that
feature's kept values on one worker (as tf.Transform does); nothing else in the job does.
"""

from __future__ import annotations

import math

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ssl_retrieval import data_dir as data_dir_lib
from ssl_retrieval import schema as schema_lib


def vocab_path(directory: str, feature: str) -> str:
    return FileSystems.join(directory, data_dir_lib.vocab_file(feature))


def caps(feature: schema_lib.Feature, max_vocab: int | None, min_count: int | None):
    """(max_vocab, min_count) of a feature: its schema values, else the job defaults."""
    if feature.kind == schema_lib.ID:
        return None, 1
    return (
        feature.max_vocab if feature.max_vocab is not None else max_vocab,
        feature.min_count if feature.min_count is not None else (min_count or 1),
    )


def rank_key(value: str, count: int) -> tuple[int, str]:
    """Sort key of a value in its vocabulary: most items first, then by value."""
    return (-count, value)


class ComputeVocabularies(beam.PTransform):
    """(item_id, item) -> vocabularies written under `<directory>/vocab/`.

    Returns a dict of PCollections:
      "counts": ((feature, value), number of items with it);
      "sizes":  (feature, {"vocab_size", "cutoff"}) per sparse feature; cutoff = rank_key of the
                last kept value (None when the vocabulary is empty), so membership can be decided
                from a value's own count (see mutual_information).
    """

    def __init__(self, schema, directory: str, max_vocab=None, min_count=None):
        super().__init__()
        self._features = [f for f in schema.features if f.is_sparse]
        self._caps = {f.name: caps(f, max_vocab, min_count) for f in self._features}
        self._directory = directory

    def expand(self, items):
        names = [f.name for f in self._features]
        feature_caps, directory = self._caps, self._directory

        def values(element):
            _, item = element
            for name in names:
                value = item.get(name)
                if value is None:
                    continue
                for v in [value] if isinstance(value, str) else value:
                    yield (name, v), 1

        def write(element):
            name, counted = element
            max_vocab, min_count = feature_caps[name]
            kept = sorted(rank_key(v, n) for v, n in counted if n >= min_count)
            if max_vocab is not None:
                kept = kept[:max_vocab]
            with FileSystems.create(vocab_path(directory, name)) as f:
                for _, value in kept:
                    # A newline inside a value would break the one-value-per-line format.
                    f.write(value.replace("\n", " ").encode("utf-8") + b"\n")
            yield name, {"vocab_size": len(kept), "cutoff": list(kept[-1]) if kept else None}

        counts = items | "Values" >> beam.FlatMap(values) | "CountValues" >> beam.CombinePerKey(sum)
        sizes = (
            counts
            | "ByFeature" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
            | "GroupByFeature" >> beam.GroupByKey()
            | "WriteVocabularies" >> beam.FlatMap(write)
        )
        return {"counts": counts, "sizes": sizes}


def transform_dense(value: float, feature: schema_lib.Feature) -> float:
    if feature.dense_transform == "log":
        return math.log1p(max(value, 0.0))
    return value


class _MomentsFn(beam.CombineFn):
    """(count, sum, sum of squares) in float64."""

    def create_accumulator(self):
        return (0, 0.0, 0.0)

    def add_input(self, acc, x):
        return (acc[0] + 1, acc[1] + x, acc[2] + x * x)

    def merge_accumulators(self, accs):
        n, s, q = 0, 0.0, 0.0
        for a in accs:
            n, s, q = n + a[0], s + a[1], q + a[2]
        return (n, s, q)

    def extract_output(self, acc):
        n, s, q = acc
        if n == 0:
            return {"count": 0, "mean": 0.0, "std": 1.0}
        mean = s / n
        std = math.sqrt(max(q / n - mean * mean, 0.0))
        return {"count": n, "mean": mean, "std": std if std > 1e-12 else 1.0}


class ComputeDenseStats(beam.PTransform):
    """(item_id, item) -> (feature, {"count", "mean", "std"}) after each feature's transform."""

    def __init__(self, schema):
        super().__init__()
        self._features = schema.dense_features

    def expand(self, items):
        features = self._features

        def values(element):
            _, item = element
            for f in features:
                if f.name in item:
                    yield f.name, transform_dense(item[f.name], f)

        return (
            items
            | "DenseValues" >> beam.FlatMap(values)
            | "Moments" >> beam.CombinePerKey(_MomentsFn())
        )
