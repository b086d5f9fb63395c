"""Reading and validating the raw JSON Lines input, with dead letters for bad records.

Every record keeps where it came from (file, line) so that a dead letter names the file, the line
and the field. Dead letters are dicts `{"file", "line", "field", "reason", "record"}`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from ssl_retrieval import schema as schema_lib

ERRORS = "errors"
MAX_RECORD_CHARS = 2000


def match_files(pattern: str, flag: str) -> list[str]:
    """Expands a glob (local or any Beam filesystem); raises ValueError naming the flag if empty."""
    try:
        results = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError and others for unreadable paths.
        raise ValueError(f"{flag}={pattern}: cannot list files ({e})") from None
    files = sorted(m.path for m in results)
    if not files:
        raise ValueError(f"{flag}={pattern}: no file matches")
    return files


def dead_letter(path: str, line: int, field: str, reason: str, text: str) -> dict:
    return {
        "file": path,
        "line": line,
        "field": field,
        "reason": reason,
        "record": text[:MAX_RECORD_CHARS],
    }


def read_lines(path: str) -> Iterator[tuple[str, int, str]]:
    """Yields (path, line number from 1, text) for the non-blank lines of one file."""
    with FileSystems.open(path) as raw:
        for line_no, line in enumerate(
            io.TextIOWrapper(raw, encoding="utf-8", errors="replace"), 1
        ):
            text = line.strip()
            if text:
                yield path, line_no, text


class ReadJsonLines(beam.PTransform):
    """Files -> (path, line, text), spread over workers.

    Each file is read by one worker (line numbers need a sequential read); a Reshuffle then
    spreads the lines, so shard your input for parallel reading at scale.
    """

    def __init__(self, files: list[str]):
        super().__init__()
        self._files = files

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._files)
            | "ReadLines" >> beam.FlatMap(read_lines)
            | "Spread" >> beam.Reshuffle()
        )


def _load(path: str, line: int, text: str) -> tuple[dict | None, dict | None]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, dead_letter(path, line, "", f"not valid JSON: {e.msg}", text)
    if not isinstance(obj, dict):
        return None, dead_letter(path, line, "", "expected a JSON object", text)
    return obj, None


def validate_item(
    features: tuple[schema_lib.Feature, ...], path: str, line: int, text: str
) -> tuple[dict | None, dict | None]:
    """Parses one item line. Returns (item, None) or (None, dead letter).

    The item maps feature name -> value: str (id, categorical), list of distinct str (multi_hot,
    order kept), float (dense). Missing values (absent key, null, empty list) are left out.
    Keys that are not schema features are ignored.
    """
    obj, error = _load(path, line, text)
    if error:
        return None, error
    item = {}
    for f in features:
        value = obj.get(f.name)
        if value is None or value == [] or value == "":
            if f.kind == schema_lib.ID:
                return None, dead_letter(path, line, f.name, "missing item id", text)
            continue
        if f.kind in (schema_lib.ID, schema_lib.CATEGORICAL):
            if not isinstance(value, str):
                reason = f"expected a string, got {type(value).__name__}"
                return None, dead_letter(path, line, f.name, reason, text)
            item[f.name] = value
        elif f.kind == schema_lib.MULTI_HOT:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                reason = "expected a list of strings"
                return None, dead_letter(path, line, f.name, reason, text)
            values = [v for v in dict.fromkeys(value) if v]
            if values:
                item[f.name] = values
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                reason = f"expected a number, got {type(value).__name__}"
                return None, dead_letter(path, line, f.name, reason, text)
            if not math.isfinite(value):
                return None, dead_letter(path, line, f.name, "not a finite number", text)
            item[f.name] = float(value)
    return item, None


def validate_pair(path: str, line: int, text: str) -> tuple[dict | None, dict | None]:
    """Parses one pair line -> ({"query_id", "candidate_id", "weight", "file", "line"}, None)."""
    obj, error = _load(path, line, text)
    if error:
        return None, error
    pair = {}
    for key in (schema_lib.RAW_QUERY_ID, schema_lib.RAW_CANDIDATE_ID):
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            reason = "missing" if value is None else f"expected a non-empty string, got {value!r}"
            return None, dead_letter(path, line, key, reason, text)
        pair[key] = value
    if pair[schema_lib.RAW_QUERY_ID] == pair[schema_lib.RAW_CANDIDATE_ID]:
        return None, dead_letter(path, line, schema_lib.RAW_CANDIDATE_ID, "self pair", text)
    weight = obj.get(schema_lib.RAW_WEIGHT, 1.0)
    if weight is None:
        weight = 1.0
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        reason = f"expected a number > 0, got {weight!r}"
        return None, dead_letter(path, line, schema_lib.RAW_WEIGHT, reason, text)
    if not math.isfinite(weight):
        return None, dead_letter(path, line, schema_lib.RAW_WEIGHT, "not a finite number", text)
    pair[schema_lib.RAW_WEIGHT] = float(weight)
    pair["file"], pair["line"] = path, line
    return pair, None


class _Validate(beam.DoFn):
    def __init__(self, validate):
        self._validate = validate

    def process(self, element):
        record, error = self._validate(*element)
        if error is not None:
            yield beam.pvalue.TaggedOutput(ERRORS, error)
        else:
            yield record


class ParseItems(beam.PTransform):
    """(path, line, text) -> (item_id, item) for valid, unique items; dead letters tagged ERRORS.

    Duplicate item ids: the first by (file, line) is kept, the others are dead letters.
    """

    def __init__(self, schema: schema_lib.Schema):
        super().__init__()
        self._features = schema.features
        self._id = schema.id_feature.name

    def expand(self, lines):
        features, id_name = self._features, self._id

        def validate(path, line, text):
            item, error = validate_item(features, path, line, text)
            if item is None:
                return None, error
            return (item[id_name], ((path, line), item, text)), None

        parsed = lines | "Validate" >> beam.ParDo(_Validate(validate)).with_outputs(
            ERRORS, main="items"
        )

        def first_of_duplicates(element):
            item_id, versions = element
            versions = sorted(versions, key=lambda v: v[0])
            yield item_id, versions[0][1]
            for (path, line), _, text in versions[1:]:
                first = versions[0][0]
                reason = f"duplicate item id (first seen at {first[0]}:{first[1]})"
                yield beam.pvalue.TaggedOutput(
                    ERRORS, dead_letter(path, line, id_name, reason, text)
                )

        unique = (
            parsed.items
            | "GroupById" >> beam.GroupByKey()
            | "Deduplicate" >> beam.FlatMap(first_of_duplicates).with_outputs(ERRORS, main="items")
        )
        errors = (parsed[ERRORS], unique[ERRORS]) | "MergeErrors" >> beam.Flatten()
        return {"items": unique.items, ERRORS: errors}


class ParsePairs(beam.PTransform):
    """(path, line, text) -> pair dicts; dead letters tagged ERRORS."""

    def expand(self, lines):
        parsed = lines | "Validate" >> beam.ParDo(_Validate(validate_pair)).with_outputs(
            ERRORS, main="pairs"
        )
        return {"pairs": parsed.pairs, ERRORS: parsed[ERRORS]}
