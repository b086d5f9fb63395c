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
The step budget (`--epochs`, `--train_steps`) is the exception: a run that stopped early, at
step s before its budget, is the same run under any budget of at least s steps (the same data
order, steps and validations up to its stop: no schedule depends on the budget), so its record
stands when the budget is raised. (One exception, rare enough to accept: train also validates
at a budget's last step; a run reopened after a budget that is not a multiple of
`--validate_every` keeps that validation, which a run given the larger budget at once would not
have made.) Only the runs that used their whole budget train again,
resuming from their checkpoints where the model dirs are here. ("The same run" as far as a
command decides it. On one machine a command repeats bit for bit: the chosen baseline and FD
trials at 0.1 and their seed-0 final runs had identical validation values. On another machine it
need not: the FD trial at dropout 0.9 had validation Recall@50 0.291 at step 2,400 on the
previous machine and 0.279 here, most likely because TensorFlow's CPU kernels depend on the
processor. A record is one draw of its command, like a rerun would be.)
Records stamped before (`train_defaults`: a hash of every default) are still reusable while the
defaults are unchanged, and are stamped the new way when reused.
A new training option would change that hash and void every record; one declared with its
neutral value (`cli.option(neutral=...)`, the value that trains as before it existed) stays out
of the hash while its default is that value, and voids the records that took it once the default
changes.
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


def train_pairs(data_dir: str) -> int | None:
    """The data dir's number of training pairs (None without its statistics)."""
    try:
        with open(os.path.join(data_dir, "stats.json")) as f:
            return json.load(f)["num_train_pairs"]
    except (OSError, KeyError, ValueError):
        return None


def budget_steps(command: list[str], pairs: int) -> int:
    """The step budget of a portable train command on `pairs` training pairs, as train computes
    it from the command's flags (the last of a repeated flag wins, as in absl) and defaults."""
    values = {
        f.name: f.default
        for f in dataclasses.fields(config_lib.TrainConfig)
        if f.name in ("batch_size", "epochs", "train_steps")
    }
    for arg in command:
        name, _, value = arg.removeprefix("--").partition("=")
        if name in values and value:
            values[name] = value
    return config_lib.budget_steps(
        pairs,
        int(values["batch_size"]),
        float(values["epochs"]),
        int(values["train_steps"]) if values["train_steps"] not in (None, "None") else None,
    )


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


def freeze(command: list[str]) -> list[str]:
    """The command with its flagfiles' flags in place of their names, as the files are now.
    Stamp a record with the commands frozen when its run started: a flagfile rewritten while
    the run trained (tuning rewrites its choices) must not be recorded as what it ran."""
    out = command[:1]
    for arg in command[1:]:
        if arg.startswith("--flagfile="):
            out += _flagfile_flags(arg.split("=", 1)[1])
        else:
            out.append(arg)
    return out


def portable(command: list[str], ignored: tuple[str, ...] = ()) -> list[str]:
    """What the command runs, comparable between machines: without its interpreter's path (a
    venv's path differs) and with its flagfiles' flags in place of their names; flags of the
    `ignored` fields (ones the record does not depend on) are left out."""
    return [arg for arg in freeze(command)[1:] if not _sets(arg, ignored)]


def _neutral(field: dataclasses.Field) -> bool:
    """Whether the field's default is its neutral value (cli.option): the behaviour from before
    the option existed, which every earlier record had, so it is left out of the hash."""
    return "neutral" in field.metadata and field.metadata["neutral"] == field.default


def train_defaults(ignored: tuple[str, ...] = ()) -> str:
    """A short hash of the training flags' defaults (a command's unset flags take them), leaving
    out the `ignored` fields (defaults a record's values do not depend on)."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(config_lib.TrainConfig)
        # Required fields (paths) have no default; their repr would be an address.
        if f.default is not dataclasses.MISSING and f.name not in ignored and not _neutral(f)
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


def _trained_steps(record: dict) -> int | None:
    """The step a recorded run ended at (tuning trials and final runs keep it differently)."""
    return record.get("steps") or record.get("train", {}).get("steps")


def _within_budget(record: dict, commands: list[list[str]], pairs: int) -> bool:
    """Whether `record`'s commands differ from `commands` (portable) only in the step budget,
    and its run stopped early at a step the new budget reaches (module docstring)."""
    recorded = record.get("commands") or []
    if len(recorded) != len(commands) or any(
        [a for a in old if not _sets(a, config_lib.BUDGET_FIELDS)]
        != [a for a in new if not _sets(a, config_lib.BUDGET_FIELDS)]
        for old, new in zip(recorded, commands, strict=True)
    ):
        return False
    trains = [
        (old, new)
        for old, new in zip(recorded, commands, strict=True)
        if "ssl_retrieval.train" in new
    ]
    steps = _trained_steps(record)
    if not trains or steps is None or used_whole_budget(record, pairs) is not False:
        return False
    try:
        return steps <= budget_steps(trains[-1][1], pairs)
    except ValueError:  # a budget train refuses: the run fails on its own
        return False


def used_whole_budget(record: dict, pairs: int | None) -> bool | None:
    """Whether the recorded run trained to the end of its step budget instead of stopping
    early (so it may not have converged); None when the record or the data cannot tell. A run
    whose patience ran out at its budget's last step used it too (config.used_whole_budget)."""
    stopped_early = record.get("stopped_early", record.get("train", {}).get("stopped_early"))
    budget = record.get("train", {}).get("max_steps") or _budget_of(record, pairs)
    return config_lib.used_whole_budget(_trained_steps(record), budget, stopped_early)


def _budget_of(record: dict, pairs: int | None) -> int | None:
    """The step budget of a record's train command on `pairs` training pairs (None: unknown)."""
    trains = [c for c in record.get("commands") or [] if "ssl_retrieval.train" in c]
    if not trains or pairs is None:
        return None
    try:
        return budget_steps(trains[-1], pairs)
    except ValueError:
        return None


def reusable(
    record: dict | None,
    commands: list[list[str]],
    fingerprint: str,
    ignored_defaults: tuple[str, ...] = (),
    pairs: int | None = None,
) -> bool:
    """True when `record` was made by these commands on data with this fingerprint (the fields
    in `ignored_defaults` may differ, as defaults or as flags). With `pairs`, the data's
    training pairs, the step budget may differ too when the recorded run stopped early before
    the new budget (module docstring)."""
    if record is None or fingerprint == "missing" or record.get("data_fingerprint") != fingerprint:
        return False
    now = [portable(c, ignored_defaults) for c in commands]
    if record.get("commands") == now:
        made_by = commands
    elif pairs is not None and _within_budget(record, now, pairs):
        # Its own commands (another budget): the defaults they took must still be today's.
        made_by = [["python", *c] for c in record["commands"]]
    else:
        return False
    if "taken_defaults" in record:
        return record["taken_defaults"] == taken_defaults(made_by, ignored_defaults)
    # Stamped before taken_defaults: a hash of every default.
    return record.get("train_defaults") == train_defaults(ignored_defaults)


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
