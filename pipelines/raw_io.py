"""Validating raw item and pair records, with dead letters for bad records; JSON Lines reading.

Every record keeps where it came from (file, line) so that a dead letter names the file, the line
and the field. Dead letters are dicts `{"file", "line", "field", "reason", "record"}`. A record
reaches validation as `(path, line, raw)`: `raw` is a JSON Lines text (its bytes when some are
not UTF-8), or a dict already decoded by another reader (Parquet, CSV, BigQuery:
`pipelines/readers.py`), with the same Python types JSON would give (str, list of str,
int/float, None). Both go through the same checks, so every format gives the same records and
the same dead letters.

Text values that end up in the output's text files (ids, categorical and multi-hot values) must
be valid UTF-8 without control characters: a TAB, newline or CR would break
`stats/candidate_counts.tsv` and `vocab/*.txt`, and replacing undecodable bytes would silently
change an id (two ids could collide). Such records are dead letters, never altered. No element
of the job may hold a lone surrogate (what "surrogateescape" makes of such bytes): Beam's coders
encode strings as UTF-8 and would stop the job. So a line with such bytes travels as its bytes,
and dead letters show them as `\\xNN` (`escaped`).

Numbers are written as float32 (tf.train.FloatList): a dense value or weight outside its range
is a dead letter too (`number_problem`).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines import batches
from ssl_retrieval import schema as schema_lib

ERRORS = "errors"
MAX_RECORD_CHARS = 2000
NOT_UTF8 = "not valid UTF-8 (undecodable bytes are never replaced)"
# Every number the job writes is a float32 (tf.train.FloatList): a dense value or a weight
# beyond these would not survive the write (struct.pack refuses it; np.float32 makes it inf).
FLOAT32_MAX = 3.4028234663852886e38
# The smallest positive float32 (a subnormal): a weight below it would be written as 0.
FLOAT32_SMALLEST = 1.401298464324817e-45


def match_files(pattern: str, flag: str) -> list[str]:
    """Expands a glob (local or any Beam filesystem); raises ValueError naming the flag if empty."""
    try:
        results = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError and others for unreadable paths.
        raise ValueError(f"{flag}={pattern}: cannot list files ({e})") from None
    files = sorted(m.path for m in results)
    if not files:
        raise ValueError(f"{flag}={pattern}: no file matches")
    for path in files:
        if undecodable(path):
            # Every record carries its file's name; Beam's coders cannot encode such a name.
            raise ValueError(
                f"{flag}={pattern}: the file name {escaped(path)} is not valid UTF-8; rename it"
            )
    return files


def dead_letter(path: str, line: int, field: str, reason: str, record: str | dict) -> dict:
    """A dead letter; `record` is the raw JSON line or a decoded row (kept as JSON text)."""
    return {
        "file": path,
        "line": line,
        "field": field,
        "reason": reason,
        "record": record_text(record)[:MAX_RECORD_CHARS],
    }


# Control characters (C0, DEL, C1), the Unicode line separators, and lone surrogates: the last
# are what undecodable bytes become under "surrogateescape" (and what a JSON "\udc80" escape
# gives); they cannot be written as UTF-8.
_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def undecodable(text: str) -> bool:
    """Whether `text` holds lone surrogates: bytes that were not UTF-8, under
    "surrogateescape"."""
    return not text.isascii() and _LONE_SURROGATE.search(text) is not None


def escaped(text: str) -> str:
    """`text` with its lone surrogates written out: an undecodable byte (surrogateescape's
    U+DC80-U+DCFF) as `\\xNN`, any other as `\\uNNNN`.

    Beam's coders encode every string as UTF-8, which has no lone surrogates: a record or a
    dead letter holding one would stop the job wherever the runner encodes it.
    """

    def escape(match):
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return text if text.isascii() else _LONE_SURROGATE.sub(escape, text)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be an id or vocabulary value, or None if it can."""
    match = _BAD_TEXT.search(value)
    if match is None:
        return None
    ch = match.group()
    if "\ud800" <= ch <= "\udfff":
        return NOT_UTF8
    return (
        f"contains control character U+{ord(ch):04X} {ch!r} at position {match.start()} "
        "(TAB, newline, CR and other control characters would break the output's text files)"
    )


def _as_record(text: str) -> str | bytes:
    """A stripped line as the job carries it: its text, or its bytes when some of them are not
    UTF-8 (they decoded to lone surrogates, which no Beam coder can encode; `_load` decodes the
    bytes again, so validation names the field that holds them)."""
    return text.encode("utf-8", "surrogateescape") if undecodable(text) else text


