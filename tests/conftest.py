"""Shared test helpers: a tiny data dir, reading and checking a raw dataset dir, a tiny trained
model and two tiny exports (the page's compare view)."""

import glob
import json
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


def _check_source_output(directory, num_items, num_pairs):
    """What every source promises of the JSON Lines dataset it writes: `num_items` items with
    distinct ids and the schema's fields, `num_pairs` pairs of two distinct items of it.

    Returns:
      (items, pairs, schema), the records in file order, shard after shard.
    """
    from ssl_retrieval import schema as schema_lib

    records = {}
    for name in ("items", "pairs"):
        records[name] = []
        for path in sorted(glob.glob(os.path.join(directory, f"{name}*.jsonl"))):
            with open(path) as f:
                records[name] += [json.loads(line) for line in f]
    items, pairs = records["items"], records["pairs"]
    ids = {i["item_id"] for i in items}
    assert len(items) == len(ids) == num_items
    assert len(pairs) == num_pairs
    assert all(p["query_id"] in ids and p["candidate_id"] in ids for p in pairs)
    assert all(p["query_id"] != p["candidate_id"] for p in pairs)
    schema = schema_lib.load(os.path.join(directory, "schema.json"))
    assert set(items[0]) == set(schema.names)
    return items, pairs, schema


@pytest.fixture
def check_source_output():
    """A function: (raw dataset dir, items, pairs) -> (items, pairs, schema), checked."""
    return _check_source_output


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny preprocessed data dir (`testing.make_data_dir`), one per test module."""
    return testing.make_data_dir(str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def read_raw():
    """A function: raw dataset dir (JSON Lines, Parquet or CSV) -> (items, pairs) as validated."""
    return _read_raw


@pytest.fixture(scope="session")
def cfm_model(tmp_path_factory):
    """{"data_dir", "model_dir"}: a cfm model trained 30 steps on a tiny data dir (no validation
    split). Tests that write into the model dir remove what they wrote."""
    root = tmp_path_factory.mktemp("cfm_model")
    data_dir = testing.make_data_dir(str(root / "data"))
    model_dir = str(root / "model")
    trainer.run(testing.tiny_train_config(data_dir, model_dir, method="cfm", train_steps=30))
    return {"data_dir": data_dir, "model_dir": model_dir}


@pytest.fixture(scope="session")
def two_exports(tmp_path_factory, cfm_model):
    """{"data_dir", "served", "compare"}: export dirs of a cfm and a baseline model, 30 steps each."""
    root = tmp_path_factory.mktemp("two_exports")
    data_dir = cfm_model["data_dir"]
    baseline = str(root / "model_compare")
    trainer.run(testing.tiny_train_config(data_dir, baseline, method="baseline", train_steps=30))
    out = {"data_dir": data_dir}
    for name, model_dir in (("served", cfm_model["model_dir"]), ("compare", baseline)):
        export_dir = str(root / f"export_{name}")
        exporter.run(
            exporter.ExportConfig(data_dir=None, model_dir=model_dir, export_dir=export_dir, k=20)
        )
        out[name] = export_dir
    return out
