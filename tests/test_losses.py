"""Loss heads against numpy references, including the two-replica cross-replica negatives."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ssl_retrieval.compat import tf
from ssl_retrieval.model import losses


def normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_softmax(q, c, t, weights=None, ids=None, probs=None):
    """Eq. 6 in numpy: mean (or weighted sum / B) of -log softmax over cosine/t."""
    logits = normalise(q) @ normalise(c).T / t
    if probs is not None:
        logits = logits - np.log(probs)[None, :]
    if ids is not None:
        same = ids[:, None] == ids[None, :]
        np.fill_diagonal(same, False)
        logits = np.where(same, -1e9, logits)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    per_example = -np.diag(log_softmax)
    if weights is not None:
        per_example = per_example * weights
    return per_example.sum() / len(q)


@pytest.mark.parametrize("temperature", [0.05, 0.07, 1.0])
def test_contrastive_softmax_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(16, 8)), rng.normal(size=(16, 8))
    layer = losses.ContrastiveSoftmax(temperature)
    got = float(layer(tf.constant(q, tf.float32), tf.constant(c, tf.float32)))
    assert got == pytest.approx(reference_softmax(q, c, temperature), rel=1e-5)


def test_weights_accidental_hits_and_logq():
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(12, 6)), rng.normal(size=(12, 6))
    weights = rng.uniform(0.5, 2.0, size=12)
    ids = np.array([b"a", b"b", b"a", b"c", b"d", b"b", b"e", b"f", b"g", b"a", b"h", b"i"])
    probs = rng.uniform(0.01, 0.2, size=12)

    def loss(layer):
        return layer(
            tf.constant(q, tf.float32),
            tf.constant(c, tf.float32),
            sample_weight=tf.constant(weights, tf.float32),
            candidate_ids=tf.constant(ids),
            candidate_sampling_probability=tf.constant(probs, tf.float32),
        )

    got = loss(losses.ContrastiveSoftmax(0.1))
    expected = reference_softmax(q, c, 0.1, weights, ids, probs)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Removing accidental hits really changes the loss here (ids repeat).
    plain = reference_softmax(q, c, 0.1, weights, None, probs)
    assert abs(plain - expected) > 1e-3
    got_plain = loss(losses.ContrastiveSoftmax(0.1, remove_accidental_hits=False))
    assert float(got_plain) == pytest.approx(plain, rel=1e-5)


def test_spread_out_losses_match_numpy():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(10, 5))
    zn = normalise(z)
    sims = zn @ zn.T
    square = ((sims**2).sum() - np.trace(sims**2)) / 10
    got = float(losses.spread_out_loss(tf.constant(z, tf.float32), "square"))
    assert got == pytest.approx(square, rel=1e-5)
    softmax = reference_softmax(z, z, 0.2)
    got = float(losses.spread_out_loss(tf.constant(z, tf.float32), "softmax", 0.2))
    assert got == pytest.approx(softmax, rel=1e-5)
    with pytest.raises(ValueError, match="--so_loss must be one of"):
        losses.spread_out_loss(tf.constant(z, tf.float32), "cube")


def test_layer_config_round_trip():
    layer = losses.ContrastiveSoftmax(0.3, remove_accidental_hits=False, cross_replica=False)
    config = layer.get_config()
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, losses.ContrastiveSoftmax)
    for key in ("temperature", "remove_accidental_hits", "cross_replica"):
        assert getattr(restored, key) == config[key]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        losses.ContrastiveSoftmax(0.0)


TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ssl_retrieval.compat as c
    tf = c.tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ssl_retrieval.model import losses
    rng = np.random.default_rng(3)
    q = rng.normal(size=(8, 4)).astype("float32")
    cand = rng.normal(size=(8, 4)).astype("float32")
    ids = np.array([b"a", b"b", b"c", b"a", b"d", b"e", b"b", b"f"])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = losses.ContrastiveSoftmax(0.1)
        w = tf.Variable(np.eye(4, dtype="float32"))
    def fn(ctx):
        i = ctx.replica_id_in_sync_group
        return (q[i * 4:(i + 1) * 4], cand[i * 4:(i + 1) * 4], ids[i * 4:(i + 1) * 4])
    values = strategy.experimental_distribute_values_from_function(fn)
    def step(v):
        qq, cc, ii = v
        with tf.GradientTape() as tape:
            loss = layer(qq, tf.matmul(cc, w), candidate_ids=ii)
        return loss, tape.gradient(loss, w)
    loss, grad = strategy.run(step, args=(values,))
    total = strategy.reduce("SUM", loss, axis=None)
    grad = strategy.reduce("SUM", grad, axis=None)
    single = losses.ContrastiveSoftmax(0.1)
    w1 = tf.Variable(np.eye(4, dtype="float32"))
    with tf.GradientTape() as tape:
        ref = single(q, tf.matmul(cand, w1), candidate_ids=ids)
    ref_grad = tape.gradient(ref, w1)
    print(json.dumps({"two": float(total), "one": float(ref),
                      "grad_diff": float(np.abs(grad.numpy() - ref_grad.numpy()).max())}))
    """
)


@pytest.mark.slow
def test_two_replicas_gather_negatives_like_one_global_batch():
    out = subprocess.run(
        [sys.executable, "-c", TWO_REPLICAS], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["two"] == pytest.approx(result["one"], rel=1e-5)
    assert result["grad_diff"] < 1e-5
