"""Finished runs as committed JSON Lines records, so that a campaign resumes on another machine.

Tuning and the experiments take many hours on 2 cores, more than one sitting, and their model
dirs are not committed (they are large). Their JSON Lines files are: a record that names the
exact command it came from and a fingerprint of its data dir is as good as the run itself, so a
fresh clone skips it. A record is reused only when all of these match, so that changing a flag,
a flagfile's contents, a training default of the package or the data (a newer Debian index)
reruns the run instead of mixing results:
  - the command with every `--flagfile=` replaced by the flags in that file (recursively);
  - a hash of the training defaults the run took: those of the flags its train command leaves
    out, but not of flags its method never reads (`methods.Method.unread_fields`), so that a new
    default of CFM's `--mi_normalization` reruns the CFM runs that relied on it and no others;
  - a hash of the data dir's statistics.
Records stamped before (`train_defaults`: a hash of every default) are still reusable while the
defaults are unchanged, and are stamped the new way when reused.
Code changes other than defaults are not detected: delete the records a fix invalidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from ssl_retrieval import atomic, methods
from ssl_retrieval import config as config_lib

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


def _flagfile_flags(path: str, seen: tuple = ()) -> list[str]:
    """The flags of an absl flagfile, nested flagfiles expanded (comments and blanks dropped)."""
    if path in seen or not os.path.exists(path):
        return [f"--flagfile={path}"]  # a run with it fails on its own; nothing matches it
    flags = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", "//")):
                continue
            if line.startswith("--flagfile="):
                flags += _flagfile_flags(line.split("=", 1)[1], (*seen, path))
            else:
                flags.append(line)
    return flags


def _sets(arg: str, names: tuple[str, ...]) -> bool:
    """Whether a command-line argument sets one of the flags `names` (--x=v, --x, --nox)."""
    flag = arg.split("=", 1)[0].removeprefix("--")
    return flag in names or (flag.startswith("no") and flag[2:] in names)


def portable(command: list[str], ignored: tuple[str, ...] = ()) -> list[str]:
    """What the command runs, comparable between machines: without its interpreter's path (a
    venv's path differs) and with its flagfiles' flags in place of their names; flags of the
    `ignored` fields (ones the record does not depend on) are left out."""
    out = []
    for arg in command[1:]:
        if arg.startswith("--flagfile="):
            out += _flagfile_flags(arg.split("=", 1)[1])
        else:
            out.append(arg)
    return [arg for arg in out if not _sets(arg, ignored)]


def train_defaults(ignored: tuple[str, ...] = ()) -> str:
    """A short hash of the training flags' defaults (a command's unset flags take them), leaving
    out the `ignored` fields (defaults a record's values do not depend on)."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(config_lib.TrainConfig)
        # Required fields (paths) have no default; their repr would be an address.
        if f.default is not dataclasses.MISSING and f.name not in ignored
    }
    text = json.dumps(defaults, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def taken_defaults(commands: list[list[str]], ignored: tuple[str, ...] = ()) -> str:
    """A short hash of the training defaults the run of `commands` depends on: not of the flags
    its train command sets (their default is never used), nor of those its method never reads,
    nor of the `ignored` fields."""
    train = [portable(c) for c in commands if "ssl_retrieval.train" in c]
    fields = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
    names, method = set(fields), fields["method"].default
    set_by_command = set()
    for arg in train[-1] if train else []:
        flag = arg.split("=", 1)[0].removeprefix("--")
        set_by_command.add(flag if flag in names else flag.removeprefix("no"))
        if flag == "method":
            method = arg.split("=", 1)[1]  # absl: the last one wins
    unread = methods.get(method).unread_fields if method in methods.METHODS else ()
    return train_defaults((*ignored, *sorted(set_by_command & names), *unread))


def load(path: str, key: str) -> dict[str, dict]:
    """Records of a JSON Lines file by their `key` field ({} when the file does not exist)."""
    return {record[key]: record for record in atomic.read_jsonl(path, missing_ok=True)}


def unreached(recorded: dict[str, dict], done: list[dict], key: str) -> list[dict]:
    """The `recorded` records not (yet) among `done`: written back while a campaign goes
    through its plan, so that stopping it midway loses none of what later steps would reuse."""
    seen = {record[key] for record in done}
    return [record for name, record in recorded.items() if name not in seen]


def fresh(model_dir: str) -> bool:
    """Whether no training has started in `model_dir` (train writes config.json first): only a
    run timed from there has a wall time of the whole run."""
    return not os.path.exists(os.path.join(model_dir, "config.json"))


def reusable(
    record: dict | None,
    commands: list[list[str]],
    fingerprint: str,
    ignored_defaults: tuple[str, ...] = (),
) -> bool:
    """True when `record` was made by exactly these commands on data with this fingerprint
    (the fields in `ignored_defaults` may differ, as defaults or as flags)."""
    if record is None or fingerprint == "missing":
        return False
    if "taken_defaults" in record:
        same_defaults = record["taken_defaults"] == taken_defaults(commands, ignored_defaults)
    else:  # stamped before taken_defaults: a hash of every default
        same_defaults = record.get("train_defaults") == train_defaults(ignored_defaults)
    return (
        same_defaults
        and record.get("commands") == [portable(c, ignored_defaults) for c in commands]
        and record.get("data_fingerprint") == fingerprint
    )


def stamp(
    record: dict,
    commands: list[list[str]],
    fingerprint: str,
    ignored_defaults: tuple[str, ...] = (),
) -> dict:
    """`record` with what `reusable` checks."""
    record = {key: value for key, value in record.items() if key != "train_defaults"}
    return {
        **record,
        "commands": [portable(c, ignored_defaults) for c in commands],
        "taken_defaults": taken_defaults(commands, ignored_defaults),
        "data_fingerprint": fingerprint,
    }
