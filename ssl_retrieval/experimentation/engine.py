"""One plan -> run -> record loop, shared by `python -m ssl_retrieval.experiments` and `tune`.

A campaign goes through its planned runs (`ledger.Unit`) in order. A run whose record stands for
it (`ledger.RecordBook.finished`, keys.py) is kept as recorded, on a fresh clone too; any other
is claimed (workers.py: one worker trains it, the others pass it or, for tuning, wait for it),
checked again (another worker may have finished it), trained (or resumed, or its blend chosen
again: train knows; a model dir of another config is set aside, launch.py), evaluated on test
when it has an evaluation, and recorded with its key, taken as its flagfiles are when it starts
(tuning may rewrite one while it trains). The records file is rewritten after every run, merged
under a lock with what other workers wrote, so that stopping midway loses no record. A record
a sitting reused is the file's: if another worker (of another config: other flags at a fraction)
recorded that run again since, its record stays.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from ssl_retrieval import atomic
from ssl_retrieval.experimentation import launch, ledger, workers
from ssl_retrieval.experimentation.ledger import Unit


@dataclasses.dataclass
class Campaign:
    """A sitting of a campaign: its record book, and the records it kept so far, in order."""

    book: ledger.RecordBook
    runs_dir: str  # model dirs, and the workers' locks under .locks/
    describe: Callable[[Unit], dict]  # the record of a unit from its finished model dir
    runner: Callable[[list[str]], None] = launch.run_subprocess
    wait_for_claims: bool = False  # wait for a run another worker holds instead of passing it
    log_name: str = "experiments"
    done: list[dict] = dataclasses.field(default_factory=list)
    trained: set[str] = dataclasses.field(default_factory=set)  # the runs this sitting recorded

    def go(self, units: Sequence[Unit], hold: Callable[[Unit], bool] | None = None) -> int:
        """Goes through `units`: each recorded one is kept, each other trained unless `hold`
        says it is not for now. Returns how many were recorded before."""
        before = 0
        for i, unit in enumerate(units):
            if self.reuse(unit):
                before += 1
            elif hold is None or not hold(unit):
                self.train(unit, f"{i + 1}/{len(units)}")
        return before

    def reuse(self, unit: Unit) -> bool:
        """Keeps the unit's record when it stands for the run (an earlier sitting's, or
        machine's); False when it must be trained."""
        if (record := self.book.finished(unit)) is None:
            return False
        self.keep(record, reused=True)
        return True

    def train(self, unit: Unit, position: str = "") -> dict | None:
        """Trains (and evaluates) `unit` under this worker's claim and keeps its record; None
        when another worker holds it (and this one does not wait)."""
        claim = workers.claim(self._lock(unit.name), wait=self.wait_for_claims)
        if claim is None:
            logging.info("%s: %s is being trained by another worker", self.log_name, unit.name)
            return None
        with claim:  # held until its record is written
            self.book = self.book.reloaded()  # another worker may have finished it since
            if self.reuse(unit):
                return self.done[-1]
            logging.info("%s: run %s %s", self.log_name, position, unit.name)
            key = self.book.key(unit)  # the flagfiles as it starts
            started = launch.train(self.runner, list(unit.train), unit.model_dir)
            for command in (unit.evaluate, *unit.more_evaluations) if unit.evaluate else ():
                self.runner(list(command))
            record = self.describe(unit)
            if started is not None:  # a run resumed or re-checked: its time is not the run's
                record["wall_seconds"] = round(time.monotonic() - started, 1)
            self.keep(ledger.stamp(record, key) if key is not None else record)
            return self.done[-1]

    def keep(self, record: dict, reused: bool = False) -> None:
        """Adds `record` to this sitting's and rewrites the records file, merged with what is
        there now (other workers' records, and the ones this sitting has not reached)."""
        self.done.append(record)
        if not reused:
            self.trained.add(record[self.book.name])
        with workers.locked(self._lock("results")):
            on_disk = ledger.load(self.book.path, self.book.name)
            records = self._mine(on_disk) + ledger.unreached(on_disk, self.done, self.book.name)
            atomic.write_jsonl(self.book.path, records)

    def _mine(self, on_disk: dict[str, dict]) -> list[dict]:
        """This sitting's records as they are to be written: the ones it recorded, and for the
        ones it reused, the file's record now (another worker may have recorded it again)."""
        name = self.book.name
        return [r if r[name] in self.trained else on_disk.get(r[name], r) for r in self.done]

    def finish(
        self, units: Sequence[Unit], then: Callable[[list[dict]], None] | None = None
    ) -> list[dict]:
        """Writes the records of `units`, in their order (this sitting's, and those other
        workers recorded meanwhile), then the file's other records: of runs `units` does not
        plan (a config with fewer fractions or seeds writing to the same file must not lose the
        others' runs) and of planned runs they no longer stand for (made under an earlier
        default: kept until the run is redone, which replaces them). `then` gets the planned
        ones under the same lock, so the last worker to write (a report) has every run.
        Returns the planned ones."""
        with workers.locked(self._lock("results")):
            self.book = self.book.reloaded()
            mine = {record[self.book.name] for record in self.done}
            records = self._mine(self.book.recorded)
            for unit in units:
                if unit.name not in mine and (record := self.book.finished(unit)) is not None:
                    records.append(record)
            order = {unit.name: i for i, unit in enumerate(units)}
            records.sort(key=lambda record: order.get(record[self.book.name], len(order)))
            on_disk = ledger.load(self.book.path, self.book.name)
            reported = {record[self.book.name] for record in records}
            others = [record for name, record in on_disk.items() if name not in reported]
            atomic.write_jsonl(self.book.path, records + others)
            if then is not None:
                then(records)
        return records

    def _lock(self, name: str) -> str:
        return workers.lock_path(self.runs_dir, name)
