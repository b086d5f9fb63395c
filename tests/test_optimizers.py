"""LazyAdam (training/optimizers.py) against a numpy reference."""

import numpy as np

from ssl_retrieval.compat import tf
from ssl_retrieval.training import optimizers


def numpy_adam_rows(table, m, v, rows, grads, step, lr, b1=0.9, b2=0.999, eps=1e-7):
    """Adam on `rows` only, the other rows and their moments untouched."""
    table, m, v = table.copy(), m.copy(), v.copy()
    m[rows] = b1 * m[rows] + (1 - b1) * grads
    v[rows] = b2 * v[rows] + (1 - b2) * grads**2
    alpha = lr * np.sqrt(1 - b2**step) / (1 - b1**step)
    table[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + eps)
    return table, m, v


def test_lazy_adam_updates_only_the_looked_up_rows_as_adam_would():
    rng = np.random.default_rng(0)
    start = rng.standard_normal((50, 4)).astype(np.float32)
    table = tf.Variable(start)
    dense = tf.Variable(np.ones(3, np.float32))
    lazy = optimizers.LazyAdam(0.01)
    plain = tf.keras.optimizers.Adam(0.01)
    dense_twin = tf.Variable(np.ones(3, np.float32))
    expected, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for step, ids in enumerate(([3, 7, 3, 11], [7, 20], [3, 40, 41]), start=1):
        ids = tf.constant(ids)
        target = tf.constant(rng.standard_normal((len(ids), 4)), tf.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((tf.gather(table, ids) - target) ** 2) + tf.reduce_sum(dense**2)
        grads = tape.gradient(loss, [table, dense])
        assert isinstance(grads[0], tf.IndexedSlices)
        # numpy: the gradient of each distinct row, repeated lookups summed.
        rows, inverse = np.unique(ids.numpy(), return_inverse=True)
        per_lookup = 2 * (expected[ids.numpy()] - target.numpy())
        row_grads = np.zeros((len(rows), 4), np.float32)
        np.add.at(row_grads, inverse, per_lookup)
        expected, m, v = numpy_adam_rows(expected, m, v, rows, row_grads, step, 0.01)
        lazy.apply_gradients(zip(grads, [table, dense], strict=True))
        with tf.GradientTape() as tape:
            twin_loss = tf.reduce_sum(dense_twin**2)
        plain.apply_gradients([(tape.gradient(twin_loss, dense_twin), dense_twin)])
        np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(50), [3, 7, 11, 20, 40, 41])
    np.testing.assert_array_equal(table.numpy()[untouched], start[untouched])
    # Dense gradients get Keras's Adam unchanged.
    np.testing.assert_allclose(dense.numpy(), dense_twin.numpy(), rtol=1e-6)


def test_keras_adam_moves_rows_the_batch_did_not_touch_and_lazy_adam_does_not():
    """Why LazyAdam exists: Keras's Adam rewrites the whole table once a row has momentum."""
    row_1 = {}
    for name, optimizer in (
        ("adam", tf.keras.optimizers.Adam(0.1)),
        ("lazy", optimizers.LazyAdam(0.1)),
    ):
        table = tf.Variable(np.ones((10, 2), np.float32))
        row_1[name] = []
        for ids in ([1], [2]):  # row 1, then only row 2
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, tf.constant(ids)))
            optimizer.apply_gradients([(tape.gradient(loss, table), table)])
            row_1[name].append(float(table.numpy()[1, 0]))
    np.testing.assert_allclose(row_1["adam"][0], row_1["lazy"][0], rtol=1e-6)  # same first step
    assert row_1["adam"][1] < row_1["adam"][0]  # moved by its momentum without a lookup
    assert row_1["lazy"][1] == row_1["lazy"][0]
