"""Pairwise mutual information of item features (eq. 4 of the paper), at corpus scale.

Over the item corpus, each item has mass 1. For a multi-hot feature an item spreads its mass
evenly over its values, and a value pair (a, b) of features i, j weighs 1/(|V_i(x)| |V_j(x)|).
A missing value is its own token `<MISSING>`; a value outside the capped vocabulary is `<OOV>`
(keeping its share of the item's mass); a dense value is a half-standard-deviation bin of its
standardised transform (docs/contracts.md). Then

    MI(i, j) = H(i) + H(j) - H(i, j),   H = log N - (1/N) sum_v m_v log m_v

where m_v are the masses of the (joint) values and N the number of items.

How the job computes it, a bucket of items at a time (`batches`): tokens become integer codes
(the capped vocabularies come in as a side input, `vocabulary.ComputeVocabularies` "codes"), and
each bucket's masses per feature and per feature pair are summed with numpy into a table of
(code, mass) arrays. The tables of all buckets meet per feature key in a GroupByKey (each packed
into compressed bytes, `batches.pack`: with a few thousand items a bucket they are nearly as
large as the items) and are added in bucket order, so the sums are the same whatever order a runner delivers them in. An id token
belongs to one item only, so every mass that involves the id is complete inside its bucket: those
arrive as one number per bucket (added with math.fsum) and the corpus-sized id vocabulary is never
gathered.
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np

from pipelines import batches
from pipelines.vocabulary import transform_dense
from ssl_retrieval import schema as schema_lib

MISSING = "<MISSING>"
OOV = "<OOV>"
# Token codes of a feature: 0 missing, 1 out of vocabulary, 2 + i the i-th vocabulary value or
# the i-th dense bin (bin-8 .. bin7).
_MISSING_CODE, _OOV_CODE, _FIRST_CODE = 0, 1, 2
_NUM_DENSE_BINS = 16


dense_bin = schema_lib.dense_bin  # the binning formula lives with the schema


def _dense_code(z: float) -> int:
    return _FIRST_CODE + int(dense_bin(z)[len("bin") :]) + _NUM_DENSE_BINS // 2


def _feature_codes(bucket, feature, vocabulary, dense_stats):
    """One feature over a bucket's items in CSR form: (lengths, codes, weights), and the number
    of distinct codes the feature can have."""
    name = feature.name
    lengths, codes = [], []
    if feature.kind == schema_lib.DENSE:
        stats = dense_stats.get(name, {"mean": 0.0, "std": 1.0})
        for _, item in bucket:
            value = item.get(name)
            if value is None:
                codes.append(_MISSING_CODE)
            else:
                codes.append(
                    _dense_code((transform_dense(value, feature) - stats["mean"]) / stats["std"])
                )
        lengths = np.ones(len(bucket), np.int64)
        size = _FIRST_CODE + _NUM_DENSE_BINS
    else:
        get = vocabulary.get
        for _, item in bucket:
            value = item.get(name)
            if value is None:
                lengths.append(1)
                codes.append(_MISSING_CODE)
            elif isinstance(value, str):
                lengths.append(1)
                codes.append(get(value, -1) + _FIRST_CODE)  # -1 + 2 = the OOV code
            else:
                lengths.append(len(value))
                codes.extend(get(v, -1) + _FIRST_CODE for v in value)
        lengths = np.asarray(lengths, np.int64)
        size = _FIRST_CODE + len(vocabulary)
    codes = np.asarray(codes, np.int64)
    weights = np.repeat(1.0 / lengths, lengths)
    return lengths, codes, weights, size


def _summed(keys: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and their total masses."""
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=masses, minlength=len(unique))


def _mass_log_mass(masses: np.ndarray) -> float:
    masses = masses[masses > 0]
    return float(np.sum(masses * np.log(masses)))


