"""Vocabularies of the sparse features and normalisation constants of the dense ones.

A vocabulary lists a feature's values by the number of items that have them (descending, ties
by value), capped by `max_vocab` and `min_count`; the id vocabulary is the whole corpus. Values
outside it map to the OOV bucket(s) in the model. Writing one vocabulary file gathers that
feature's kept values on one worker (as tf.Transform does); nothing else in the job does.
"""

from __future__ import annotations

import collections
import math

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import batches
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
    """Buckets of (item_id, item) -> vocabularies written under `<directory>/vocab/`.

    Each bucket's values are counted in one Counter per feature, and the Counters are merged by a
    CombinePerKey on the feature: the elements are a few per bucket, not one per value.

    Returns a dict of PCollections:
      "sizes": (feature, {"vocab_size"}) per sparse feature;
      "codes": (feature, {value: line index}) per sparse feature but the id: the capped
               vocabulary as a side input for later stages (as tf.Transform hands its
               vocabularies on); its size is bounded by the feature's max_vocab.
    """

    def __init__(self, schema, directory: str, max_vocab=None, min_count=None):
        super().__init__()
        self._features = [f for f in schema.features if f.is_sparse]
        self._caps = {f.name: caps(f, max_vocab, min_count) for f in self._features}
        self._id = schema.id_feature.name
        self._directory = directory

    def expand(self, items):
        names = [f.name for f in self._features]
        feature_caps, directory, id_name = self._caps, self._directory, self._id

        def count(element):
            _, bucket = element
            counters = {name: collections.Counter() for name in names}
            for _, item in bucket:
                for name in names:
                    value = item.get(name)
                    if value is None:
                        continue
                    if isinstance(value, str):
                        counters[name][value] += 1
                    else:
                        counters[name].update(value)
            return counters.items()

        def write(element):
            name, counted = element
            max_vocab, min_count = feature_caps[name]
            kept = sorted(rank_key(v, n) for v, n in counted.items() if n >= min_count)
            if max_vocab is not None:
                kept = kept[:max_vocab]
            with FileSystems.create(vocab_path(directory, name)) as f:
                # A newline inside a value would break the one-value-per-line format.
                f.write(b"".join(v.replace("\n", " ").encode("utf-8") + b"\n" for _, v in kept))
            yield name, {"vocab_size": len(kept)}
            if name != id_name:
                yield beam.pvalue.TaggedOutput(
                    "codes", (name, {v: i for i, (_, v) in enumerate(kept)})
                )

        counts = (
            items
            | "CountValues" >> beam.FlatMap(count)
            | "MergeCounts" >> beam.CombinePerKey(batches.MergeCounts())
        )
        written = counts | "WriteVocabularies" >> beam.FlatMap(write).with_outputs(
            "codes", main="sizes"
        )
        return {"sizes": written.sizes, "codes": written.codes}


def transform_dense(value: float, feature: schema_lib.Feature) -> float:
    if feature.dense_transform == "log":
        return math.log1p(max(value, 0.0))
    return value


class _MomentsFn(beam.CombineFn):
    """Partial (count, sum, sum of squares) of each bucket -> mean and std, in float64.

    The partial sums are kept and added with math.fsum at the end (exactly rounded), so the
    result does not depend on the order in which a runner merges them.
    """

    def create_accumulator(self):
        return []

    def add_input(self, partials, partial):
        partials.append(partial)
        return partials

    def merge_accumulators(self, accumulators):
        return [p for partials in accumulators for p in partials]

    def extract_output(self, partials):
        n = sum(p[0] for p in partials)
        if n == 0:
            return {"count": 0, "mean": 0.0, "std": 1.0}
        mean = math.fsum(p[1] for p in partials) / n
        square = math.fsum(p[2] for p in partials) / n
        std = math.sqrt(max(square - mean * mean, 0.0))
        return {"count": n, "mean": mean, "std": std if std > 1e-12 else 1.0}


class ComputeDenseStats(beam.PTransform):
    """Buckets of (item_id, item) -> (feature, {"count", "mean", "std"}) after each feature's
    transform."""

    def __init__(self, schema):
        super().__init__()
        self._features = schema.dense_features

    def expand(self, items):
        features = self._features

        def moments(element):
            _, bucket = element
            for f in features:
                values = [transform_dense(item[f.name], f) for _, item in bucket if f.name in item]
                if values:
                    yield f.name, (len(values), math.fsum(values), math.fsum(x * x for x in values))

        return (
            items
            | "DenseMoments" >> beam.FlatMap(moments)
            | "Moments" >> beam.CombinePerKey(_MomentsFn())
        )