def read_line_batches(path: str, size: int = batches.BATCH_SIZE) -> Iterator[list]:
    """`batches.chunks(read_lines(path), size)`, read a few MB at a time: no generator step
    per line."""
    with FileSystems.open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="\n")
        pending, line_no = [], 0
        while lines := text.readlines(1 << 22):
            stripped = [_as_record(line.strip()) for line in lines]
            pending += [(path, n, line) for n, line in enumerate(stripped, line_no + 1) if line]
            line_no += len(lines)
            while len(pending) >= size:
                yield pending[:size]
                del pending[:size]
        if pending:
            yield pending


def read_lines(path: str) -> Iterator[tuple[str, int, str | bytes]]:
    """Yields (path, line number from 1, text) for the non-blank lines of one file.

    A line with bytes that are not UTF-8 is yielded as its bytes (`_as_record`); validation
    decodes them with "surrogateescape" and dead-letters the record naming the field that holds
    them: a bad byte in one record never stops the file or changes a value.
    """
    with FileSystems.open(path) as raw:
        for line_no, line in enumerate(
            io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="\n"), 1
        ):
            text = line.strip()
            if text:
                yield path, line_no, _as_record(text)


class ReadJsonLines(beam.PTransform):
    """Files -> batches of (path, line, text), spread over workers.

    Each file is read by one worker (line numbers need a sequential read); a Reshuffle then
    spreads the batches, so shard your input for parallel reading at scale.
    """

    def __init__(self, files: list[str]):
        super().__init__()
        self._files = files

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ReadLines" >> beam.FlatMap(read_line_batches)
            | "Spread" >> beam.Reshuffle()
        )


class Unreadable(NamedTuple):
    """A raw record its reader could not decode (e.g. a ragged CSV row): becomes a dead letter."""

    field: str
    reason: str
    text: str


def record_text(raw) -> str:
    """The raw record as text for a dead letter: the JSON line itself, or a decoded row as JSON.

    Bytes that are not UTF-8 are written as `\\xNN` (`escaped`), never replaced; a decoded row
    stays valid JSON (its values hold the `\\xNN`).
    """
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(raw, str):
        return escaped(raw)
    if isinstance(raw, Unreadable):
        return escaped(raw.text)
    return json.dumps(_escaped_values(raw), ensure_ascii=False, default=repr)


def _escaped_values(value):
    if isinstance(value, str):
        return escaped(value)
    if isinstance(value, dict):
        return {k: _escaped_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped_values(v) for v in value]
    return value


# The C scanner of json.loads without its two Python layers: for a stripped line that is one
# JSON value it returns what json.loads returns; anything else goes through json.loads.
_SCAN = json.JSONDecoder().scan_once


def _fast_object(raw) -> dict | None:
    """The JSON object of a JSON Lines text (or a decoded row itself) when that is quick to
    see, else None (then `_load` decides, with the dead letter's exact reason)."""
    if type(raw) is dict:
        return raw
    if type(raw) is not str:
        return None
    try:
        obj, end = _SCAN(raw, 0)
    except (StopIteration, ValueError, RecursionError):
        return None
    return obj if end == len(raw) and type(obj) is dict else None


def _load(path: str, line: int, raw) -> tuple[dict | None, dict | None]:
    if isinstance(raw, dict):
        return raw, None
    if isinstance(raw, Unreadable):
        return None, dead_letter(path, line, raw.field, raw.reason, raw.text)
    text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, dead_letter(path, line, "", f"not valid JSON: {e.msg}", raw)
    except (ValueError, RecursionError) as e:  # an integer of over 4,300 digits; deep nesting
        return None, dead_letter(path, line, "", f"not valid JSON: {e}", raw)
    if not isinstance(obj, dict):
        return None, dead_letter(path, line, "", "expected a JSON object", raw)
    return obj, None


def number_problem(value: int | float) -> str | None:
    """Why a number cannot be a dense value (written as a float32), or None if it can.

    Compared as Python numbers, so an integer too large for a float is an answer, not an
    OverflowError.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        return f"{_short(value)} does not fit a float32 (at most {FLOAT32_MAX:.6g} in magnitude)"
    return None


def _short(value) -> str:
    """A value for a reason, short: an integer of 400 digits by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**16:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_TEXT_KINDS = (schema_lib.ID, schema_lib.CATEGORICAL)


