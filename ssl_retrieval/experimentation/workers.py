"""Several experiments processes on one config at once (workers, one per core or machine).

Each planned run is trained by one worker at a time: a worker claims it with an exclusive lock
on `<runs_dir>/.locks/<run>.lock` and skips the runs another worker holds. The records file is
rewritten under a lock, merged with what the others wrote since, so that no worker drops their
records. Locks are `flock`s, passed to the worker's train and evaluate subprocesses: the kernel
releases a claim when the worker and those subprocesses have ended (killed too), so nothing is
left to clean up (they need a filesystem with working `flock`, as local disks and
NFSv4 have).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import IO


def lock_path(runs_dir: str, name: str) -> str:
    """The lock file of `name` (a run id, or "results") under the runs dir, never committed."""
    return os.path.join(runs_dir, ".locks", name.replace("/", "_") + ".lock")


_HELD: set[int] = set()  # the descriptors of this worker's claims


class Claim:
    """A run this worker holds (`with claim:` releases it). Its lock file is passed to the
    subprocesses started meanwhile (launch.run_subprocess), so the claim lasts while its
    training runs even when the worker alone is killed."""

    def __init__(self, file: IO):
        self._file = file
        _HELD.add(file.fileno())

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        _HELD.discard(self._file.fileno())
        self._file.close()


def held_fds() -> tuple[int, ...]:
    """The descriptors a subprocess inherits, to hold this worker's claims with it."""
    return tuple(sorted(_HELD))


def claim(path: str, wait: bool = False) -> Claim | None:
    """This worker's claim on `path`'s lock, or None when another worker holds it (with
    `wait`, once the other worker has released it)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a")  # noqa: SIM115 - the open file is the claim
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        f.close()
        return None
    return Claim(f)


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Holds `path`'s lock for the block, waiting for it while another worker holds it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
