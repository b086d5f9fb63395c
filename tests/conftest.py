"""Shared test helpers."""

import os

import pytest


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


@pytest.fixture
def read_raw():
    """A function: raw dataset dir (JSON Lines, Parquet or CSV) -> (items, pairs) as validated."""
    return _read_raw