def _fast_item(features, raw) -> dict | None:
    """`validate_item`'s item for a record that passes every check on its quickest path, else
    None (then `validate_item` runs, and names the problem). Types are compared exactly: a
    subclass takes the slow path."""
    obj = _fast_object(raw)
    if obj is None:
        return None
    item = {}
    bad_text = _BAD_TEXT.search
    for f in features:
        value = obj.get(f.name)
        kind = f.kind
        kind_of_value = type(value)
        if kind_of_value is str:
            if kind not in _TEXT_KINDS or bad_text(value):
                return None
            if value:
                item[f.name] = value
            elif kind == schema_lib.ID:
                return None
        elif value is None or kind_of_value is list:
            if kind == schema_lib.ID:
                return None
            if value:  # a non-empty list
                if kind != schema_lib.MULTI_HOT:
                    return None
                try:
                    # One search over the values joined by a space (not a bad character):
                    # it finds what a search of each would; join checks they are strings.
                    if bad_text(" ".join(value)):
                        return None
                except TypeError:
                    return None
                values = [v for v in dict.fromkeys(value) if v]
                if values:
                    item[f.name] = values
        elif kind == schema_lib.DENSE and (kind_of_value is float or kind_of_value is int):
            if not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # also False for nan
                return None
            item[f.name] = float(value)
        else:
            return None
    return item


def validate_item(
    features: tuple[schema_lib.Feature, ...], path: str, line: int, raw: str | dict
) -> tuple[dict | None, dict | None]:
    """Parses one item record (JSON text or decoded row). Returns (item, None) or (None, error).

    The item maps feature name -> value: str (id, categorical), list of distinct str (multi_hot,
    order kept), float (dense). Missing values (absent key, null, empty list) are left out.
    Keys that are not schema features are ignored.
    """
    item = _fast_item(features, raw)
    if item is not None:
        return item, None
    obj, error = _load(path, line, raw)
    if error:
        return None, error
    item = {}
    for f in features:
        value = obj.get(f.name)
        if value is None or value == [] or value == "":
            if f.kind == schema_lib.ID:
                return None, dead_letter(path, line, f.name, "missing item id", raw)
            continue
        if f.kind in (schema_lib.ID, schema_lib.CATEGORICAL):
            if not isinstance(value, str):
                reason = f"expected a string, got {type(value).__name__}"
                return None, dead_letter(path, line, f.name, reason, raw)
            problem = text_problem(value)
            if problem:
                return None, dead_letter(path, line, f.name, problem, raw)
            item[f.name] = value
        elif f.kind == schema_lib.MULTI_HOT:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                reason = "expected a list of strings"
                return None, dead_letter(path, line, f.name, reason, raw)
            for v in value:
                problem = text_problem(v)
                if problem:
                    return None, dead_letter(path, line, f.name, f"value {problem}", raw)
            values = [v for v in dict.fromkeys(value) if v]
            if values:
                item[f.name] = values
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                reason = f"expected a number, got {type(value).__name__}"
                return None, dead_letter(path, line, f.name, reason, raw)
            problem = number_problem(value)
            if problem:
                return None, dead_letter(path, line, f.name, problem, raw)
            item[f.name] = float(value)
    return item, None


def validate_pair(path: str, line: int, raw: str | dict) -> tuple[dict | None, dict | None]:
    """Parses one pair record -> ({"query_id", "candidate_id", "weight", "file", "line"}, None)."""
    obj = _fast_object(raw)
    if obj is not None:
        # The quickest path: exact types, every check passed; anything else goes on below.
        query = obj.get(schema_lib.RAW_QUERY_ID)
        candidate = obj.get(schema_lib.RAW_CANDIDATE_ID)
        weight = obj.get(schema_lib.RAW_WEIGHT, 1.0)
        if weight is None:
            weight = 1.0
        if (
            type(query) is str
            and type(candidate) is str
            and query
            and candidate
            and query != candidate
            and (type(weight) is float or type(weight) is int)
            and FLOAT32_SMALLEST <= weight <= FLOAT32_MAX
            and not _BAD_TEXT.search(query)
            and not _BAD_TEXT.search(candidate)
        ):
            return {
                schema_lib.RAW_QUERY_ID: query,
                schema_lib.RAW_CANDIDATE_ID: candidate,
                schema_lib.RAW_WEIGHT: float(weight),
                "file": path,
                "line": line,
            }, None
    obj, error = _load(path, line, raw)
    if error:
        return None, error
    pair = {}
    for key in (schema_lib.RAW_QUERY_ID, schema_lib.RAW_CANDIDATE_ID):
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            reason = "missing" if value is None else f"expected a non-empty string, got {value!r}"
            return None, dead_letter(path, line, key, reason, raw)
        problem = text_problem(value)
        if problem:
            return None, dead_letter(path, line, key, problem, raw)
        pair[key] = value
    if pair[schema_lib.RAW_QUERY_ID] == pair[schema_lib.RAW_CANDIDATE_ID]:
        return None, dead_letter(path, line, schema_lib.RAW_CANDIDATE_ID, "self pair", raw)
    weight = obj.get(schema_lib.RAW_WEIGHT, 1.0)
    if weight is None:
        weight = 1.0
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        reason = f"expected a number > 0, got {_short(weight)}"
        return None, dead_letter(path, line, schema_lib.RAW_WEIGHT, reason, raw)
    problem = number_problem(weight)
    if problem is None and weight < FLOAT32_SMALLEST:
        problem = f"{_short(weight)} would be 0 as a float32 (at least {FLOAT32_SMALLEST:.6g})"
    if problem:
        return None, dead_letter(path, line, schema_lib.RAW_WEIGHT, problem, raw)
    pair[schema_lib.RAW_WEIGHT] = float(weight)
    pair["file"], pair["line"] = path, line
    return pair, None


