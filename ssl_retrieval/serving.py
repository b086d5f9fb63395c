"""The Python API over an export: `ssl_retrieval.load(export_dir).similar(["vim"], k=10)`.

`load` takes a version directory or its parent (the highest numbered version wins), imports
`scann` (its ops must be registered before a SavedModel holding them loads) and validates every
request here, so callers get a `ValueError` naming the problem instead of a TensorFlow error.
"""

from __future__ import annotations

import json
import math
import os
import threading

import numpy as np

from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf


class UnknownItemError(ValueError):
    """Some requested item ids are not in the exported corpus."""

    def __init__(self, ids):
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:10])
        super().__init__(f"unknown item id(s): {shown}" + (" ..." if len(self.ids) > 10 else ""))


def versions(export_dir: str) -> list[int]:
    """Numbered, complete (saved_model.pb present) version directories, ascending."""
    if not os.path.isdir(export_dir):
        return []
    found = []
    for name in os.listdir(export_dir):
        if name.isdigit() and os.path.exists(os.path.join(export_dir, name, "saved_model.pb")):
            found.append(int(name))
    return sorted(found)


def resolve(export_dir: str) -> str:
    """A version dir as is, else the newest version under `export_dir`."""
    if os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        return export_dir
    found = versions(export_dir)
    if not found:
        raise ValueError(
            f"{export_dir}: no SavedModel version found (python -m ssl_retrieval.export)"
        )
    return os.path.join(export_dir, str(found[-1]))


class SimilarItems:
    """A loaded export. Thread-safe: TensorFlow functions may be called concurrently."""

    def __init__(self, version_dir: str):
        import scann  # noqa: F401, PLC0415  (registers the ScaNN ops before loading)

        self.path = version_dir
        with open(os.path.join(version_dir, "export_info.json")) as f:
            self.info = json.load(f)
        self.version = int(self.info["version"])
        self.max_k = int(self.info["max_k"])
        self.features = self.info["features"]
        self._module = tf.saved_model.load(version_dir)
        self._lock = threading.Lock()

    def _check_k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ValueError(f"k must be an integer, got {k!r}")
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must be between 1 and {self.max_k}, got {k}")
        return int(k)

    def similar(self, item_ids, k: int = 10) -> list[list[tuple[str, float]]]:
        """Neighbours of corpus items, each list best first, the item itself excluded.

        Raises:
          UnknownItemError: an id is not in the corpus (all are checked first).
          ValueError: bad ids or k.
        """
        k = self._check_k(k)
        if isinstance(item_ids, str) or not all(isinstance(i, str) for i in item_ids):
            raise ValueError("item_ids must be a list of strings")
        if not item_ids:
            return []
        out = self._module.similar_items(tf.constant(list(item_ids)), tf.constant(k, tf.int32))
        found = out["found"].numpy()
        if not found.all():
            raise UnknownItemError([i for i, ok in zip(item_ids, found, strict=True) if not ok])
        return _pairs(out)

    def _feature_tensors(self, records: list[dict]) -> dict:
        if not isinstance(records, list) or not records:
            raise ValueError("records must be a non-empty list of feature dicts")
        known = {f["name"] for f in self.features}
        columns = {}
        for f in self.features:
            name, kind = f["name"], f["kind"]
            values = []
            for i, record in enumerate(records):
                if not isinstance(record, dict):
                    raise ValueError(f"record {i}: expected an object of features, got {record!r}")
                unknown = sorted(set(record) - known)
                if unknown:
                    raise ValueError(
                        f"record {i}: unknown feature(s) {unknown}; known: {sorted(known)}"
                    )
                values.append(_check_value(record.get(name), kind, i, name))
            if kind == schema_lib.DENSE:
                columns[name] = tf.constant(values, tf.float32)
            else:
                width = max(1, max(len(v) for v in values))
                padded = [v + [""] * (width - len(v)) for v in values]
                columns[name] = tf.constant(padded, tf.string)
        return columns

    def similar_by_features(self, records: list[dict], k: int = 10):
        """Neighbours of items described by raw features (e.g. a new item, cold start)."""
        k = self._check_k(k)
        out = self._module.similar_items_by_features(
            self._feature_tensors(records), tf.constant(k, tf.int32)
        )
        return _pairs(out)

    def embed(self, records: list[dict]) -> np.ndarray:
        """Item-tower embeddings [len(records), d] of raw feature records."""
        return self._module.item_embedding(self._feature_tensors(records))["embedding"].numpy()


def _check_value(value, kind, index, name):
    where = f"record {index}: feature {name!r}"
    if kind == schema_lib.DENSE:
        if value is None:
            return float("nan")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if value is None:
        return []
    if kind == schema_lib.MULTI_HOT:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of strings, got {value!r}")
        return [v for v in value if v]
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return [value] if value else []


def _pairs(out) -> list[list[tuple[str, float]]]:
    ids = out["ids"].numpy()
    scores = out["scores"].numpy()
    return [
        [(i.decode(), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i]
        for row_ids, row_scores in zip(ids, scores, strict=True)
    ]


def load(export_dir: str) -> SimilarItems:
    """Loads the newest version under `export_dir` (or that version dir itself)."""
    return SimilarItems(resolve(export_dir))
