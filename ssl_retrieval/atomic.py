"""Atomic writes: a temporary file (or directory) beside the target, then a rename, so a reader
never sees half of it and a killed writer leaves the previous version (or nothing) in place.
Also the reader of the JSON Lines these writes produce (`read_jsonl`)."""

from __future__ import annotations

import json
import os
import shutil


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically, creating its directory."""
    write_with(path, lambda f: f.write(text.encode("utf-8")))


def write_with(path: str, write) -> None:
    """Calls `write(binary file)` on a temporary file beside `path`, then renames it to `path`
    (creating its directory); a failed write leaves no temporary file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(
    path: str, obj, *, indent: int | None = 2, sort_keys: bool = True, newline: bool = True
) -> None:
    """Writes `obj` as JSON atomically (by default indented, keys sorted, a final newline)."""
    write_text(
        path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + ("\n" if newline else "")
    )


def write_jsonl(path: str, records) -> None:
    """Writes one JSON object per line (keys sorted) atomically."""
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_jsonl(path: str, missing_ok: bool = False) -> list[dict]:
    """The objects of a JSON Lines file, blank lines skipped ([] for a missing file when
    `missing_ok`). Raises ValueError naming the file and line that is not JSON."""
    if missing_ok and not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON: {e}") from e
    return records


def replace_dir(tmp: str, target: str, old: str) -> None:
    """Renames the finished directory `tmp` to `target`. An existing `target` is first renamed
    to `old` (a sibling name of the caller's choosing, so that its clean-up can recognise it) and
    deleted once the new one is in place."""
    moved = os.path.exists(target)
    if moved:
        os.rename(target, old)
    os.rename(tmp, target)
    if moved:
        shutil.rmtree(old, ignore_errors=True)
