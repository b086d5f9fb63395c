"""Input formats of the preprocessing job: JSON Lines, Parquet, CSV, and a BigQuery table.

Every reader yields the same elements, batches (lists, `batches.BATCH_SIZE` at most) of
`(source, line, raw)` records, that `raw_io.ParseItems` and `raw_io.ParsePairs` validate: `raw`
is a JSON line (JSON Lines; its bytes when some are not UTF-8) or a dict with the Python types a
JSON object would have (str, list of str, int / float, None) for the others. So the records, the
dead letters (file, line, field, reason) and the counts are the same whatever the format, and the
outputs are byte-identical for the same data. A CSV row or Parquet row holding bytes that are not
UTF-8 is a `raw_io.Unreadable` naming the column (no element of the job may hold them as text).

- **JSON Lines** (`.jsonl`, `.json`, `.ndjson`, and any unknown extension): `raw_io.ReadJsonLines`.
- **Parquet** (`.parquet`, `.pq`): `id` and `categorical` features are string columns,
  `multi_hot` a list-of-string column, `dense` an integer or floating column; pairs have string
  `query_id`, `candidate_id` and an optional numeric `weight`. Other columns are ignored. Every
  file's footer is checked before the job starts: a missing column, a column of another type
  (no value is ever cast) or a file that is not Parquet is one error naming file and column. A
  null is a missing value (a null id is a dead letter). `line` is the row number in the file,
  from 1. Row groups are the unit of parallelism. Beam's `ReadFromParquet` yields rows without
  their file and row number, which dead letters need, so `ReadParquet` reads row groups itself,
  the way Beam's Parquet source does (pyarrow through Beam's FileSystems: local, gs://, s3://).
- **CSV with a header** (`.csv`, RFC 4180 quoting): one row per record, columns named as for
  Parquet; an empty cell is a missing value; a `multi_hot` cell holds its values joined by the
  list separator (`|` by default, `--csv_list_separator`), so a value cannot contain it; a
  `dense` cell is a decimal number (anything else, e.g. `1_000`, is a dead letter, not a cast).
  A row with more or fewer cells than the header is a dead letter. `line` is the line where the
  row starts (the header is line 1).
- **BigQuery** (`--input_format=bigquery`, `--items=PROJECT:DATASET.TABLE`): Beam's
  `ReadFromBigQuery` rows are already such dicts (STRING, REPEATED STRING, INT64 / FLOAT64).
  Rows have no line numbers: a dead letter names the table, line 0, the field and the row.

Compressed files (`.gz`, `.bz2`, `.zst`, ...) work for JSON Lines and CSV; the format is read
from the extension before the compression suffix.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import batches, raw_io
from ssl_retrieval import schema as schema_lib

AUTO = "auto"
JSONL = "jsonl"
PARQUET = "parquet"
CSV = "csv"
BIGQUERY = "bigquery"
FORMATS = (AUTO, JSONL, PARQUET, CSV, BIGQUERY)

_EXTENSIONS = {
    ".jsonl": JSONL,
    ".json": JSONL,
    ".ndjson": JSONL,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".csv": CSV,
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".deflate", ".zst", ".zstd", ".xz", ".lzma")
DEFAULT_CSV_LIST_SEPARATOR = "|"
# The job sizes its output shards from the input's size as JSON Lines. On the synthetic source the
# JSON Lines are 3.3x a Parquet file's uncompressed column data and 2.5x the CSV.
_PARQUET_TO_JSON_BYTES = 3.0
_CSV_TO_JSON_BYTES = 2.5
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


@dataclasses.dataclass(frozen=True)
class Column:
    """A column the job reads: its name, the schema kind of its values, and whether it must exist."""

    name: str
    kind: str
    required: bool = True


def item_columns(schema: schema_lib.Schema) -> tuple[Column, ...]:
    return tuple(Column(f.name, f.kind) for f in schema.features)


def pair_columns() -> tuple[Column, ...]:
    return (
        Column(schema_lib.RAW_QUERY_ID, schema_lib.ID),
        Column(schema_lib.RAW_CANDIDATE_ID, schema_lib.ID),
        Column(schema_lib.RAW_WEIGHT, schema_lib.DENSE, required=False),
    )


@dataclasses.dataclass(frozen=True)
class InputSource:
    """One resolved input (items or pairs): what to read and how, decided before the job runs.

    Attributes:
      format: JSONL, PARQUET, CSV or BIGQUERY.
      files: the matched files (the table spec for BIGQUERY).
      columns: the columns to read and their kinds.
      row_groups: PARQUET: (file, row group index, rows before it, columns present).
      estimated_bytes: the input's size as JSON Lines, for shard counts; None for BIGQUERY.
      csv_list_separator: CSV: the separator of multi-hot values in a cell.
    """

    format: str
    files: tuple[str, ...]
    columns: tuple[Column, ...]
    row_groups: tuple[tuple[str, int, int, tuple[str, ...]], ...] = ()
    estimated_bytes: int | None = None
    csv_list_separator: str = DEFAULT_CSV_LIST_SEPARATOR


def format_of_file(path: str) -> str | None:
    """The format a file's extension names (compression suffix ignored), or None if unknown."""
    name = os.path.basename(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _EXTENSIONS.get(os.path.splitext(name)[1])


def resolve(
    pattern: str,
    flag: str,
    input_format: str,
    columns: tuple[Column, ...],
    csv_list_separator: str = DEFAULT_CSV_LIST_SEPARATOR,
) -> InputSource:
    """Matches `pattern`, decides its format and checks every file's columns up front.

    Args:
      pattern: glob of input files, or a BigQuery table spec with `input_format="bigquery"`.
      flag: the flag's name for messages, e.g. "--items".
      input_format: one of FORMATS; AUTO decides by extension (unknown extensions: JSON Lines).
      columns: the columns the records need.
      csv_list_separator: separator of multi-hot values in a CSV cell.

    Raises:
      ValueError: no file matches, files of several formats, a Parquet file that cannot be read or
        lacks a column or has one of another type, a CSV header without a needed column. The
        message names the flag or the file and the column.
    """
    if input_format not in FORMATS:
        raise ValueError(f"--input_format={input_format!r} is not one of {list(FORMATS)}")
    if input_format == BIGQUERY:
        if not re.fullmatch(r"([\w.-]+[:.])?\w+\.[\w$-]+", pattern):
            raise ValueError(
                f"{flag}={pattern}: not a BigQuery table; expected PROJECT:DATASET.TABLE or "
                "DATASET.TABLE"
            )
        return InputSource(BIGQUERY, (pattern,), columns)
    files = raw_io.match_files(pattern, flag)
    fmt = input_format
    if fmt == AUTO:
        found = {f: format_of_file(f) or JSONL for f in files}
        kinds = sorted(set(found.values()))
        if len(kinds) > 1:
            examples = ", ".join(f"{next(f for f in files if found[f] == k)} ({k})" for k in kinds)
            raise ValueError(
                f"{flag}={pattern}: files of several formats ({examples}); match one format, or "
                "pass --input_format"
            )
        fmt = kinds[0]
    if not csv_list_separator or len(csv_list_separator) != 1 or csv_list_separator in ',"\r\n':
        raise ValueError(
            f"--csv_list_separator={csv_list_separator!r}: must be one character other than the "
            "comma, the quote and a line break"
        )
    if fmt == PARQUET:
        row_groups, size = [], 0
        for path in files:
            groups, uncompressed = inspect_parquet(path, columns)
            row_groups += groups
            size += uncompressed
        return InputSource(
            PARQUET,
            tuple(files),
            columns,
            row_groups=tuple(row_groups),
            estimated_bytes=int(size * _PARQUET_TO_JSON_BYTES),
        )
    size = sum(m.size_in_bytes for f in files for m in FileSystems.match([f])[0].metadata_list)
    if fmt == CSV:
        for path in files:
            csv_header(path, columns)
        return InputSource(
            CSV,
            tuple(files),
            columns,
            estimated_bytes=int(size * _CSV_TO_JSON_BYTES),
            csv_list_separator=csv_list_separator,
        )
    return InputSource(JSONL, tuple(files), columns, estimated_bytes=size)


def iter_records(source: InputSource) -> Iterator[tuple[str, int, object]]:
    """The records of a file input in one process, in file order: what `ReadRecords` reads.

    For tests and benchmarks (and small data in a notebook); the job reads with `ReadRecords`.
    """
    if source.format == PARQUET:
        for group in source.row_groups:
            yield from read_row_group(group)
    elif source.format == CSV:
        for path in source.files:
            yield from read_csv(path, source.columns, source.csv_list_separator)
    elif source.format == JSONL:
        for path in source.files:
            yield from raw_io.read_lines(path)
    else:
        raise ValueError(f"iter_records reads files, not {source.format}")


# ---------------------------------------------------------------- Parquet


def _is_text(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _arrow_type_fits(t, kind: str) -> bool:
    import pyarrow as pa

    if kind in (schema_lib.ID, schema_lib.CATEGORICAL):
        return _is_text(t)
    if kind == schema_lib.MULTI_HOT:
        is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
        return is_list and _is_text(t.value_type)
    return pa.types.is_integer(t) or pa.types.is_floating(t)


_EXPECTED_TYPE = {
    schema_lib.ID: "a string column",
    schema_lib.CATEGORICAL: "a string column",
    schema_lib.MULTI_HOT: "a list<string> column",
    schema_lib.DENSE: "an integer or floating-point column",
}


def _open_binary(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def inspect_parquet(path: str, columns: tuple[Column, ...]):
    """Checks one Parquet file's footer against `columns`.

    Returns:
      ([(path, row group index, rows before it, names of the columns present)], uncompressed
      bytes of the file's row groups).

    Raises:
      ValueError: naming the file (and the column) when it is not Parquet, lacks a required
        column, or has a column whose type does not hold the column's kind.
    """
    import pyarrow.parquet as pq

    try:
        with _open_binary(path) as f:
            meta = pq.ParquetFile(f).metadata
            arrow_schema = meta.schema.to_arrow_schema()
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for a bad footer.
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    names = arrow_schema.names
    present = []
    for column in columns:
        if column.name not in names:
            if column.required:
                raise ValueError(
                    f"{path}: column {column.name!r} is missing (a {column.kind} feature; the "
                    f"file has {names})"
                )
            continue
        t = arrow_schema.field(column.name).type
        if not _arrow_type_fits(t, column.kind):
            raise ValueError(
                f"{path}: column {column.name!r} has type {t}; a {column.kind} feature needs "
                f"{_EXPECTED_TYPE[column.kind]} (values are never cast: convert the column "
                "where the file is written)"
            )
        present.append(column.name)
    groups, before, size = [], 0, 0
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        groups.append((path, index, before, tuple(present)))
        before += group.num_rows
        size += group.total_byte_size
    return groups, size


def read_row_group(element, batch_rows: int = 4096) -> Iterator[tuple[str, int, dict]]:
    """(path, row group, rows before it, columns) -> (path, row number from 1, row dict)."""
    import pyarrow.parquet as pq

    path, index, before, columns = element
    try:
        with _open_binary(path) as f:
            table = pq.ParquetFile(f).read_row_group(index, columns=list(columns))
    except Exception as e:  # pyarrow's errors for corrupt pages are many types.
        raise ValueError(
            f"{path}: row group {index}: cannot read ({type(e).__name__}: {e})"
        ) from None
    row = before
    for batch in table.to_batches(max_chunksize=batch_rows):
        try:
            records = batch.to_pylist()
        except UnicodeDecodeError:  # a string column holds bytes that are not UTF-8
            records = _rows_with_undecodable(batch)
        for record in records:
            row += 1
            yield path, row, record


def _as_binary(t):
    """The Arrow type of `t` with its strings as binaries: a cast that never decodes."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _as_binary(t.value_type)
    if pa.types.is_large_string(t):
        return pa.large_binary()
    if _is_text(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_as_binary(t.value_type))
    return t


def _rows_with_undecodable(batch) -> list:
    """`batch.to_pylist()` for a batch whose strings are not all UTF-8: each row holding such a
    string (Parquet does not check them; pyarrow raises for the whole batch) becomes a
    `raw_io.Unreadable` naming its first such column, the bad bytes escaped."""
    columns = {
        name: batch.column(name).cast(_as_binary(batch.schema.field(name).type)).to_pylist()
        for name in batch.schema.names
    }
    records = []
    for i in range(batch.num_rows):
        row, bad = {}, []
        for name, values in columns.items():
            value = values[i]
            try:
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                elif isinstance(value, list):
                    value = [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
            except UnicodeDecodeError:
                bad.append(name)
                value = _surrogates(value)
            row[name] = value
        if bad:  # record_text writes the bad bytes as \xNN
            text = raw_io.record_text(row)
            records.append(raw_io.Unreadable(bad[0], raw_io.NOT_UTF8, text))
        else:
            records.append(row)
    return records


def _surrogates(value):
    """Bytes (or a list of them) decoded as the text readers decode files: "surrogateescape"."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return [_surrogates(v) if isinstance(v, bytes) else v for v in value]


class ReadParquet(beam.PTransform):
    """Row groups of checked Parquet files -> (path, row number, row dict), spread over workers."""

    def __init__(self, source: InputSource):
        super().__init__()
        self._row_groups = list(source.row_groups)

    def expand(self, pbegin):
        return (
            pbegin
            | "ListRowGroups" >> beam.Create(self._row_groups)
            | "SpreadRowGroups" >> beam.Reshuffle()
            | "ReadRowGroups" >> beam.FlatMap(lambda group: batches.chunks(read_row_group(group)))
        )


# ---------------------------------------------------------------- CSV


def _open_text(path: str):
    # Undecodable bytes become lone surrogates, which validation dead-letters; newline="" lets
    # the csv module handle line breaks inside quoted cells.
    return io.TextIOWrapper(
        FileSystems.open(path), encoding="utf-8", errors="surrogateescape", newline=""
    )


def csv_header(path: str, columns: tuple[Column, ...]) -> list[str] | None:
    """The header of one CSV file (None if the file is empty); raises if a column is missing."""
    with _open_text(path) as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            return None
        except csv.Error as e:
            raise ValueError(f"{path}: line 1: not a CSV header ({e})") from None
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise ValueError(f"{path}: line 1: the CSV header names {duplicates} more than once")
    for column in columns:
        if column.required and column.name not in header:
            raise ValueError(
                f"{path}: column {column.name!r} is missing from the CSV header "
                f"(line 1: {header}); the first line must name the columns"
            )
    return header


def csv_cell(cell: str, kind: str, separator: str):
    """A CSV cell as the JSON value it stands for: "" -> None, multi-hot split, numbers parsed.

    A dense cell that is not a number stays a string, so validation dead-letters it.
    """
    if cell == "":
        return None
    if kind == schema_lib.MULTI_HOT:
        return cell.split(separator)
    if kind == schema_lib.DENSE and _NUMBER.fullmatch(cell):
        return float(cell)
    return cell


def read_csv(path: str, columns: tuple[Column, ...], separator: str):
    """Yields (path, line where the row starts, row dict or raw_io.Unreadable) for one CSV file."""
    kinds = {c.name: c.kind for c in columns}
    order = {c.name: i for i, c in enumerate(columns)}  # the field a dead letter names: the first
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return
        wanted = [(i, name, kinds[name]) for i, name in enumerate(header) if name in kinds]
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield path, start, raw_io.Unreadable("", f"not a valid CSV row: {e}", "")
                continue
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                text = raw_io.escaped(",".join(row))
                reason = f"the row has {len(row)} cells, the header {len(header)}"
                yield path, start, raw_io.Unreadable("", reason, text)
                continue
            undecodable = [name for i, name, _ in wanted if raw_io.undecodable(row[i])]
            if undecodable:
                # Lone surrogates cannot cross Beam's coders: the reader dead-letters the row.
                field = min(undecodable, key=order.get)
                text = raw_io.escaped(",".join(row))
                yield path, start, raw_io.Unreadable(field, raw_io.NOT_UTF8, text)
                continue
            yield path, start, {name: csv_cell(row[i], kind, separator) for i, name, kind in wanted}


class ReadCsv(beam.PTransform):
    """CSV files -> (path, line, row dict); one worker per file, then spread like JSON Lines."""

    def __init__(self, source: InputSource):
        super().__init__()
        self._files = list(source.files)
        self._columns = source.columns
        self._separator = source.csv_list_separator

    def expand(self, pbegin):
        columns, separator = self._columns, self._separator
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ReadRows"
            >> beam.FlatMap(lambda path: batches.chunks(read_csv(path, columns, separator)))
            | "Spread" >> beam.Reshuffle()
        )


# ---------------------------------------------------------------- BigQuery


def bigquery_read(table: str, columns: list[str] | None) -> beam.PTransform:
    """Beam's BigQuery read of `columns` (None: all) of `table`, rows as dicts.

    The one place that touches BigQuery; tests replace this function with a local stand-in.

    Needs `pip install 'apache-beam[gcp]'` and the usual Google Cloud options (`--project`, and
    `--temp_location` on Dataflow).
    """
    return beam.io.ReadFromBigQuery(
        table=table,
        selected_fields=columns,
        method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
    )


class ReadBigQuery(beam.PTransform):
    """A BigQuery table -> (table, 0, row dict): the same records as the file formats."""

    def __init__(self, source: InputSource):
        super().__init__()
        self._table = source.files[0]
        # An optional column (a pair's weight) may be absent from the table: then read them all.
        columns = source.columns
        self._columns = None if any(not c.required for c in columns) else [c.name for c in columns]

    def expand(self, pbegin):
        table = self._table
        return (
            pbegin
            | "ReadTable" >> bigquery_read(table, self._columns)
            | "WithSource" >> beam.Map(lambda row: (table, 0, dict(row)))
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batches.BATCH_SIZE)
        )


class ReadRecords(beam.PTransform):
    """Any input format -> batches of (source, line, raw) for `raw_io.ParseItems` /
    `raw_io.ParsePairs`."""

    def __init__(self, source: InputSource):
        super().__init__()
        self._source = source

    def expand(self, pbegin):
        fmt = self._source.format
        if fmt == PARQUET:
            return pbegin | "ReadParquet" >> ReadParquet(self._source)
        if fmt == CSV:
            return pbegin | "ReadCsv" >> ReadCsv(self._source)
        if fmt == BIGQUERY:
            return pbegin | "ReadBigQuery" >> ReadBigQuery(self._source)
        return pbegin | "ReadJsonLines" >> raw_io.ReadJsonLines(list(self._source.files))
