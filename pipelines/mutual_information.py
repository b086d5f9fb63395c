"""Pairwise mutual information of item features (eq. 4 of the paper), at corpus scale.

Over the item corpus, each item has mass 1. For a multi-hot feature an item spreads its mass
evenly over its values, and a value pair (a, b) of features i, j weighs 1/(|V_i(x)| |V_j(x)|).
A missing value is its own token `<MISSING>`; a value outside the capped vocabulary is `<OOV>`
(keeping its share of the item's mass); a dense value is a half-standard-deviation bin of its
standardised transform (docs/contracts.md). Then

    MI(i, j) = H(i) + H(j) - H(i, j),   H = log N - (1/N) sum_v m_v log m_v

where m_v are the masses of the (joint) values and N the number of items. Every sum is a
CombinePerKey, so no worker holds a whole vocabulary or the corpus: the capping decision is
made per (feature, value) group from the group's own size and a per-feature cutoff (two numbers),
and each item's capped values are regrouped by item id to form its value pairs.
"""

from __future__ import annotations

import math

import apache_beam as beam

from ssl_retrieval import schema as schema_lib

MISSING = "<MISSING>"
OOV = "<OOV>"
FLUSH_KEYS = 200_000


dense_bin = schema_lib.dense_bin  # the binning formula lives with the schema


def in_vocabulary(value: str, count: int, cutoff, min_count: int) -> bool:
    """Whether a value with `count` items is kept by a vocabulary whose last kept key is cutoff."""
    if cutoff is None or count < min_count:
        return False
    return (-count, value) <= (cutoff[0], cutoff[1])


class _CappedValues(beam.DoFn):
    """((feature index, value), [(item_id, weight)]) -> (item_id, (feature index, token, weight))."""

    def __init__(self, names, min_counts, id_index):
        self._names = names
        self._min_counts = min_counts
        self._id_index = id_index

    def process(self, element, sizes):
        (index, value), members = element
        members = list(members)
        token = value
        if index != self._id_index:
            info = sizes.get(self._names[index]) or {}
            if not in_vocabulary(value, len(members), info.get("cutoff"), self._min_counts[index]):
                token = OOV
        for item_id, weight in members:
            yield item_id, (index, token, weight)


class _JointMasses(beam.DoFn):
    """(item_id, [(feature index, token, weight)]) -> (key, mass), pre-summed per bundle.

    Keys: (i, token) for marginals and (i, j, token_i, token_j), i < j, for joints. Summing in
    the bundle first turns millions of tiny elements into one per distinct key and bundle.
    """

    def start_bundle(self):
        self._sums = {}

    def _add(self, key, mass):
        self._sums[key] = self._sums.get(key, 0.0) + mass
        if len(self._sums) >= FLUSH_KEYS:
            yield from self._flush()

    def _flush(self):
        sums, self._sums = self._sums, {}
        yield from sums.items()

    def process(self, element):
        _, values = element
        by_feature: dict[int, list[tuple[str, float]]] = {}
        for index, token, weight in values:
            by_feature.setdefault(index, []).append((token, weight))
        indices = sorted(by_feature)
        for a, i in enumerate(indices):
            for token, w in by_feature[i]:
                yield from self._add((i, token), w)
            for j in indices[a + 1 :]:
                for ti, wi in by_feature[i]:
                    for tj, wj in by_feature[j]:
                        yield from self._add((i, j, ti, tj), wi * wj)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for kv in self._flush():
            yield WindowedValue(kv, 0, [GlobalWindow()])


def _mass_log_mass(element):
    key, mass = element
    feature_key = key[:1] if len(key) == 2 else key[:2]
    return feature_key, mass * math.log(mass) if mass > 0 else 0.0


