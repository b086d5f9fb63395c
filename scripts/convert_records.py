r"""Converts campaign records stamped before issue 33 to the key (experimentation/keys.py), once.

  .venv/bin/python scripts/convert_records.py results/debian/results.jsonl \
      results/debian/tuning/trials.jsonl ...

Run it from the checkout whose runs/ holds the records' data dirs (their paths are relative).
Records made before the key named the command they came from with its flagfiles expanded
("commands"), a hash of the training defaults that command took ("taken_defaults") and the data
dir's fingerprint. A record is converted when its stamp holds today: its command, parsed by
absl as train parses it, took today's defaults (the hash is recomputed the way it was made), and
its data dir has the fingerprint it was made on; it then gets the key of that command, so a
campaign recognises it exactly when the old ledger did. Any other record is left as it is and
counted (one without a stamp, or whose defaults or data changed since: a campaign trains it
again, as it did before). Files are rewritten in place, atomically; a converted record is left
alone by a second pass. Prints one line per file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections import Counter

from ssl_retrieval import atomic, methods
from ssl_retrieval import config as config_lib
from ssl_retrieval.experimentation import keys, ledger

EVALUATE = "ssl_retrieval.evaluate"


def _neutral(field: dataclasses.Field) -> bool:
    return "neutral" in field.metadata and field.metadata["neutral"] == field.default


def taken_defaults(train: list[str], ignored: tuple[str, ...]) -> str:
    """The hash the former ledger stamped a record of `train` with: the defaults of the
    training fields the command leaves unset, its method reads and `ignored` does not name."""
    config, values = keys.parse_train(train)
    fields = dataclasses.fields(config_lib.TrainConfig)
    skip = {*ignored, *methods.get(config.method).unread_fields}
    skip |= {f.name for f in fields if f.name in values and values[f.name].present}
    defaults = {
        f.name: f.default
        for f in fields
        if f.default is not dataclasses.MISSING and f.name not in skip and not _neutral(f)
    }
    text = json.dumps(defaults, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def convert(record: dict, trial: bool) -> tuple[dict, str]:
    """(the record with its key, or as it was; what happened to it)."""
    if "key" in record:
        return record, "already converted"
    if "taken_defaults" not in record or not record.get("commands"):
        return record, "not stamped"
    trains = [c for c in record["commands"] if keys.TRAIN_MODULE in c]
    evaluates = [c for c in record["commands"] if EVALUATE in c]
    # Trials were stamped without the blend's flags and defaults: a trial is measured before it.
    ignored = config_lib.BLEND_FIELDS if trial else ()
    if not trains or taken_defaults(trains[-1], ignored) != record["taken_defaults"]:
        return record, "stale: made with other defaults"
    data_dir = keys.parse_train(trains[-1])[0].data_dir
    if keys.data_fingerprint(data_dir) != record.get("data_fingerprint"):
        return record, f"stale: other data in {data_dir}"
    evaluation = None
    if evaluates:
        ks = [a.split("=", 1)[1] for a in evaluates[-1] if a.startswith("--ks=")] or ["10,50"]
        evaluation = {"ks": [int(k) for k in ks[-1].split(",")]}
    key = keys.run_key(
        trains[-1],
        record["data_fingerprint"],
        keys.train_pairs(data_dir),
        evaluate=evaluation,
        blend=not trial,
    )
    return ledger.stamp(record, key), "converted"


def convert_file(path: str) -> Counter:
    records = atomic.read_jsonl(path)
    converted, counts = [], Counter()
    for record in records:
        new, what = convert(record, trial="trial_id" in record)
        converted.append(new)
        counts[what] += 1
    if converted != records:
        atomic.write_jsonl(path, converted)
    return counts


def main(paths: list[str]) -> None:
    for path in paths:
        counts = convert_file(path)
        print(f"{path}: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))


if __name__ == "__main__":
    main(sys.argv[1:])
