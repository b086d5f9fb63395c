"""The model being served, and the following of the export directory (`ModelHolder`).

A background thread polls the export directory (the version is the directory name, see
`ssl_retrieval.serving.api`): it loads a newer version once, falls back to the newest remaining
one when the served directory disappears, skips incomplete or broken versions with one log line
each (retried only when their files change), and the previous model is freed once its last
request ends. A served directory that can no longer be read (`chmod 000`, a failing disk) is
not a deleted one: the version in memory keeps serving and one log line names the cause.
"""

from __future__ import annotations

import logging
import os
import threading

from ssl_retrieval.serving import api


class ModelHolder:
    """The model being served, and the following of the export directory."""

    def __init__(self, export_dir: str, poll_seconds: float = 30.0):
        self.export_dir = export_dir
        self.poll_seconds = poll_seconds
        self._failed: dict[int, tuple] = {}  # version -> fingerprint of its failed load
        self.model = api.load(export_dir, self._failed)  # logs start-up failures once
        self._single = api.is_version_dir(export_dir)  # one version given: nothing to follow
        self._lock = threading.Lock()
        self._warned = None  # (path, problem) last logged about the served version
        self._stop = threading.Event()
        self._thread = None

    def poll_once(self) -> bool:
        """Serves the newest version that loads if it is not the one served; True if swapped.

        The served version stays while its directory is intact (or merely unreadable) and
        nothing newer loads. When its directory is gone (or its files replaced) the newest
        remaining version that loads is served; if none does, the model in memory keeps
        serving, with a warning.
        """
        if self._single:
            return False
        with self._lock:
            current = self.model
            intact = api.fingerprint(current.path) == current.fingerprint
            if not intact:
                unreadable = api.unreadable(current.path)
                if unreadable:
                    self._warn_once(
                        current,
                        f"cannot be read ({unreadable}); still serving version "
                        f"{current.version} from memory",
                    )
                    intact = True  # not gone: no rollback to an older version
            present = api.version_dirs(self.export_dir)
            self._failed = {v: fp for v, fp in self._failed.items() if v in present}
            for version in reversed(present):
                if intact and version <= current.version:
                    return False
                new = self._try_load(version)
                if new is None:
                    continue
                self.model = new
                logging.warning(
                    "serve: now serving version %d (was %d%s)",
                    new.version,
                    current.version,
                    "" if intact else ", whose directory is gone or changed",
                )
                self._warned = None
                return True
            if not intact:
                self._warn_once(
                    current,
                    "is gone or changed and no other version loads; still serving "
                    f"version {current.version} from memory",
                )
            return False

    def _try_load(self, version: int) -> api.SimilarItems | None:
        """The version loaded, or None (logged once per content of its files)."""
        path = os.path.join(self.export_dir, str(version))
        fp = api.fingerprint(path)
        if self._failed.get(version) == fp:
            return None
        try:
            return api.SimilarItems(path)
        except api.BrokenVersionError as e:
            self._failed[version] = fp
            logging.warning("serve: skipping version %d: %s", version, e)
            return None

    def _warn_once(self, current, problem: str) -> None:
        if self._warned != (current.path, problem):
            self._warned = (current.path, problem)
            logging.warning("serve: %s %s", current.path, problem)

    def start(self) -> None:
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001  (the poller must outlive any one failure)
                logging.exception("serve: polling %s failed", self.export_dir)
