"""Finished runs as committed JSON Lines records, so that a campaign resumes on another machine.

A record is a run's results (a final run's metrics, a tuning trial's validation) plus `"key"`,
what it stands for (keys.RunKey: its resolved training config's hash, its blend's, its data's
fingerprint, its step budget and evaluation), and `"train_config"`, the resolved fields the
training hash was taken of, to read why a run is trained again. `RecordBook.finished` is the one
place that decides whether a planned run is done.
"""

from __future__ import annotations

import dataclasses

from ssl_retrieval import atomic
from ssl_retrieval import config as config_lib
from ssl_retrieval.experimentation import keys


@dataclasses.dataclass(frozen=True)
class Unit:
    """A run a campaign plans: its train command and, for a final run, its evaluation on test."""

    name: str  # the record's name: a run_id or a trial_id
    fraction: str  # the data it trains on: a key of the config's data_dirs
    model_dir: str
    train: tuple[str, ...]
    evaluate: tuple[str, ...] | None = None
    evaluation: dict | None = None  # the options of `evaluate` the record stands for (the ks)
    more_evaluations: tuple[tuple[str, ...], ...] = ()  # further `evaluate` commands
    flagfile: str | None = None  # a flagfile tuning writes: the run waits until it exists


def load(path: str, key: str) -> dict[str, dict]:
    """Records of a JSON Lines file by their `key` field ({} when the file does not exist)."""
    return {record[key]: record for record in atomic.read_jsonl(path, missing_ok=True)}


def unreached(recorded: dict[str, dict], done: list[dict], key: str) -> list[dict]:
    """The `recorded` records not (yet) among `done`: written back while a campaign goes
    through its plan, so that stopping it midway loses none of what later steps would reuse."""
    seen = {record[key] for record in done}
    return [record for name, record in recorded.items() if name not in seen]


# What records made before the key (campaigns before issue 33) kept instead.
_FORMER_STAMPS = ("commands", "taken_defaults", "train_defaults", "data_fingerprint")


def stamp(record: dict, key: keys.RunKey) -> dict:
    """`record` with what `reusable` compares."""
    record = {k: v for k, v in record.items() if k not in _FORMER_STAMPS}
    return {**record, "key": key.to_json(), "train_config": key.fields}


def reusable(record: dict | None, key: keys.RunKey) -> bool:
    """Whether `record` stands for the run of `key` (keys.py): the same training config, data,
    evaluation and blend (when compared), and a step budget it stopped early within."""
    recorded = (record or {}).get("key")
    if not recorded or key.data == "missing":
        return False
    same = (
        recorded["train"] == key.train
        and recorded["data"] == key.data
        and recorded.get("evaluate") == key.evaluate
        and (key.blend is None or recorded.get("blend") == key.blend)
    )
    return same and _within_budget(record, key)


def _within_budget(record: dict, key: keys.RunKey) -> bool:
    """The same budget, or one the recorded run stopped early within (keys.py)."""
    recorded = record["key"]
    if (recorded["train_steps"], recorded["epochs"]) == (key.train_steps, key.epochs) or (
        key.train_steps is not None and recorded["train_steps"] == key.train_steps
    ):
        return True
    steps = _trained_steps(record)
    if steps is None or key.budget_steps is None:
        return False
    return used_whole_budget(record) is False and steps <= key.budget_steps


def _trained_steps(record: dict) -> int | None:
    """The step a recorded run ended at (tuning trials and final runs keep it differently)."""
    return record.get("steps") or record.get("train", {}).get("steps")


def used_whole_budget(record: dict) -> bool | None:
    """Whether the recorded run trained to the end of its step budget instead of stopping
    early (so it may not have converged); None when the record cannot tell. A run whose
    patience ran out at its budget's last step used it too (config.used_whole_budget)."""
    stopped_early = record.get("stopped_early", record.get("train", {}).get("stopped_early"))
    budget = record.get("train", {}).get("max_steps") or record.get("key", {}).get("budget_steps")
    return config_lib.used_whole_budget(_trained_steps(record), budget, stopped_early)


@dataclasses.dataclass(frozen=True)
class RecordBook:
    """A campaign's records (`path`, by their `name` field) and the data they are compared on."""

    path: str
    name: str
    recorded: dict[str, dict]
    fingerprints: dict[str, str]  # by fraction
    pairs: dict[str, int | None]  # training pairs, by fraction

    @classmethod
    def of(cls, path: str, name: str, data_dirs: dict[str, str]) -> RecordBook:
        return cls(
            path,
            name,
            load(path, name),
            {f: keys.data_fingerprint(d) for f, d in data_dirs.items()},
            {f: keys.train_pairs(d) for f, d in data_dirs.items()},
        )

    def reloaded(self) -> RecordBook:
        """The same book with the records as the file holds them now (other workers add some)."""
        return dataclasses.replace(self, recorded=load(self.path, self.name))

    def key(self, unit: Unit) -> keys.RunKey | None:
        """The key of the run `unit` plans, with its flagfiles as they are now; None when its
        train command does not parse (a flagfile not written yet: the run fails on its own)."""
        try:
            return keys.run_key(
                list(unit.train),
                self.fingerprints[unit.fraction],
                self.pairs[unit.fraction],
                evaluate=unit.evaluation,
                blend=unit.evaluate is not None,  # trials are measured before the blend
            )
        except ValueError:
            return None

    def finished(self, unit: Unit) -> dict | None:
        """The unit's record when it stands for the run planned now, else None."""
        record = self.recorded.get(unit.name)
        if record is None or (key := self.key(unit)) is None:
            return None
        return record if reusable(record, key) else None
