"""The optimizers of `--optimizer`, and the lazy Adam that large embedding tables need.

Keras's Adam, given the sparse gradient of an embedding table (the rows a batch looked up),
decays both moment tables in full and rewrites the whole table at every step: three passes over
[vocabulary, dim] floats for a batch that touched a few thousand rows. At 1M items x 64 that made
training 4.3x slower than with `LazyAdam` (`bench/train.py --optimizers`: 2,742 against 11,718
examples a second; Adagrad 12,235). `LazyAdam` updates only the rows in the batch, as
`tfa.optimizers.LazyAdam` and PyTorch's `SparseAdam` do: a row's moments move only when it is
looked up, so a row that is absent for a while resumes from its last moments instead of decayed
ones. Dense gradients (the
towers' layers) get Keras's Adam unchanged, and the moments are the same slot variables, so
checkpoints of one load into the other. On validation it was level with Adam on Debian and 1.4%
below it on the linked source (results/recipe/README.md), so Adam stays the default.
"""

from __future__ import annotations

from ssl_retrieval.compat import tf


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam whose updates of sparse gradients touch only the gradient's rows (module docstring)."""

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        # apply_gradients has summed repeated indices: each row appears once.
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = (
            self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon
        )
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        rows, values = gradient.indices, gradient.values
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))


def make(name: str, learning_rate: float):
    """The optimizer `--optimizer` names (config.OPTIMIZERS)."""
    if name == "adagrad":
        return tf.keras.optimizers.Adagrad(learning_rate, initial_accumulator_value=0.1)
    if name == "adam":
        return tf.keras.optimizers.Adam(learning_rate)
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    if name == "sgd":
        return tf.keras.optimizers.SGD(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")
