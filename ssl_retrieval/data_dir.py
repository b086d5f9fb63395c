"""The one reader of a preprocessed data directory, and the names of its files.

`pipelines.preprocess` (and the test data builder `ssl_retrieval.testing`) write these files under
these names; everything that reads them goes through a `DataDir`, which reads each file once, on
first use, and is passed down (`DataDir.of(path_or_data_dir)`). The format is specified in
docs/contracts.md. Pure Python: the TFRecord files are read by `ssl_retrieval.data`.
"""

from __future__ import annotations

import functools
import glob
import json
import os

from ssl_retrieval import schema as schema_lib

SCHEMA = "schema.json"
MUTUAL_INFO = "mutual_info.json"
STATS = "stats.json"
README = "README.md"
VOCAB_DIR = "vocab"
STATS_DIR = "stats"
# stats.json names these under "files"; these are the names the writers give them.
CANDIDATE_COUNTS = "stats/candidate_counts.tsv"
HEAD_ITEMS = "stats/head_items.txt"
COLD_ITEMS = "stats/cold_items.txt"
SLICES = ("head_items", "cold_items")
STATS_FILES = {
    "candidate_counts": CANDIDATE_COUNTS,
    "head_items": HEAD_ITEMS,
    "cold_items": COLD_ITEMS,
}


def vocab_file(feature: str) -> str:
    """The vocabulary of `feature`, relative to the data dir (schema.json's `vocab_file`)."""
    return f"{VOCAB_DIR}/{feature}.txt"


class DataDir:
    """A preprocessed data dir: schema, stats, mutual information, vocabularies, candidate
    counts, slices and file lists, each read once.

    Raises ValueError naming the file when one is missing.
    """

    def __init__(self, path: str):
        self.path = str(path)

    @classmethod
    def of(cls, data_dir: str | DataDir) -> DataDir:
        """`data_dir` itself when it is a DataDir (already read files are kept), else a new one."""
        return data_dir if isinstance(data_dir, DataDir) else cls(data_dir)

    def __repr__(self) -> str:
        return f"DataDir({self.path!r})"

    def __str__(self) -> str:
        return self.path

    def __fspath__(self) -> str:
        return self.path

    def join(self, relative: str) -> str:
        return os.path.join(self.path, relative)

    def _open(self, relative: str, mode: str = "r"):
        try:
            return open(self.join(relative), mode, encoding=None if "b" in mode else "utf-8")
        except FileNotFoundError:
            raise ValueError(
                f"{self.path}: no {relative}; is this a data dir written by "
                "`python -m pipelines.preprocess`?"
            ) from None

    def _json(self, relative: str) -> dict:
        with self._open(relative) as f:
            return json.load(f)

    def _lines(self, relative: str) -> list[str]:
        with self._open(relative) as f:
            return [line.rstrip("\n") for line in f]

    @functools.cached_property
    def schema(self) -> schema_lib.Schema:
        """The preprocessed schema (schema.json)."""
        if not os.path.exists(self.join(SCHEMA)):
            self._open(SCHEMA)  # raises the error naming the file
        return schema_lib.load_from_data_dir(self.path)

    @functools.cached_property
    def stats(self) -> dict:
        """stats.json: counts and the names of the stats files."""
        return self._json(STATS)

    @functools.cached_property
    def mutual_info(self) -> dict:
        """mutual_info.json, checked to list the schema's features in its order."""
        mi = self._json(MUTUAL_INFO)
        if mi["features"] != self.schema.names:
            raise ValueError(
                f"{self.path}/{MUTUAL_INFO} lists features {mi['features']} but {SCHEMA} has "
                f"{self.schema.names}; re-run the preprocessing job"
            )
        return mi

    @functools.cache  # noqa: B019  (one DataDir per run; its vocabularies live as long)
    def vocabulary(self, feature: str) -> list[str]:
        """The vocabulary of a sparse feature, most frequent value first."""
        return self._lines(self.schema.feature(feature).vocab_file)

    @functools.cached_property
    def candidate_counts(self) -> tuple[list[str], list[float]]:
        """(ids, training pairs) of each training candidate (stats/candidate_counts.tsv)."""
        ids, counts = [], []
        for line in self._lines(self.stats["files"]["candidate_counts"]):
            item_id, count = line.split("\t")
            ids.append(item_id)
            counts.append(float(count))
        return ids, counts

    def slice_ids(self, name: str) -> list[str]:
        """The ids of a slice, "head_items" or "cold_items"."""
        if name not in SLICES:
            raise ValueError(f"slice must be one of {list(SLICES)}, got {name!r}")
        return self._lines(self.stats["files"][name])

    def files(self, split: str) -> list[str]:
        """Sorted files of `split` ("train", "validation", "eval" or "items"); ValueError if none."""
        return find_files(self.path, self.schema, split)


def find_files(path: str, schema: schema_lib.Schema, split: str) -> list[str]:
    """Sorted files of `split` under `path` by the schema's file patterns; ValueError if none."""
    pattern = os.path.join(os.fspath(path), schema.files.get(split, f"{split}-*.tfrecord"))
    found = sorted(glob.glob(pattern))
    if not found:
        raise ValueError(f"{os.fspath(path)}: no {split} files match {pattern}")
    return found
