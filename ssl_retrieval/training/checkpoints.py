"""Training checkpoints: restoring the newest readable one, saving on a schedule, repair.

A checkpoint (`<model_dir>/checkpoints/ckpt-<step>`, the three newest kept) holds the model, the
optimizer (and so the step) and, with --weight_averaging, the averages. `Checkpointing` restores
the newest one at the start of a run and saves every --checkpoint_every steps, at the budget's
last step and when training stops early, so a kill loses at most --checkpoint_every steps.

Repair: a kill can leave the newest checkpoint half written, or the `checkpoint` state file
naming an older one or damaged. `use_newest_readable_checkpoint` finds, from the files on disk,
the newest checkpoint whose every tensor reads back and points the state file at it.
"""

from __future__ import annotations

import logging
import os

from ssl_retrieval.compat import tf
from ssl_retrieval.training.progress import Callback, Progress

DIR = "checkpoints"


class Checkpointing(Callback):
    """The run's checkpoints: `restore` at the start, a save on `on_step_end` when it is due.

    Create it in the strategy's scope, after the model and its optimizer.
    """

    def __init__(self, model_dir: str, every: int, model):
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self._every = every
        self._directory = os.path.join(model_dir, DIR)
        self._restored = None  # the restore's status, once a checkpoint was read

    def restore(self) -> int:
        """Restores the newest readable checkpoint; returns its step (0 when there is none).

        Raises:
          ValueError: checkpoints exist and none reads.
        """
        use_newest_readable_checkpoint(self._directory)
        self._manager = tf.train.CheckpointManager(self.checkpoint, self._directory, max_to_keep=3)
        latest = self._manager.latest_checkpoint
        if not latest:
            return 0
        self._restored = self.checkpoint.restore(latest).assert_existing_objects_matched()
        step = int(self.checkpoint.optimizer.iterations.numpy())
        logging.info("train: resuming from step %d (%s)", step, latest)
        return step

    def not_training(self) -> None:
        """A finished run is not trained again: the values waiting for variables the loop
        would create are not restored, on purpose (no warning per table when it ends)."""
        if self._restored is not None:
            self._restored.expect_partial()

    def on_step_end(self, progress: Progress) -> None:
        if progress.step % self._every == 0 or progress.last or progress.stop:
            self._manager.save(checkpoint_number=progress.step)


def latest_step(model_dir: str) -> int:
    """The step of the newest checkpoint file of a run (0 when there is none)."""
    prefixes = checkpoint_prefixes(os.path.join(model_dir, DIR))
    return prefixes[0][0] if prefixes else 0


def checkpoint_prefixes(checkpoint_dir: str) -> list[tuple[int, str]]:
    """(step, prefix `<dir>/ckpt-<step>`) of the checkpoints on disk, newest first.

    From the files, not from the `checkpoint` state file, which can itself be damaged.
    """
    found = []
    for index in tf.io.gfile.glob(os.path.join(checkpoint_dir, "ckpt-*.index")):
        prefix = index[: -len(".index")]
        step = prefix.rsplit("-", 1)[1]
        if step.isascii() and step.isdigit():
            found.append((int(step), prefix))
    return sorted(found, reverse=True)


def _unreadable(prefix: str) -> str | None:
    """Why the checkpoint at `prefix` cannot be read (None if every tensor reads back).

    Reading every tensor checks its checksum, so a truncated, emptied or overwritten file is
    caught here rather than as a raw error at the first training step (Keras creates most
    variables after the restore, so restoring them is deferred until then).
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001  (the C++ reader raises IndexError, OpError, ...)
        text = (getattr(e, "message", None) or str(e)).strip()
        return (text.splitlines()[0] if text else type(e).__name__)[:300]
    return None


def use_newest_readable_checkpoint(checkpoint_dir: str) -> str | None:
    """Points the checkpoint state file at the newest checkpoint that reads, and returns it.

    A newer checkpoint that does not read is named in a warning; its files stay where they are
    (the save at its step replaces them). A missing or damaged state file is rewritten too.
    None when there is no checkpoint.

    Raises:
      ValueError: checkpoints exist and none reads (one line naming the newest one).
    """
    found = checkpoint_prefixes(checkpoint_dir)
    failures = []
    for step, prefix in found:
        reason = _unreadable(prefix)
        if reason is not None:
            failures.append((prefix, reason))
            logging.warning(
                "WARNING: train: checkpoint %s is unreadable (%s); trying an older one",
                prefix,
                reason,
            )
            continue
        _point_state_file_at(checkpoint_dir, prefix, [p for s, p in reversed(found) if s <= step])
        return prefix
    if failures:
        prefix, reason = failures[0]
        raise ValueError(
            f"{prefix} is unreadable ({reason}) and so are the {len(failures) - 1} older "
            f"checkpoint(s) in {checkpoint_dir}; move them away to start again"
        )
    return None


def _point_state_file_at(checkpoint_dir: str, prefix: str, older: list[str]) -> None:
    """Rewrites the state file unless it names `prefix` already (`older`: the prefixes up to
    it, oldest first)."""
    try:
        state = tf.train.get_checkpoint_state(checkpoint_dir)
    except Exception:  # noqa: BLE001  (a damaged state file is rewritten below)
        state = None
    if state is None or os.path.basename(state.model_checkpoint_path) != os.path.basename(prefix):
        tf.compat.v1.train.update_checkpoint_state(
            checkpoint_dir,
            os.path.basename(prefix),
            all_model_checkpoint_paths=[os.path.basename(p) for p in older],
        )
