"""An exponential moving average of the weights (Polyak averaging), for `--weight_averaging`.

Why: validation Recall@50 of a run moves by 0.01 to 0.03 between successive validations once it
has learned (docs/results.md, "Repeatability"), so the best checkpoint is partly chosen on noise
in the weights. The average of the last steps' weights is smoother, and often better, than the
last weights. Off by default: the paper does not average, and every recorded run was made without
it.

How:
  - the average is kept in non-trainable variables beside the weights and updated every
    `every` steps by folding in decay**every (an average over about 1 / (1 - decay) steps at a
    tenth of the cost, which matters for large embedding tables);
  - the first updates use a smaller decay, min(decay**every, (1 + u) / (10 + u)) at the u-th
    update, as `tf.train.ExponentialMovingAverage(num_updates=...)` does, so that the random
    initial weights are soon forgotten;
  - validation, the best checkpoint (which evaluation and export load) and the blend see the
    average: the trainer swaps it into the model (`swapped`) and back.
The averages and their update count are checkpointed with the model, so a run resumes exactly.
`Averaging` is the training loop's part that makes and updates the average.
"""

from __future__ import annotations

import contextlib

from ssl_retrieval.compat import tf
from ssl_retrieval.training.progress import Callback, Progress


class WeightAverage(tf.Module):
    """The moving average of `variables`; create it where they were created (a strategy's
    scope), once they exist."""

    def __init__(self, variables: list[tf.Variable], decay: float, every: int):
        super().__init__(name="weight_average")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.every = decay, every
        # Not a checkpoint dependency: the weights are the model's, checkpointed under it.
        self._variables = self._no_dependency(list(variables))
        self.averages = [
            tf.Variable(v.read_value(), trainable=False, name=v.name.split(":")[0] + "/average")
            for v in self._variables
        ]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")

    @tf.function
    def update(self) -> None:
        """Folds the current weights into the average (the trainer calls it every `every`
        steps)."""
        self.updates.assign_add(1)
        count = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(self.decay**self.every, (1.0 + count) / (10.0 + count))
        for average, variable in zip(self.averages, self._variables, strict=True):
            average.assign(decay * average + (1.0 - decay) * variable)

    @contextlib.contextmanager
    def swapped(self):
        """The model holds the averages inside the block and its own weights again after."""
        own = [tf.identity(v) for v in self._variables]
        for variable, average in zip(self._variables, self.averages, strict=True):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(self._variables, own, strict=True):
                variable.assign(value)


class Averaging(Callback):
    """--weight_averaging in the training loop: the average, made after the first step and
    updated every --weight_averaging_every steps; `swapped()` puts it into the model (a no-op
    without averaging, or before the first step).

    The average is made when the weights exist, after the first step: creating them earlier
    would change the order of initialisation, and so the seed's weights. It is attached to
    `checkpoint`, which was restored from the run's latest checkpoint, so a resumed run's
    averages are restored as it is attached (TensorFlow's deferred restoration).
    """

    def __init__(self, decay: float, every: int, strategy, model, checkpoint):
        self._decay, self._every = decay, every
        self._strategy, self._model, self._checkpoint = strategy, model, checkpoint
        self.average: WeightAverage | None = None

    def on_step_end(self, progress: Progress) -> None:
        if self._decay and self.average is None:
            with self._strategy.scope():
                self.average = WeightAverage(
                    self._model.trainable_variables, self._decay, self._every
                )
            self._checkpoint.weight_average = self.average
        if self.average is not None and progress.step % self._every == 0:
            self.average.update()

    def swapped(self):
        """A context in which the model holds the average (if there is one)."""
        return self.average.swapped() if self.average is not None else contextlib.nullcontext()