class ComputeMutualInformation(beam.PTransform):
    """(item_id, item) -> (feature key, sum of m log m) for every feature and feature pair.

    Feature keys are (i,) for marginals and (i, j), i < j, for joints, i and j indices in the
    schema order. `finalize` turns these sums and the item count into the MI matrix.

    Args:
      schema: the dataset schema (feature order = matrix order).
      vocab_sizes: side input (feature -> {"cutoff", ...}) from ComputeVocabularies.
      dense_stats: side input (feature -> {"mean", "std"}) from ComputeDenseStats.
      min_counts: feature name -> effective min_count (vocabulary caps).
    """

    def __init__(self, schema, vocab_sizes, dense_stats, min_counts):
        super().__init__()
        self._features = schema.features
        self._vocab_sizes = vocab_sizes
        self._dense_stats = dense_stats
        self._min_counts = min_counts

    def expand(self, items):
        features = self._features
        names = [f.name for f in features]
        id_index = next(i for i, f in enumerate(features) if f.kind == schema_lib.ID)
        min_counts = [self._min_counts.get(n, 1) for n in names]

        def sparse_values(element):
            item_id, item = element
            for i, f in enumerate(features):
                value = item.get(f.name)
                if value is None or f.kind == schema_lib.DENSE:
                    continue
                values = [value] if isinstance(value, str) else value
                for v in values:
                    yield (i, v), (item_id, 1.0 / len(values))

        def direct_tokens(element, dense_stats):
            from pipelines.vocabulary import transform_dense

            item_id, item = element
            for i, f in enumerate(features):
                value = item.get(f.name)
                if value is None:
                    yield item_id, (i, MISSING, 1.0)
                elif f.kind == schema_lib.DENSE:
                    stats = dense_stats.get(f.name, {"mean": 0.0, "std": 1.0})
                    z = (transform_dense(value, f) - stats["mean"]) / stats["std"]
                    yield item_id, (i, dense_bin(z), 1.0)

        capped = (
            items
            | "SparseValues" >> beam.FlatMap(sparse_values)
            | "GroupByValue" >> beam.GroupByKey()
            | "CapValues"
            >> beam.ParDo(_CappedValues(names, min_counts, id_index), sizes=self._vocab_sizes)
        )
        direct = items | "MissingAndDense" >> beam.FlatMap(
            direct_tokens, dense_stats=self._dense_stats
        )
        return (
            (capped, direct)
            | "AllTokens" >> beam.Flatten()
            | "GroupByItem" >> beam.GroupByKey()
            | "JointMasses" >> beam.ParDo(_JointMasses())
            | "SumMasses" >> beam.CombinePerKey(sum)
            | "MassLogMass" >> beam.Map(_mass_log_mass)
            | "SumPerFeatureKey" >> beam.CombinePerKey(sum)
        )


def finalize(names: list[str], sums: dict, num_items: int) -> dict:
    """The mutual_info.json object from the (feature key -> sum m log m) sums.

    Args:
      names: feature names in schema order.
      sums: {(i,): S_i, (i, j): S_ij} as produced by ComputeMutualInformation.
      num_items: N, the number of items (the total mass of every feature).
    """
    k = len(names)
    n = float(num_items)

    def entropy(s: float) -> float:
        return max(0.0, math.log(n) - s / n) if n > 0 else 0.0

    ent = [entropy(sums.get((i,), 0.0)) for i in range(k)]
    mi = [[0.0] * k for _ in range(k)]
    for i in range(k):
        mi[i][i] = ent[i]
        for j in range(i + 1, k):
            value = ent[i] + ent[j] - entropy(sums.get((i, j), 0.0))
            mi[i][j] = mi[j][i] = max(0.0, value)
    ranked = {
        names[i]: [
            names[j] for j in sorted((j for j in range(k) if j != i), key=lambda j: (-mi[i][j], j))
        ]
        for i in range(k)
    }
    return {
        "features": names,
        "mutual_information": mi,
        "entropy": ent,
        "ranked": ranked,
        "num_items": num_items,
        "log_base": "e",
    }
