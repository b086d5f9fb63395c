"""The job's temporary output directory, and the removal of those a killed run left behind.

The job writes into `.<name>.tmp-<8 hex>` beside `<output_dir>` and renames it into place at
the end. A run killed with SIGKILL (or a lost machine) cannot remove its directory, so the next
run on the same output directory removes it — but only one that is provably stale: each running
job holds an exclusive `flock` on `<tmp>/.lock`, which the kernel releases when the process dies
however it dies. A directory whose lock can be taken belongs to no running job. One without a
lock file (the job died within microseconds of creating it, or was written by an older version)
is removed only when it has not changed for `UNLOCKED_GRACE_S`. Nothing else is ever touched:
only names matching our own pattern for this output directory, and `<tmp>.old` (the previous
output, moved aside during the final swap) only when the output directory itself exists.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
import uuid

LOCK_FILE = ".lock"
UNLOCKED_GRACE_S = 3600.0


def _pattern(output_dir: str) -> re.Pattern:
    return re.compile(re.escape(f".{os.path.basename(output_dir)}.tmp-") + r"[0-9a-f]{8}(\.old)?")


class TmpDir:
    """A fresh temporary sibling of `output_dir`, locked for as long as this object is open."""

    def __init__(self, output_dir: str):
        parent = os.path.dirname(os.path.abspath(output_dir))
        os.makedirs(parent, exist_ok=True)
        self.path = os.path.join(
            parent, f".{os.path.basename(output_dir)}.tmp-{uuid.uuid4().hex[:8]}"
        )
        os.makedirs(self.path)
        self._lock = open(
            os.path.join(self.path, LOCK_FILE), "w"
        )  # held open: the lock lives as long as the file
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        """Removes the lock file (call before renaming the directory into place) and unlocks."""
        if self._lock is None:
            return
        try:
            os.remove(os.path.join(self.path, LOCK_FILE))
        except FileNotFoundError:
            pass
        self._lock.close()
        self._lock = None

    def remove(self) -> None:
        self.release()
        shutil.rmtree(self.path, ignore_errors=True)


def _is_stale(path: str, now: float) -> bool:
    lock_path = os.path.join(path, LOCK_FILE)
    try:
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a running job holds it
            return True
    except FileNotFoundError:
        try:
            return now - os.stat(path).st_mtime > UNLOCKED_GRACE_S
        except FileNotFoundError:
            return False


def remove_stale(output_dir: str, now: float | None = None) -> list[str]:
    """Removes the temporary directories of killed runs on `output_dir`; returns their paths."""
    parent = os.path.dirname(os.path.abspath(output_dir))
    if not os.path.isdir(parent):
        return []
    now = time.time() if now is None else now
    pattern = _pattern(output_dir)
    removed = []
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not pattern.fullmatch(name) or not os.path.isdir(path) or os.path.islink(path):
            continue
        if name.endswith(".old"):
            if not os.path.isdir(output_dir):
                logging.warning(
                    "%s looks like the previous %s, moved aside by a run killed while swapping "
                    "it in; left in place (rename it back if you need it)",
                    path,
                    output_dir,
                )
                continue
        elif not _is_stale(path, now):
            continue
        logging.warning("removing %s, left behind by a killed run", path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