def _pairs_of_values(lengths_i, lengths_j):
    """For every item, every (value of i, value of j): positions into the two CSR value arrays."""
    starts_i = np.cumsum(lengths_i) - lengths_i
    starts_j = np.cumsum(lengths_j) - lengths_j
    per_item = lengths_i * lengths_j
    item = np.repeat(np.arange(len(per_item)), per_item)
    offset = np.arange(per_item.sum()) - np.repeat(np.cumsum(per_item) - per_item, per_item)
    return (
        item,
        starts_i[item] + offset // lengths_j[item],
        starts_j[item] + offset % lengths_j[item],
    )


class _BucketMasses(beam.DoFn):
    """A bucket of items -> (feature key, packed (bucket, keys, masses, id_sum)) for every
    feature key.

    Feature keys are (i,) for marginals and (i, j), i < j, for joints. `keys, masses` is the
    bucket's table of token-code masses; for keys that involve the id feature the table is empty
    and `id_sum` holds the bucket's share of sum m log m.
    """

    def __init__(self, features):
        self._features = features
        self._id_index = next(i for i, f in enumerate(features) if f.kind == schema_lib.ID)

    def setup(self):
        batches.collect_less()

    def process(self, element, codes, dense_stats):
        for key, table in self._tables(element, codes, dense_stats):
            yield key, batches.pack([table])

    def _tables(self, element, codes, dense_stats):
        bucket_index, bucket = element
        features, id_index = self._features, self._id_index
        empty = np.zeros(0, np.int64), np.zeros(0)
        columns = {
            i: _feature_codes(bucket, f, codes.get(f.name, {}), dense_stats)
            for i, f in enumerate(features)
            if i != id_index
        }
        # Each id is its own token with mass 1: its m log m terms are 0.
        yield (id_index,), (bucket_index, *empty, 0.0)
        for i, (lengths_i, codes_i, weights_i, _) in columns.items():
            yield (i,), (bucket_index, *_summed(codes_i, weights_i), 0.0)
            # The id paired with feature i: an item's masses over its codes of i.
            item = np.repeat(np.arange(len(lengths_i)), lengths_i)
            _, masses = _summed(item * (codes_i.max(initial=0) + 1) + codes_i, weights_i)
            pair = (min(i, id_index), max(i, id_index))
            yield pair, (bucket_index, *empty, _mass_log_mass(masses))
            for j, (lengths_j, codes_j, weights_j, size_j) in columns.items():
                if j <= i:
                    continue
                _, a, b = _pairs_of_values(lengths_i, lengths_j)
                keys = codes_i[a] * size_j + codes_j[b]
                yield (i, j), (bucket_index, *_summed(keys, weights_i[a] * weights_j[b]), 0.0)


def _sum_mass_log_mass(element):
    """(feature key, every bucket's table) -> (feature key, sum over values of m log m)."""
    key, packed = element
    # bucket order: the same sums on every runner
    tables = sorted(batches.unpack(packed), key=lambda t: t[0])
    keys = np.concatenate([t[1] for t in tables])
    masses = np.concatenate([t[2] for t in tables])
    total = _mass_log_mass(_summed(keys, masses)[1]) if len(keys) else 0.0
    return key, math.fsum([total] + [t[3] for t in tables])


class ComputeMutualInformation(beam.PTransform):
    """Buckets of (item_id, item) -> (feature key, sum of m log m) for every feature and pair.

    Feature keys are (i,) for marginals and (i, j), i < j, for joints, i and j indices in the
    schema order. `finalize` turns these sums and the item count into the MI matrix.

    Args:
      schema: the dataset schema (feature order = matrix order).
      codes: side input (feature -> {value: vocabulary index}) from ComputeVocabularies.
      dense_stats: side input (feature -> {"mean", "std"}) from ComputeDenseStats.
    """

    def __init__(self, schema, codes, dense_stats):
        super().__init__()
        self._features = schema.features
        self._codes = codes
        self._dense_stats = dense_stats

    def expand(self, items):
        return (
            items
            | "BucketMasses"
            >> beam.ParDo(
                _BucketMasses(self._features), codes=self._codes, dense_stats=self._dense_stats
            )
            | "GroupByFeatureKey" >> beam.GroupByKey()
            | "SumMassLogMass" >> beam.Map(_sum_mass_log_mass)
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
