"""Finished runs as committed JSON Lines records, so that a campaign resumes on another machine.

Tuning and the experiments take many hours on 2 cores, more than one sitting, and their model
dirs are not committed (they are large). Their JSON Lines files are: a record that names the
exact command it came from and a fingerprint of its data dir is as good as the run itself, so a
fresh clone skips it. A record is reused only when both match, so changing a flag, a flagfile
name or the data (a newer Debian index) reruns the run instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import os

# Files of a preprocessed data dir that change whenever its pairs or items do.
_FINGERPRINT_FILES = ("stats.json", os.path.join("stats", "candidate_counts.tsv"))


def data_fingerprint(data_dir: str) -> str:
    """A short hash of the data dir's statistics (counts, per-candidate training counts);
    "missing" for a dir without them (its runs fail on their own, and nothing matches them)."""
    digest = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            return "missing"
        with open(path, "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def portable(command: list[str]) -> list[str]:
    """The command without its interpreter's path (a venv's path differs between machines)."""
    return list(command[1:])


def load(path: str, key: str) -> dict[str, dict]:
    """Records of a JSON Lines file by their `key` field ({} when the file does not exist)."""
    if not os.path.exists(path):
        return {}
    records = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number} is not JSON: {e}") from e
            records[record[key]] = record
    return records


def reusable(record: dict | None, commands: list[list[str]], fingerprint: str) -> bool:
    """True when `record` was made by exactly these commands on data with this fingerprint."""
    return (
        record is not None
        and fingerprint != "missing"
        and record.get("commands") == [portable(c) for c in commands]
        and record.get("data_fingerprint") == fingerprint
    )


def stamp(record: dict, commands: list[list[str]], fingerprint: str) -> dict:
    """`record` with what `reusable` checks."""
    return {**record, "commands": [portable(c) for c in commands], "data_fingerprint": fingerprint}
