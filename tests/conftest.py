"""Shared test helpers: a tiny data dir, reading a raw dataset dir, and two tiny exports (the page's
compare view)."""

import os

import pytest

from ssl_retrieval import testing
from ssl_retrieval.serving import exporter
from ssl_retrieval.training import trainer


def _read_raw(directory):
    """(items, pairs) of a raw dataset dir in any format, read and validated as the job does.

    Raises AssertionError if any record is a dead letter.
    """
    from pipelines import raw_io, readers
    from ssl_retrieval import schema as schema_lib

    schema = schema_lib.load(os.path.join(directory, "schema.json"))
    out = {}
    for name, columns in (
        ("items", readers.item_columns(schema)),
        ("pairs", readers.pair_columns()),
    ):
        source = readers.resolve(os.path.join(directory, f"{name}*"), name, "auto", columns)
        records = []
        for path, line, raw in readers.iter_records(source):
            if name == "items":
                record, error = raw_io.validate_item(schema.features, path, line, raw)
            else:
                record, error = raw_io.validate_pair(path, line, raw)
                if record is not None:
                    record = (record["query_id"], record["candidate_id"], record["weight"])
            assert error is None, error
            records.append(record)
        out[name] = records
    return out["items"], out["pairs"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny preprocessed data dir (`testing.make_data_dir`), one per test module."""
    return testing.make_data_dir(str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def read_raw():
    """A function: raw dataset dir (JSON Lines, Parquet or CSV) -> (items, pairs) as validated."""
    return _read_raw


@pytest.fixture(scope="session")
def two_exports(tmp_path_factory):
    """{"data_dir", "served", "compare"}: export dirs of a cfm and a baseline model, 30 steps each."""
    root = tmp_path_factory.mktemp("two_exports")
    data_dir = testing.make_data_dir(str(root / "data"))
    out = {"data_dir": data_dir}
    for name, method in (("served", "cfm"), ("compare", "baseline")):
        model_dir = str(root / f"model_{name}")
        trainer.run(testing.tiny_train_config(data_dir, model_dir, method=method, train_steps=30))
        export_dir = str(root / f"export_{name}")
        exporter.run(
            exporter.ExportConfig(data_dir=None, model_dir=model_dir, export_dir=export_dir, k=20)
        )
        out[name] = export_dir
    return out
