"""Writing raw data in the project's input formats, sharded, in an atomic output dir.

Every source writes `items*.<ext>`, `pairs*.<ext>`, `schema.json` and `README.md` into a
temporary sibling of the output directory and renames it into place only when complete, so an
interrupted run never leaves a half-written dataset and an existing one is never half-replaced.

Formats (`FORMATS`, the `--format` of `python -m ssl_retrieval.sources`): JSON Lines (the
default), Parquet (`id`/`categorical` string columns, `multi_hot` list<string>, `dense` double)
and CSV with a header (a multi-hot cell joins its values with `|`). `pipelines.preprocess` reads
all three into the same records.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

from ssl_retrieval import atomic
from ssl_retrieval import schema as schema_lib

JSONL = "jsonl"
PARQUET = "parquet"
CSV = "csv"
FORMATS = (JSONL, PARQUET, CSV)
CSV_LIST_SEPARATOR = "|"
# The columns of a pair file, as features (the pair record has no schema of its own).
PAIR_FEATURES = [
    {"name": schema_lib.RAW_QUERY_ID, "kind": schema_lib.ID},
    {"name": schema_lib.RAW_CANDIDATE_ID, "kind": schema_lib.ID},
]


def shard_name(prefix: str, index: int, num_shards: int, fmt: str = JSONL) -> str:
    """`items.jsonl` for one shard, `items-00003-of-00008.jsonl` for several (or .parquet, .csv)."""
    if num_shards == 1:
        return f"{prefix}.{fmt}"
    return f"{prefix}-{index:05d}-of-{num_shards:05d}.{fmt}"


class ShardedJsonlWriter:
    """Writes JSON objects round-robin over `num_shards` files named by `shard_name`.

    Round-robin keeps shards the same size without knowing the record count up front.
    """

    def __init__(self, directory: str, prefix: str, num_shards: int = 1):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._files = [
            open(os.path.join(directory, shard_name(prefix, i, num_shards)), "w", encoding="utf-8")
            for i in range(num_shards)
        ]
        self.count = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        self._files[self.count % len(self._files)].write(line + "\n")
        self.count += 1

    def write_lines(self, lines: list[str]) -> None:
        """Writes pre-serialised JSON lines (the fast path for vectorised generators)."""
        for line in lines:
            self._files[self.count % len(self._files)].write(line + "\n")
            self.count += 1

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> ShardedJsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ShardedRecordWriter:
    """Round-robin over shards like ShardedJsonlWriter, for formats that need the column kinds."""

    def __init__(self, num_shards: int, features: Sequence[dict]):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self._kinds = {f["name"]: f["kind"] for f in features}
        self.count = 0

    def write_lines(self, lines: list[str]) -> None:
        """Writes pre-serialised JSON lines (what the vectorised generators produce)."""
        for line in lines:
            self.write(json.loads(line))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShardedParquetWriter(_ShardedRecordWriter):
    """Parquet shards with one column per feature, typed by kind; rows buffered into row groups.

    Keys that are not features are an error (a silent drop would lose data).
    """

    def __init__(
        self,
        directory: str,
        prefix: str,
        num_shards: int,
        features: Sequence[dict],
        row_group_rows: int = 50_000,
    ):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(num_shards, features)
        types = {
            schema_lib.ID: pa.string(),
            schema_lib.CATEGORICAL: pa.string(),
            schema_lib.MULTI_HOT: pa.list_(pa.string()),
            schema_lib.DENSE: pa.float64(),
        }
        self._schema = pa.schema([(f["name"], types[f["kind"]]) for f in features])
        self._row_group_rows = row_group_rows
        self._writers = [
            pq.ParquetWriter(
                os.path.join(directory, shard_name(prefix, i, num_shards, PARQUET)), self._schema
            )
            for i in range(num_shards)
        ]
        self._buffers: list[list[dict]] = [[] for _ in range(num_shards)]

    def write(self, record: dict) -> None:
        unknown = set(record) - set(self._kinds)
        if unknown:
            raise ValueError(f"record has keys {sorted(unknown)} that are not columns: {record}")
        shard = self.count % len(self._writers)
        self._buffers[shard].append(record)
        self.count += 1
        if len(self._buffers[shard]) >= self._row_group_rows:
            self._flush(shard)

    def _flush(self, shard: int) -> None:
        import pyarrow as pa

        if self._buffers[shard]:
            table = pa.Table.from_pylist(self._buffers[shard], schema=self._schema)
            self._writers[shard].write_table(table)
            self._buffers[shard] = []

    def close(self) -> None:
        for shard, writer in enumerate(self._writers):
            self._flush(shard)
            writer.close()


class ShardedCsvWriter(_ShardedRecordWriter):
    """CSV shards with a header of the feature names; multi-hot values joined by `|`."""

    def __init__(self, directory: str, prefix: str, num_shards: int, features: Sequence[dict]):
        super().__init__(num_shards, features)
        self._names = [f["name"] for f in features]
        self._files = [
            open(  # closed in close()
                os.path.join(directory, shard_name(prefix, i, num_shards, CSV)),
                "w",
                encoding="utf-8",
                newline="",
            )
            for i in range(num_shards)
        ]
        self._writers = [csv.writer(f, lineterminator="\n") for f in self._files]
        for w in self._writers:
            w.writerow(self._names)

    def _cell(self, name: str, value) -> str:
        if value is None:
            return ""
        if self._kinds[name] == schema_lib.MULTI_HOT:
            for v in value:
                if CSV_LIST_SEPARATOR in v:
                    raise ValueError(
                        f"{name}: value {v!r} contains the CSV list separator "
                        f"{CSV_LIST_SEPARATOR!r}; write this source as JSON Lines or Parquet"
                    )
            return CSV_LIST_SEPARATOR.join(value)
        if isinstance(value, float):
            return repr(value)
        return str(value)

    def write(self, record: dict) -> None:
        unknown = set(record) - set(self._kinds)
        if unknown:
            raise ValueError(f"record has keys {sorted(unknown)} that are not columns: {record}")
        row = [self._cell(name, record.get(name)) for name in self._names]
        self._writers[self.count % len(self._writers)].writerow(row)
        self.count += 1

    def close(self) -> None:
        for f in self._files:
            f.close()


def open_writer(fmt: str, directory: str, prefix: str, num_shards: int, features: Sequence[dict]):
    """A sharded writer of `fmt` (one of FORMATS) with `.write(dict)`, `.write_lines`, `.count`.

    `features` are the dataset schema's features for items, `PAIR_FEATURES` for pairs.
    """
    if fmt == JSONL:
        return ShardedJsonlWriter(directory, prefix, num_shards)
    if fmt == PARQUET:
        return ShardedParquetWriter(directory, prefix, num_shards, features)
    if fmt == CSV:
        return ShardedCsvWriter(directory, prefix, num_shards, features)
    raise ValueError(f"--format={fmt!r} is not one of {list(FORMATS)}")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--format={fmt!r} is not one of {list(FORMATS)}")


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Raises ValueError if `output_dir` exists with content and `overwrite` is False."""
    if os.path.isfile(output_dir):
        raise ValueError(f"--output_dir={output_dir} is a file, not a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise ValueError(
            f"--output_dir={output_dir} exists and is not empty; choose another directory or "
            "pass --overwrite to replace it (the old one is removed only after the new one is "
            "complete)"
        )


