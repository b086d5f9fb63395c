"""The feature schema: the one description of item features, read by every part.

Two files use it:

* a **dataset schema** (your own JSON file, or the `schema.json` a built-in source
  writes beside its raw JSON Lines) says which item features exist and of what kind:

      {"features": [{"name": "item_id", "kind": "id"},
                    {"name": "tags", "kind": "multi_hot", "max_vocab": 5000, "min_count": 2},
                    {"name": "installed_size", "kind": "dense", "transform": "log"}]}

* the **preprocessed schema** (`<data_dir>/schema.json`, written by `pipelines.preprocess`) adds
  what the pipeline learned: vocabulary sizes and files, OOV buckets, dense normalisation
  constants, record counts and file patterns. The trainer builds its input layer from it alone.

Kinds:
  id:          the item id itself, one value per item, exactly one feature of this kind.
  categorical: one value per item (maintainer, section, developer).
  multi_hot:   a bag of values (tags, title unigrams).
  dense:       one float (size, popularity), normalised by the pipeline.

The module is pure Python (no TensorFlow), so Beam workers and the sources import it cheaply.

Record layout in the TFRecords (the contract between the pipeline and `ssl_retrieval.data`):
  items-*:        one tf.Example per item, key = feature name.
  train-*/eval-*: one tf.Example per pair, keys `query_<name>` and `candidate_<name>`, plus
                  `weight` (float, 1.0 when the raw pair had none).
  id/categorical/multi_hot values are raw strings (bytes_list, 0..n values; no value = missing);
  dense values are raw floats (float_list with 1 value; a missing value is an absent key, which
  `tf.io.FixedLenFeature(default_value=nan)` fills, while an empty list would fail). The model maps
  strings to vocabulary ids and normalises dense values with the constants from schema.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ssl_retrieval import atomic

ID = "id"
CATEGORICAL = "categorical"
MULTI_HOT = "multi_hot"
DENSE = "dense"
KINDS = (ID, CATEGORICAL, MULTI_HOT, DENSE)
SPARSE_KINDS = (ID, CATEGORICAL, MULTI_HOT)

DENSE_TRANSFORMS = ("none", "log")

QUERY_PREFIX = "query_"
CANDIDATE_PREFIX = "candidate_"
WEIGHT_KEY = "weight"

# Keys of a raw pair record (JSON Lines).
RAW_QUERY_ID = "query_id"
RAW_CANDIDATE_ID = "candidate_id"
RAW_WEIGHT = "weight"

_FEATURE_KEYS = {
    "name",
    "kind",
    "max_vocab",
    "min_count",
    "embedding_dim",
    "transform",
    # Written by the pipeline into the preprocessed schema:
    "vocab_size",
    "vocab_file",
    "oov_buckets",
    "mean",
    "std",
    "num_values_mean",
}


@dataclasses.dataclass(frozen=True)
class Feature:
    """One item feature.

    Attributes:
      name: feature name; also the key in raw item records and in item tf.Examples.
      kind: one of `KINDS`.
      max_vocab: keep at most this many values (by count); the rest go to OOV. None = no cap.
      min_count: drop values seen on fewer items than this (to OOV). The id vocabulary ignores
        both caps: it is the whole corpus.
      embedding_dim: per-feature embedding size; None = the trainer's `--embedding_dim`.
      transform: dense only: "none" or "log" (log1p before standardising). Default "log" for
        dense features, whose raw values (sizes, counts) are usually heavy-tailed.
      vocab_size: (preprocessed) number of in-vocabulary values, OOV buckets excluded.
      vocab_file: (preprocessed) path relative to the data dir, one value per line, most frequent
        first; line i is vocabulary id i + oov_buckets.
      oov_buckets: (preprocessed) number of OOV ids, which come first (ids 0..oov_buckets-1).
      mean, std: (preprocessed, dense) normalisation constants after `transform`.
      num_values_mean: (preprocessed, sparse) mean number of values per item (missing = 0).
    """

    name: str
    kind: str
    max_vocab: int | None = None
    min_count: int | None = None
    embedding_dim: int | None = None
    transform: str | None = None
    vocab_size: int | None = None
    vocab_file: str | None = None
    oov_buckets: int | None = None
    mean: float | None = None
    std: float | None = None
    num_values_mean: float | None = None

    @property
    def is_sparse(self) -> bool:
        return self.kind in SPARSE_KINDS

    @property
    def dense_transform(self) -> str:
        return self.transform or "log"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _validate_feature(raw: Any, index: int, source: str) -> Feature:
    where = f"{source}: features[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{where}: expected an object like {{'name': ..., 'kind': ...}}, got {raw!r}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: field 'name' must be a non-empty string, got {name!r}")
    where = f"{source}: feature {name!r}"
    unknown = sorted(set(raw) - _FEATURE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_FEATURE_KEYS)}")
    if name in (RAW_QUERY_ID, RAW_CANDIDATE_ID, WEIGHT_KEY) or name.startswith(
        (QUERY_PREFIX, CANDIDATE_PREFIX)
    ):
        raise ValueError(
            f"{where}: the name clashes with the pair record keys "
            f"({RAW_QUERY_ID}, {RAW_CANDIDATE_ID}, {WEIGHT_KEY}, prefixes "
            f"{QUERY_PREFIX!r}/{CANDIDATE_PREFIX!r}); rename the feature"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: field 'kind' is {kind!r}; expected one of {list(KINDS)}")
    for key in ("max_vocab", "min_count", "embedding_dim", "vocab_size", "oov_buckets"):
        value = raw.get(key)
        if value is None:
            continue
        minimum = 0 if key in ("vocab_size", "oov_buckets") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"{where}: field {key!r} must be an integer >= {minimum}, got {value!r}"
            )
    transform = raw.get("transform")
    if transform is not None:
        if kind != DENSE:
            raise ValueError(f"{where}: field 'transform' applies to dense features only")
        if transform not in DENSE_TRANSFORMS:
            raise ValueError(
                f"{where}: field 'transform' is {transform!r}; expected one of {list(DENSE_TRANSFORMS)}"
            )
    if kind == DENSE:
        for key in ("max_vocab", "min_count", "vocab_size", "vocab_file", "oov_buckets"):
            if raw.get(key) is not None:
                raise ValueError(f"{where}: field {key!r} does not apply to a dense feature")
    for key in ("mean", "std", "num_values_mean"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}: field {key!r} must be a number, got {value!r}")
    return Feature(**{k: raw.get(k) for k in _FEATURE_KEYS})


@dataclasses.dataclass(frozen=True)
class Schema:
    """An ordered, validated set of item features (dataset or preprocessed schema).

    Attributes:
      features: the features in their fixed order (the order of the MI matrix and of the
        model's input layer).
      counts: (preprocessed) record counts, e.g. {"items": .., "train_pairs": .., ...}.
      files: (preprocessed) file patterns relative to the data dir, e.g. {"train": "train-*"}.
    """

    features: tuple[Feature, ...]
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.features:
            raise ValueError("schema: 'features' is empty; name at least the id feature")
        seen = set()
        for f in self.features:
            if f.name in seen:
                raise ValueError(f"schema: feature {f.name!r} is defined twice")
            seen.add(f.name)
        ids = [f.name for f in self.features if f.kind == ID]
        if len(ids) != 1:
            raise ValueError(
                f"schema: exactly one feature must have kind 'id', found {len(ids)}: {ids}"
            )

    @property
    def id_feature(self) -> Feature:
        return next(f for f in self.features if f.kind == ID)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def sparse_features(self) -> list[Feature]:
        return [f for f in self.features if f.is_sparse]

    @property
    def dense_features(self) -> list[Feature]:
        return [f for f in self.features if f.kind == DENSE]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"schema has no feature {name!r}; features: {self.names}")

    def replace_features(self, features: Sequence[Feature]) -> Schema:
        return dataclasses.replace(self, features=tuple(features))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"features": [f.to_json() for f in self.features]}
        if self.counts:
            out["counts"] = dict(self.counts)
        if self.files:
            out["files"] = dict(self.files)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"


def from_json(obj: Any, source: str = "schema") -> Schema:
    """Builds a validated `Schema` from parsed JSON.

    Raises:
      ValueError: naming `source` and the offending feature or field.
    """
    if not isinstance(obj, Mapping) or "features" not in obj:
        raise ValueError(f"{source}: expected an object with a 'features' list")
    unknown = sorted(set(obj) - {"features", "counts", "files"})
    if unknown:
        raise ValueError(f"{source}: unknown top-level field(s) {unknown}")
    raw_features = obj["features"]
    if not isinstance(raw_features, list):
        raise ValueError(f"{source}: 'features' must be a list, got {type(raw_features).__name__}")
    features = tuple(_validate_feature(raw, i, source) for i, raw in enumerate(raw_features))
    try:
        return Schema(
            features=features,
            counts=dict(obj.get("counts") or {}),
            files=dict(obj.get("files") or {}),
        )
    except ValueError as e:
        raise ValueError(f"{source}: {str(e).removeprefix('schema: ')}") from None


def load(path: str) -> Schema:
    """Loads and validates a schema JSON file (dataset or preprocessed).

    Raises:
      ValueError: the file is missing, not JSON, or not a valid schema (message names the file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read schema file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte {e.start}: {e.object[e.start : e.start + 1]!r}); "
            "a schema is JSON text"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    return from_json(obj, source=path)


def load_from_data_dir(data_dir: str) -> Schema:
    """Loads `<data_dir>/schema.json` written by the preprocessing pipeline."""
    schema = load(os.path.join(data_dir, "schema.json"))
    missing = [f.name for f in schema.sparse_features if f.vocab_file is None]
    if missing:
        raise ValueError(
            f"{data_dir}/schema.json: features {missing} have no 'vocab_file'; this looks like a "
            "dataset schema, not the output of `python -m pipelines.preprocess`"
        )
    return schema


def save(schema: Schema, path: str) -> None:
    """Writes the schema atomically (temporary file, then rename)."""
    atomic.write_text(path, schema.dumps())


def dense_bin(z: float) -> str:
    """The mutual-information token of a standardised dense value: half-standard-deviation bins,
    clipped to bin-8..bin7 (docs/contracts.md). The Beam job and the test reference share it."""
    return f"bin{min(7, max(-8, math.floor(2 * z)))}"