class ParseItems(beam.PTransform):
    """Batches of (path, line, raw) -> buckets of valid, unique items; dead letters tagged ERRORS.

    Output "items": `(bucket, [(item_id, item), ...])`, one element per non-empty bucket
    (`batches.bucket_of` the id, `num_buckets` of them), sorted by id. Duplicate item ids: the
    first by (file, line) is kept, the others are dead letters (ties, as in a BigQuery table
    without line numbers, are broken by the record text).
    """

    def __init__(self, schema: schema_lib.Schema, num_buckets: int = 1):
        super().__init__()
        self._features = schema.features
        self._id = schema.id_feature.name
        self._num_buckets = num_buckets

    def expand(self, lines):
        features, id_name, num_buckets = self._features, self._id, self._num_buckets

        def validate(batch):
            valid = []
            for path, line, raw in batch:
                item, error = validate_item(features, path, line, raw)
                if item is None:
                    yield beam.pvalue.TaggedOutput(ERRORS, error)
                else:
                    valid.append((item[id_name], (path, line), item, raw))
            routed = batches.route(valid, lambda version: version[0], num_buckets)
            yield from ((bucket, batches.pack(records)) for bucket, records in routed)

        def first_of_duplicates(element):
            bucket, groups = element
            versions_of: dict[str, list] = {}
            for item_id, where, item, raw in batches.unpack(groups):
                versions_of.setdefault(item_id, []).append((where, item, raw))
            unique = []
            for item_id in sorted(versions_of):
                versions = versions_of[item_id]
                if len(versions) > 1:
                    versions.sort(key=lambda v: (v[0], record_text(v[2])))
                unique.append((item_id, versions[0][1]))
                for (path, line), _, raw in versions[1:]:
                    first = versions[0][0]
                    reason = f"duplicate item id (first seen at {first[0]}:{first[1]})"
                    yield beam.pvalue.TaggedOutput(
                        ERRORS, dead_letter(path, line, id_name, reason, raw)
                    )
            yield bucket, unique

        parsed = lines | "Validate" >> beam.ParDo(batches.Calls(validate)).with_outputs(
            ERRORS, main="items"
        )
        unique = (
            parsed.items
            | "GroupByBucket" >> beam.GroupByKey()
            | "Deduplicate" >> beam.FlatMap(first_of_duplicates).with_outputs(ERRORS, main="items")
        )
        errors = (parsed[ERRORS], unique[ERRORS]) | "MergeErrors" >> beam.Flatten()
        return {"items": unique.items, ERRORS: errors}


class ParsePairs(beam.PTransform):
    """Batches of (path, line, raw) -> batches (lists) of pair dicts; dead letters tagged ERRORS."""

    def expand(self, lines):
        def validate(batch):
            valid = []
            for path, line, raw in batch:
                pair, error = validate_pair(path, line, raw)
                if pair is None:
                    yield beam.pvalue.TaggedOutput(ERRORS, error)
                else:
                    valid.append(pair)
            if valid:
                yield valid

        parsed = lines | "Validate" >> beam.ParDo(batches.Calls(validate)).with_outputs(
            ERRORS, main="pairs"
        )
        return {"pairs": parsed.pairs, ERRORS: parsed[ERRORS]}
