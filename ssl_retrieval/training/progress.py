"""What the training loop hands its parts after each step, and the progress log.

The loop (`trainer.run`) only steps; what happens between steps is done by callbacks, as in
keras' `fit` and orbit's `StandardTrainer`: each gets the `Progress` after every step (and may
ask the loop to stop) and once more at the end. `ProgressLog` is the one that reports: the
run's progress bar (`ssl_retrieval/progress_bar.py`: a bar on a terminal, a line a minute in a
file), and every --log_every steps the losses (a non-finite loss ends the run) and the
throughput, after the bar's counts and as TensorBoard scalars.
"""

from __future__ import annotations

import dataclasses
import math
import time

from ssl_retrieval import progress_bar
from ssl_retrieval.compat import tf


@dataclasses.dataclass
class Progress:
    """Where training is.

    Attributes:
      step: steps trained so far (counting those of the run being resumed).
      steps: the budget.
      values: the last step's (total, main, auxiliary) losses, tensors summed over replicas.
      stop: set by a callback to end training after this step (early stopping).
      seconds: time spent in the loop, set when it ends.
    """

    step: int
    steps: int
    values: list | None = None
    stop: bool = False
    seconds: float = 0.0

    @property
    def last(self) -> bool:
        """This step is the budget's last."""
        return self.step == self.steps


class Callback:
    """A part of the loop: called after every step, and once when training ends."""

    def on_step_end(self, progress: Progress) -> None:
        pass

    def on_train_end(self, progress: Progress) -> None:
        pass


LOSS_NAMES = ("total", "main", "auxiliary")


class ProgressLog(Callback):
    """The run's progress bar (`progress_bar.Bar`: a bar on a terminal, a line a minute in a
    file) and, every `log_every` steps and at the budget's last, the losses and throughput read:
    shown after the bar's counts and written as TensorBoard scalars.

    `losses` holds the last (total, main, auxiliary) losses read (NaN before the first).
    """

    def __init__(self, log_every: int, examples_per_step: int, writer):
        self._every, self._examples_per_step, self._writer = log_every, examples_per_step, writer
        self.losses = (float("nan"),) * 3
        self._window_start, self._window_steps = time.time(), 0
        self._bar = None

    def on_step_end(self, progress: Progress) -> None:
        """Advances the bar; reads the losses if it is due.

        Raises:
          ValueError: the total loss is not finite (names the step).
        """
        if self._bar is None:  # the first step of this process (of a resumed run: a later one)
            self._bar = progress_bar.Bar(
                "train", progress.steps, "steps", initial=progress.step - 1
            )
        self._window_steps += 1
        if not (progress.step % self._every == 0 or progress.last):
            self._bar.update(1)
            return
        self._bar.update(1, status=self._read(progress))

    def on_train_end(self, progress: Progress, done: bool = True) -> None:
        if self._bar is not None:
            self._bar.close(done)
            self._bar = None

    def _read(self, progress: Progress) -> str:
        """The losses and throughput since the last reading, into TensorBoard; returns them as
        the bar shows them."""
        step = progress.step
        self.losses = tuple(float(v.numpy()) for v in progress.values)
        if not math.isfinite(self.losses[0]):
            self.on_train_end(progress, done=False)
            raise ValueError(
                f"loss is {self.losses[0]} at step {step}; lower --learning_rate or check the data"
            )
        seconds = max(time.time() - self._window_start, 1e-9)
        rate = self._window_steps * self._examples_per_step / seconds
        with self._writer.as_default(step=step):
            for name, value in zip(LOSS_NAMES, self.losses, strict=True):
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("examples_per_second", rate)
        self._window_start, self._window_steps = time.time(), 0
        return "loss {:.4f} main {:.4f} aux {:.4f}, {:.0f} examples/s".format(*self.losses, rate)
