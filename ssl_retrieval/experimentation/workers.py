"""Several experiments processes on one config at once (workers, one per core or machine).

Each planned run is trained by one worker at a time: a worker claims it with an exclusive lock
on `<runs_dir>/.locks/<run>.lock` and skips the runs another worker holds. The records file is
rewritten under a lock, merged with what the others wrote since, so that no worker drops their
records. Locks are `flock`s: the kernel releases them when a worker dies, so a killed worker
leaves nothing to clean up (they need a filesystem with working `flock`, as local disks and
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


def claim(path: str) -> IO | None:
    """The open lock file when this worker now holds `path`'s lock, else None (another worker
    does). The claim lasts until the returned file is closed (or the process ends)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a")  # noqa: SIM115 - the open file is the claim
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Holds `path`'s lock for the block, waiting for it while another worker holds it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