@contextlib.contextmanager
def atomic_output_dir(output_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary directory that replaces `output_dir` when the block succeeds.

    On an exception the temporary directory is removed and `output_dir` is left as it was.
    """
    check_output_dir(output_dir, overwrite)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = os.path.join(parent, f".{os.path.basename(output_dir)}.old-{uuid.uuid4().hex[:8]}")
    atomic.replace_dir(tmp, output_dir, old)


def write_schema(directory: str, features: list[dict]) -> schema_lib.Schema:
    """Validates the dataset schema and writes it as `schema.json`."""
    schema = schema_lib.from_json({"features": features}, source="built-in source schema")
    schema_lib.save(schema, os.path.join(directory, "schema.json"))
    return schema


_FILE_LINES = {
    JSONL: [
        "- `items*.jsonl`: one JSON object per item, keys = feature names from `schema.json`.",
        "- `pairs*.jsonl`: one JSON object per observed pair: `query_id`, `candidate_id`.",
    ],
    PARQUET: [
        "- `items*.parquet`: one row per item, one column per feature of `schema.json` "
        "(string, list<string> for multi_hot, double for dense; null = missing).",
        "- `pairs*.parquet`: one row per observed pair: `query_id`, `candidate_id` (strings).",
    ],
    CSV: [
        "- `items*.csv`: a header naming the features of `schema.json`, then one row per item; "
        f"multi_hot values joined by `{CSV_LIST_SEPARATOR}`, an empty cell = missing.",
        "- `pairs*.csv`: a header `query_id,candidate_id`, then one row per observed pair.",
    ],
}


def write_readme(directory: str, title: str, summary: dict, notes: str, fmt: str = JSONL) -> None:
    """Writes README.md: what the files are and the counts of this run."""
    lines = [
        f"# {title}",
        "",
        "Raw data in the ssl_retrieval input format (docs/contracts.md):",
        "",
        *_FILE_LINES[fmt],
        "- `schema.json`: the dataset schema (feature names and kinds).",
        "- `summary.json`: the counts below, machine-readable.",
        "",
        "## Counts",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in summary.items()]
    lines += ["", notes.strip(), ""]
    with open(os.path.join(directory, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    with open(os.path.join(directory, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")


def pair_lines(query, candidate, item_name: Callable[[int], str]) -> list[str]:
    """The JSON lines of pairs of item indices (`query`, `candidate`: [n] integers), each item
    named by `item_name`: the fast path of the vectorised sources (see `write_dataset`)."""
    return [
        f'{{"query_id":"{item_name(int(q))}","candidate_id":"{item_name(int(c))}"}}'
        for q, c in zip(query, candidate, strict=True)
    ]


def chunks(total: int, size: int, source: str, what: str) -> Iterator[tuple[int, int, int]]:
    """(chunk number, start, stop) over `total` records in chunks of `size`, logging progress
    after each chunk ("synthetic: 400000 / 1000000 pairs")."""
    for chunk, start in enumerate(range(0, total, size)):
        stop = min(total, start + size)
        yield chunk, start, stop
        logging.info("%s: %d / %d %s", source, stop, total, what)


def write_dataset(
    output_dir: str,
    features: list[dict],
    items: Iterable,
    pairs: Iterable,
    describe: Callable[[int, int], tuple[str, dict, str]],
    file_format: str = JSONL,
    num_shards: int = 1,
    overwrite: bool = False,
) -> dict:
    """Writes a whole raw dataset into `output_dir` atomically: what every source does.

    Args:
      output_dir: created; must not exist with content unless `overwrite`.
      features: the items' schema features (written as schema.json).
      items, pairs: iterables consumed in that order, each element a record (dict) or a chunk of
        pre-serialised JSON lines (list of str, the fast path of vectorised generators); a pairs
        generator may rely on state the items generator built.
      describe: (items written, pairs written) -> (title, summary, notes) of README.md and
        summary.json; called after both are written, so generators can count what they skipped.
      file_format: "jsonl", "parquet" or "csv" (`FORMATS`).
      num_shards: shards per file kind (items, pairs).
      overwrite: replace an existing `output_dir` (only once the new one is complete).

    Returns: the summary.
    """
    check_format(file_format)
    with atomic_output_dir(output_dir, overwrite) as tmp:
        counts = []
        for prefix, rows, columns in (("items", items, features), ("pairs", pairs, PAIR_FEATURES)):
            with open_writer(file_format, tmp, prefix, num_shards, columns) as out:
                for row in rows:
                    if isinstance(row, dict):
                        out.write(row)
                    else:
                        out.write_lines(row)
            counts.append(out.count)
        title, summary, notes = describe(*counts)
        write_schema(tmp, features)
        write_readme(tmp, title, summary, notes, file_format)
    return summary


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
