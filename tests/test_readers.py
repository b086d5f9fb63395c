"""Input formats (Parquet, CSV, JSON Lines) into the same validated records, and bad input.

Fast tests of `pipelines.readers` and `raw_io`'s validation without a pipeline; the whole job on
each format (byte-identical outputs) is in test_pipeline.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import raw_io, readers, tmp_dirs
from ssl_retrieval import schema as schema_lib

SCHEMA = schema_lib.from_json(
    {
        "features": [
            {"name": "item_id", "kind": "id"},
            {"name": "brand", "kind": "categorical"},
            {"name": "tags", "kind": "multi_hot"},
            {"name": "size", "kind": "dense"},
        ]
    }
)
ITEM_COLUMNS = readers.item_columns(SCHEMA)
ITEMS = [
    {"item_id": "a", "brand": "b1", "tags": ["x", "y", "x"], "size": 3},
    {"item_id": "b", "brand": None, "tags": [], "size": 2.5},
    {"item_id": "c", "brand": "b2", "tags": None, "size": None},
]
ARROW_TYPES = pa.schema(
    [
        ("item_id", pa.string()),
        ("brand", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("size", pa.float64()),
    ]
)


def write_parquet(path, rows, schema=ARROW_TYPES, row_group_size=None):
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return str(path)


def validated(source, validate=None):
    """(items or pairs, dead letters) of an input, read and validated in one process."""
    if validate is None:

        def validate(path, line, raw):
            return raw_io.validate_item(SCHEMA.features, path, line, raw)

    records, errors = [], []
    for path, line, raw in readers.iter_records(source):
        record, error = validate(path, line, raw)
        if record is not None:
            records.append(record)
        else:
            errors.append(error)
    return records, errors


def resolve(pattern, columns=ITEM_COLUMNS, input_format="auto"):
    return readers.resolve(str(pattern), "--items", input_format, columns)


# ---------------------------------------------------------------- formats give the same records


def test_parquet_csv_and_json_lines_give_the_same_records(tmp_path):
    with open(tmp_path / "items.jsonl", "w") as f:
        for item in ITEMS:
            f.write(json.dumps(item) + "\n")
    # Two row groups: row numbers continue across them.
    write_parquet(tmp_path / "items.parquet", ITEMS, row_group_size=2)
    (tmp_path / "items.csv").write_text(
        "item_id,brand,tags,size,ignored\na,b1,x|y|x,3,z\nb,,,2.5,z\nc,b2,,,z\n"
    )
    got = {}
    for ext in ("jsonl", "parquet", "csv"):
        source = resolve(tmp_path / f"items.{ext}")
        assert source.format == ext
        got[ext] = validated(source)
    expected = [
        {"item_id": "a", "brand": "b1", "tags": ["x", "y"], "size": 3.0},
        {"item_id": "b", "size": 2.5},
        {"item_id": "c", "brand": "b2"},
    ]
    assert got["jsonl"] == got["parquet"] == got["csv"] == (expected, [])
    parquet = resolve(tmp_path / "items.parquet")
    assert [g[1:3] for g in parquet.row_groups] == [(0, 0), (1, 2)]
    assert [line for _, line, _ in readers.iter_records(parquet)] == [1, 2, 3]
    csv_source = resolve(tmp_path / "items.csv")
    assert [line for _, line, _ in readers.iter_records(csv_source)] == [2, 3, 4]


def test_format_from_extension_or_flag(tmp_path):
    assert readers.format_of_file("gs://b/items-00001-of-00004.parquet") == "parquet"
    assert readers.format_of_file("/x/pairs.csv.gz") == "csv"
    assert readers.format_of_file("/x/items.jsonl.bz2") == "jsonl"
    assert readers.format_of_file("/x/items.txt") is None
    (tmp_path / "items.txt").write_text(json.dumps(ITEMS[0]) + "\n")
    assert resolve(tmp_path / "items.txt").format == "jsonl"  # unknown: JSON Lines, as before
    write_parquet(tmp_path / "items.parquet", ITEMS)
    with pytest.raises(ValueError, match=r"--items=.*files of several formats.*--input_format"):
        resolve(tmp_path / "items.*")
    # --input_format overrides the extension.
    (tmp_path / "data.bin").write_bytes((tmp_path / "items.parquet").read_bytes())
    assert resolve(tmp_path / "data.bin", input_format="parquet").format == "parquet"


def test_bigquery_table_spec_is_checked():
    source = readers.resolve("proj:ds.items", "--items", "bigquery", ITEM_COLUMNS)
    assert (source.format, source.files, source.estimated_bytes) == (
        "bigquery",
        ("proj:ds.items",),
        None,
    )
    with pytest.raises(ValueError, match=r"--items=gs://b/x\*: not a BigQuery table"):
        readers.resolve("gs://b/x*", "--items", "bigquery", ITEM_COLUMNS)


# ---------------------------------------------------------------- bad Parquet input


@pytest.mark.parametrize(
    "column, arrow_type, value",
    [
        ("item_id", pa.int64(), 7),
        ("brand", pa.list_(pa.string()), ["b"]),
        ("tags", pa.list_(pa.int64()), [1]),
        ("tags", pa.string(), "x|y"),
        ("size", pa.string(), "3"),
        ("size", pa.bool_(), True),
    ],
)
def test_parquet_wrong_column_type_is_one_error_naming_file_and_column(
    tmp_path, column, arrow_type, value
):
    types = ARROW_TYPES.set(ARROW_TYPES.get_field_index(column), pa.field(column, arrow_type))
    row = {"item_id": "a", "brand": "b", "tags": ["t"], "size": 1.0, column: value}
    path = write_parquet(tmp_path / "items.parquet", [row], schema=types)
    with pytest.raises(ValueError) as e:
        resolve(path)
    assert str(e.value).startswith(f"{path}: column '{column}' has type ")
    kind = SCHEMA.feature(column).kind
    assert f"a {kind} feature needs {readers._EXPECTED_TYPE[kind]}" in str(e.value)
    assert "never cast" in str(e.value)


def test_parquet_accepts_dictionary_strings_and_integer_dense(tmp_path):
    types = pa.schema(
        [
            ("item_id", pa.string()),
            ("brand", pa.dictionary(pa.int32(), pa.string())),
            ("tags", pa.large_list(pa.large_string())),
            ("size", pa.int32()),
        ]
    )
    path = write_parquet(
        tmp_path / "items.parquet",
        [{"item_id": "a", "brand": "b", "tags": ["t"], "size": 4}],
        types,
    )
    items, errors = validated(resolve(path))
    assert (items, errors) == ([{"item_id": "a", "brand": "b", "tags": ["t"], "size": 4.0}], [])


def test_parquet_missing_column_is_one_error_naming_file_and_column(tmp_path):
    types = pa.schema([f for f in ARROW_TYPES if f.name != "brand"])
    path = write_parquet(tmp_path / "items.parquet", [{"item_id": "a"}], schema=types)
    with pytest.raises(ValueError, match=rf"^{path}: column 'brand' is missing"):
        resolve(path)
    # The optional pair weight may be absent.
    pairs = write_parquet(
        tmp_path / "pairs.parquet",
        [{"query_id": "a", "candidate_id": "b"}],
        schema=pa.schema([("query_id", pa.string()), ("candidate_id", pa.string())]),
    )
    source = readers.resolve(pairs, "--pairs", "auto", readers.pair_columns())
    got, errors = validated(source, raw_io.validate_pair)
    assert errors == [] and got[0]["weight"] == 1.0


def test_parquet_null_id_is_a_dead_letter_naming_file_row_and_field(tmp_path):
    rows = [dict(ITEMS[0]), {"item_id": None, "brand": "b9"}, dict(ITEMS[2])]
    path = write_parquet(tmp_path / "items.parquet", rows)
    items, errors = validated(resolve(path))
    assert [i["item_id"] for i in items] == ["a", "c"]
    (error,) = errors
    assert (error["file"], error["line"], error["field"]) == (path, 2, "item_id")
    assert error["reason"] == "missing item id"
    assert json.loads(error["record"])["brand"] == "b9"


def test_parquet_null_pair_id_and_bad_weight_are_dead_letters(tmp_path):
    types = pa.schema(
        [("query_id", pa.string()), ("candidate_id", pa.string()), ("weight", pa.float32())]
    )
    rows = [
        {"query_id": "a", "candidate_id": "b", "weight": 2.0},
        {"query_id": "a", "candidate_id": None, "weight": 1.0},
        {"query_id": "a", "candidate_id": "c", "weight": -1.0},
        {"query_id": "a", "candidate_id": "c", "weight": None},
    ]
    path = write_parquet(tmp_path / "pairs.parquet", rows, schema=types)
    source = readers.resolve(path, "--pairs", "auto", readers.pair_columns())
    pairs, errors = validated(source, raw_io.validate_pair)
    assert [(p["candidate_id"], p["weight"], p["line"]) for p in pairs] == [
        ("b", 2.0, 1),
        ("c", 1.0, 4),
    ]
    assert [(e["line"], e["field"]) for e in errors] == [(2, "candidate_id"), (3, "weight")]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_parquet_file_is_one_error_naming_the_file(tmp_path, damage):
    good = (tmp_path / "good.parquet").as_posix()
    write_parquet(good, ITEMS)
    data = open(good, "rb").read()
    bad = tmp_path / "items.parquet"
    bad.write_bytes(
        {"garbage": b"PAR1" + b"\x00" * 64, "truncated": data[: len(data) // 2], "empty": b""}[
            damage
        ]
    )
    with pytest.raises(ValueError, match=rf"^{bad}: not a readable Parquet file"):
        resolve(bad)


def test_corrupt_parquet_page_is_an_error_naming_file_and_row_group(tmp_path):
    path = write_parquet(tmp_path / "items.parquet", ITEMS * 300)
    source = resolve(path)  # the footer is intact
    data = bytearray(open(path, "rb").read())
    data[100:400] = b"\xab" * 300  # inside the first column chunk's pages
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=rf"^{path}: row group 0: cannot read"):
        list(readers.iter_records(source))


# ---------------------------------------------------------------- CSV


def test_csv_ragged_row_is_a_dead_letter_naming_file_and_line(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        'item_id,brand,tags,size\na,b1,x,1\nb,b1\n\n"c",b2,"two\nlines",3\nd,b1,x,1,extra\ne,,,\n'
    )
    items, errors = validated(resolve(path))
    assert [i["item_id"] for i in items] == ["a", "e"]
    assert [(e["file"], e["line"], e["field"]) for e in errors] == [
        (str(path), 3, ""),
        (str(path), 5, "tags"),  # a quoted newline: a control character in a vocabulary value
        (str(path), 7, ""),
    ]
    assert errors[0]["reason"] == "the row has 2 cells, the header 4"
    assert errors[0]["record"] == "b,b1"
    assert "U+000A" in errors[1]["reason"]
    assert errors[2]["reason"] == "the row has 5 cells, the header 4"


def test_csv_header_must_name_every_column(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,tags,size\na,x,1\n")
    with pytest.raises(
        ValueError, match=rf"^{path}: column 'brand' is missing from the CSV header"
    ):
        resolve(path)
    path.write_text("item_id,brand,brand,tags,size\n")
    with pytest.raises(ValueError, match=r"names \['brand'\] more than once"):
        resolve(path)


def test_csv_numbers_are_parsed_strictly(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        "item_id,brand,tags,size\na,,,1e3\nb,,,-.5\nc,,,1_000\nd,,,0x10\ne,,,nan\nf,,, 2\n"
    )
    items, errors = validated(resolve(path))
    assert [(i["item_id"], i["size"]) for i in items] == [("a", 1000.0), ("b", -0.5)]
    assert [(e["line"], e["field"], e["reason"]) for e in errors] == [
        (4, "size", "expected a number, got str"),
        (5, "size", "expected a number, got str"),
        (6, "size", "not a finite number"),
        (7, "size", "expected a number, got str"),
    ]


def test_csv_list_separator(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,brand,tags,size\na,b|c,x;y|z,\n")
    source = readers.resolve(str(path), "--items", "auto", ITEM_COLUMNS, csv_list_separator=";")
    items, _ = validated(source)
    assert items == [{"item_id": "a", "brand": "b|c", "tags": ["x", "y|z"]}]
    with pytest.raises(ValueError, match="--csv_list_separator=','"):
        readers.resolve(str(path), "--items", "auto", ITEM_COLUMNS, csv_list_separator=",")


# ---------------------------------------------------------------- issue 13.6: odd text


def test_control_characters_and_undecodable_bytes_are_dead_letters(tmp_path):
    lines = [
        b'{"item_id": "ok", "tags": ["caf\xc3\xa9"]}',
        b'{"item_id": "tab\\there"}',
        b'{"item_id": "x1", "brand": "two\\nlines"}',
        b'{"item_id": "x2", "tags": ["fine", "cr\\rhere"]}',
        b'{"item_id": "latin1_\xe9\xff"}',
        b'{"item_id": "x3", "brand": "nul\\u0000"}',
        b'{"item_id": "x4", "brand": "sep\\u2028"}',
        b'{"item_id": "x5", "brand": "lone \\udc80 surrogate"}',
    ]
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items, errors = validated(resolve(path))
    assert items == [{"item_id": "ok", "tags": ["café"]}]
    assert [(e["file"], e["line"], e["field"]) for e in errors] == [
        (str(path), 2, "item_id"),
        (str(path), 3, "brand"),
        (str(path), 4, "tags"),
        (str(path), 5, "item_id"),
        (str(path), 6, "brand"),
        (str(path), 7, "brand"),
        (str(path), 8, "brand"),
    ]
    assert "U+0009" in errors[0]["reason"] and "U+000D" in errors[2]["reason"]
    assert errors[3]["reason"].startswith("not valid UTF-8")
    # The dead letter holds the bad bytes escaped, never replaced (and no lone surrogate).
    assert errors[3]["record"] == '{"item_id": "latin1_\\xe9\\xff"}'
    assert errors[6]["record"] == '{"item_id": "x5", "brand": "lone \\udc80 surrogate"}'
    pairs = [
        ("a\tb", "c", "query_id"),
        ("a", "c\n", "candidate_id"),
    ]
    for query, candidate, field in pairs:
        pair, error = raw_io.validate_pair(
            "p.jsonl", 1, json.dumps({"query_id": query, "candidate_id": candidate})
        )
        assert pair is None and error["field"] == field and "control character" in error["reason"]


# ---------------------------------------------------------------- issue 13.7: schema, temp dirs


def test_binary_schema_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    with pytest.raises(ValueError, match=rf"^{path}: not a UTF-8 text file"):
        schema_lib.load(str(path))


def make_tmp(parent, name, locked_by=None, age_s=0.0, lock_file=True):
    path = parent / name
    path.mkdir()
    (path / "train-00000-of-00001.tfrecord").write_bytes(b"x")
    if lock_file:
        (path / tmp_dirs.LOCK_FILE).write_text("")
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))
    return path


def test_stale_temp_dirs_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "data"
    stale = make_tmp(tmp_path, ".data.tmp-0123abcd")  # lock file, nobody holds it
    running = tmp_dirs.TmpDir(str(out))  # held by this (running) job
    fresh_unlocked = make_tmp(tmp_path, ".data.tmp-11111111", lock_file=False)
    old_unlocked = make_tmp(tmp_path, ".data.tmp-22222222", lock_file=False, age_s=7200)
    others = [
        make_tmp(tmp_path, ".other.tmp-0123abcd"),  # another output dir's
        make_tmp(tmp_path, ".data.tmp-notours"),  # not our pattern
        make_tmp(tmp_path, "data.tmp-0123abcd"),  # not hidden: not ours
    ]
    old_output = make_tmp(tmp_path, ".data.tmp-33333333.old", lock_file=False)
    # The output dir does not exist: a ".old" may be the only copy of the previous output.
    assert sorted(tmp_dirs.remove_stale(str(out))) == sorted([str(old_unlocked), str(stale)])
    assert old_output.exists() and fresh_unlocked.exists() and os.path.isdir(running.path)
    assert all(p.exists() for p in others)
    out.mkdir()
    assert tmp_dirs.remove_stale(str(out)) == [str(old_output)]
    running.release()  # the lock file goes before the rename into place
    assert not os.path.exists(os.path.join(running.path, tmp_dirs.LOCK_FILE))
    running.remove()
    assert not os.path.exists(running.path)


def test_temp_dir_of_a_killed_job_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "data"
    code = (
        "import os, signal, sys\n"
        "from pipelines import tmp_dirs\n"
        f"d = tmp_dirs.TmpDir({str(out)!r})\n"
        "print(d.path, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    left = proc.stdout.strip()
    assert os.path.isdir(left) and os.path.basename(left).startswith(".data.tmp-")
    assert tmp_dirs.remove_stale(str(out)) == [left]
    assert not os.path.exists(left)


# ---------------------------------------------------------------- issue 35: odd bytes and numbers


def beam_encodable(records):
    """Encodes each element as the job's runner does (Beam's default coder), failing as it did:
    `UnicodeEncodeError: surrogates not allowed` for a string that holds undecodable bytes."""
    from apache_beam.coders import coders

    coder = coders.FastPrimitivesCoder()
    for record in records:
        assert coder.decode(coder.encode(record)) == record
    return records


BAD_BYTES_ITEMS = [  # as Latin-1 text: "\xff" is the byte 0xff
    '{"item_id": "a", "brand": "b1"}',
    '{"item_id": "b\xff", "brand": "b1"}',
    '{"item_id": "c", "tags": ["x", "caf\xe9"]}',
    '{"item_id": "d", "brand": "\xc3\xa9", "ignored": "\xfe"}',  # é in UTF-8; 0xfe unread
    '{"item_id": "e", "size": 1.5\xff}',  # outside any string: not JSON
]


def test_undecodable_bytes_in_json_lines_are_dead_letters_beam_can_encode(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"".join(line.encode("latin-1") + b"\n" for line in BAD_BYTES_ITEMS))
    source = resolve(path)
    records = beam_encodable(list(readers.iter_records(source)))
    assert [type(raw) for _, _, raw in records] == [str, bytes, bytes, bytes, bytes]
    assert beam_encodable(list(raw_io.read_line_batches(str(path))))
    items, errors = validated(source)
    assert [i["item_id"] for i in items] == ["a", "d"] and items[1]["brand"] == "é"
    beam_encodable(errors)
    assert [(e["file"], e["line"], e["field"]) for e in errors] == [
        (str(path), 2, "item_id"),
        (str(path), 3, "tags"),
        (str(path), 5, ""),
    ]
    assert errors[0]["reason"] == raw_io.NOT_UTF8
    assert errors[1]["record"] == '{"item_id": "c", "tags": ["x", "caf\\xe9"]}'
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(
        b'{"query_id": "a", "candidate_id": "b"}\n{"query_id": "a\xff", "candidate_id": "b"}\n'
    )
    source = readers.resolve(str(pairs), "--pairs", "auto", readers.pair_columns())
    got, errors = validated(source, raw_io.validate_pair)
    assert len(got) == 1 and [(e["line"], e["field"]) for e in beam_encodable(errors)] == [
        (2, "query_id")
    ]


def test_undecodable_bytes_in_csv_are_dead_letters_beam_can_encode(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(
        b"item_id,brand,tags,size,ignored\n"
        b"a,b1,x,1,\xff\n"  # the bad byte is in a column the job does not read
        b"b,b\xe9,x|y\xff,2,\n"  # two bad columns: the schema's first is named
        b"c,b1,x,3\xff,\n"
        b"d\xff,b1\n"  # ragged too: its text is escaped
    )
    source = resolve(path)
    beam_encodable(list(readers.iter_records(source)))
    items, errors = validated(source)
    assert [i["item_id"] for i in items] == ["a"]
    beam_encodable(errors)
    assert [(e["line"], e["field"], e["reason"]) for e in errors] == [
        (3, "brand", raw_io.NOT_UTF8),
        (4, "size", raw_io.NOT_UTF8),
        (5, "", "the row has 2 cells, the header 5"),
    ]
    assert errors[0]["record"] == "b,b\\xe9,x|y\\xff,2," and errors[2]["record"] == "d\\xff,b1"


def test_undecodable_strings_in_parquet_are_dead_letters_naming_row_and_column(tmp_path):
    def text(values):  # a string column whose bytes Parquet does not check
        return pa.array(values, type=pa.binary()).view(pa.string())

    tags = pa.ListArray.from_arrays([0, 1, 2, 3], text([b"x", b"y\xff", b"z"]))
    table = pa.table(
        {
            "item_id": text([b"a", b"b", b"c\xe9"]),
            "brand": text([b"b1", None, b"b2"]),
            "tags": tags,
            "size": pa.array([1.0, 2.0, 3.0]),
        }
    )
    path = str(tmp_path / "items.parquet")
    pq.write_table(table, path, row_group_size=2)
    items, errors = validated(resolve(path))
    assert items == [{"item_id": "a", "brand": "b1", "tags": ["x"], "size": 1.0}]
    beam_encodable(errors)
    assert [(e["file"], e["line"], e["field"], e["reason"]) for e in errors] == [
        (path, 2, "tags", raw_io.NOT_UTF8),
        (path, 3, "item_id", raw_io.NOT_UTF8),
    ]
    assert json.loads(errors[1]["record"])["item_id"] == "c\\xe9"


HUGE_INT = "9" * 400


@pytest.mark.parametrize(
    "literal, reason",
    [
        ("1e300", "1e+300 does not fit a float32 (at most 3.40282e+38 in magnitude)"),
        ("-1e300", "-1e+300 does not fit a float32 (at most 3.40282e+38 in magnitude)"),
        ("3.5e38", "3.5e+38 does not fit a float32 (at most 3.40282e+38 in magnitude)"),
        (HUGE_INT, "an integer of about 401 digits does not fit a float32"),
        ("1e400", "not a finite number"),
        ("Infinity", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("NaN", "not a finite number"),
        ("9" * 5000, "not valid JSON: Exceeds the limit (4300 digits)"),
        ("3.4e38", None),
        ("-1e-300", None),
    ],
)
def test_dense_values_that_do_not_fit_a_float32_are_dead_letters(literal, reason):
    text = '{"item_id": "a", "size": ' + literal + "}"
    item, error = raw_io.validate_item(SCHEMA.features, "f.jsonl", 7, text)
    if reason is None:
        assert error is None and item["size"] == float(literal)
        return
    assert item is None and error["reason"].startswith(reason)
    assert (error["file"], error["line"], error["field"]) == (
        "f.jsonl",
        7,
        "" if reason.startswith("not valid JSON") else "size",
    )
    beam_encodable([error])


@pytest.mark.parametrize(
    "weight, reason",
    [
        ("1e300", "1e+300 does not fit a float32"),
        (HUGE_INT, "an integer of about 401 digits does not fit a float32"),
        ("1e-50", "1e-50 would be 0 as a float32"),
        ("Infinity", "not a finite number"),
        ("-" + HUGE_INT, "expected a number > 0, got an integer of about 401 digits"),
        ("1e38", None),
        ("2e-45", None),
    ],
)
def test_weights_that_do_not_fit_a_float32_are_dead_letters(weight, reason):
    text = '{"query_id": "a", "candidate_id": "b", "weight": ' + weight + "}"
    pair, error = raw_io.validate_pair("p.jsonl", 3, text)
    if reason is None:
        assert error is None and pair["weight"] == float(weight)
        return
    assert pair is None and error["field"] == "weight" and error["reason"].startswith(reason)


def test_dense_csv_and_parquet_values_beyond_float32_are_dead_letters(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,brand,tags,size\na,,,1e300\nb,,,-inf\nc,,,3e38\n")
    items, errors = validated(resolve(path))
    assert items == [{"item_id": "c", "size": 3e38}]
    assert [(e["line"], e["field"], e["reason"][:6]) for e in errors] == [
        (2, "size", "1e+300"),
        (3, "size", "not a "),
    ]
    rows = [{"item_id": "a", "size": 1e300}, {"item_id": "b", "size": 2.0}]
    parquet = write_parquet(tmp_path / "items.parquet", rows)
    items, errors = validated(resolve(parquet))
    assert [i["item_id"] for i in items] == ["b"]
    assert [(e["line"], e["field"]) for e in errors] == [(1, "size")]


def test_deeply_nested_json_is_a_dead_letter():
    text = '{"item_id": "a", "tags": ' + "[" * 100_000 + "]" * 100_000 + "}"
    item, error = raw_io.validate_item(SCHEMA.features, "f.jsonl", 1, text)
    assert item is None and error["field"] == "" and error["reason"].startswith("not valid JSON")


def test_a_file_name_that_is_not_utf8_is_one_error(tmp_path):
    name = os.fsdecode(b"items-\xff.jsonl")
    (tmp_path / name).write_text(json.dumps(ITEMS[0]) + "\n")
    with pytest.raises(ValueError, match=r"the file name .*items-\\xff\.jsonl is not valid UTF-8"):
        resolve(tmp_path / "items-*.jsonl")
