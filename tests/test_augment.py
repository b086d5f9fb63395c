"""Masks and dropouts have the properties the paper states, and the layers round-trip."""

import collections

import numpy as np
import pytest

from ssl_retrieval.compat import tf
from ssl_retrieval.model import augment

# Features 0-1-2 strongly related, 3-4 related, 5 alone.
MI = np.array(
    [
        [5.0, 3.0, 2.0, 0.1, 0.2, 0.0],
        [3.0, 4.0, 2.5, 0.1, 0.1, 0.0],
        [2.0, 2.5, 3.0, 0.3, 0.1, 0.0],
        [0.1, 0.1, 0.3, 2.0, 1.5, 0.0],
        [0.2, 0.1, 0.1, 1.5, 2.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ]
)


def masks(layer, step):
    a, b = layer(tf.constant(step, tf.int64))
    return a.numpy(), b.numpy()


def assert_masked_sets(layer, steps, seeds_per_set, kept=None):
    """Over `steps` steps, view A masks exactly the feature sets of `seeds_per_set` ({features:
    how many of the uniform seed features give that set}), each about as often as its share of
    the seeds; B masks the complement (of the features but `kept`, which A keeps and B masks)."""
    seen = collections.Counter()
    rest = [i for i in range(len(MI)) if i != kept]
    for step in range(steps):
        a, b = masks(layer, step)
        assert (a[rest] ^ b[rest]).all()
        if kept is not None:
            assert not a[kept] and b[kept]
        seen[frozenset(np.flatnonzero(a).tolist())] += 1
    expected = {frozenset(s): n / sum(seeds_per_set.values()) for s, n in seeds_per_set.items()}
    assert set(seen) == set(expected)
    for group, share in expected.items():
        assert abs(seen[group] / steps - share) < 0.05, (group, seen[group])


def test_cfm_masks_seed_with_its_most_correlated_features():
    layer = augment.FeatureMasker(6, "cfm", mutual_info=MI.tolist(), seed=1)
    # Masked set for each seed feature: the seed plus its two most correlated features
    # (mask_size = k // 2). Seeds 0, 1 and 2 all give {0, 1, 2}; 3 -> {3, 4, 2}; 4 -> {4, 3, 0};
    # 5 -> {5, 0, 1} (all zero MI: ties broken by index).
    assert_masked_sets(layer, 1200, {(0, 1, 2): 3, (2, 3, 4): 1, (0, 3, 4): 1, (0, 1, 5): 1})
    # Same (seed, step): same masks; masks change across steps.
    assert (masks(layer, 7)[0] == masks(layer, 7)[0]).all()
    assert len({tuple(masks(layer, s)[0]) for s in range(20)}) > 1


def test_rfm_and_rfm_no_compl():
    rfm = augment.FeatureMasker(6, "rfm", mask_size=2, seed=3)
    no_compl = augment.FeatureMasker(6, "rfm_no_compl", mask_size=2, seed=3)
    overlaps = 0
    subsets = set()
    for step in range(200):
        a, b = masks(rfm, step)
        assert (a ^ b).all() and a.sum() == 2
        subsets.add(tuple(a))
        a, b = masks(no_compl, step)
        assert a.sum() == 2 and b.sum() == 2
        overlaps += bool((a & b).any())
    assert len(subsets) == 15  # every 2-subset of 6 features appears
    assert 0 < overlaps < 200  # independent masks sometimes overlap


def test_fm_fixed_sets_and_none():
    fm = augment.FeatureMasker(4, "fm", fixed_features=[0, 2])
    a, b = masks(fm, 0)
    assert a.tolist() == [False, True, False, True] and b.tolist() == [True, False, True, False]
    a, b = masks(augment.FeatureMasker(4, "none"), 5)
    assert not a.any() and not b.any()


def test_cold_start_view_keeps_the_feature_in_a_and_cfm_masks_the_rest():
    """Feature 0 (the id) outside the pattern: CFM's seeds and correlates are features 1-5.

    On the MI above without feature 0, mask_size 3 of those 5: seed 1 -> {1, 2, 3} (3 and 4
    tie at 0.1 with 1: index order), 2 -> {2, 1, 3}, 3 -> {3, 4, 2}, 4 -> {4, 3, 1} (1 and 2
    tie), 5 -> {5, 1, 2} (all zero)."""
    layer = augment.FeatureMasker(6, "cfm", mutual_info=MI.tolist(), seed=1, cold_start_feature=0)
    seeds_per_set = {(1, 2, 3): 2, (2, 3, 4): 1, (1, 3, 4): 1, (1, 2, 5): 1}
    assert_masked_sets(layer, 1000, seeds_per_set, kept=0)


@pytest.mark.parametrize("pattern", ["rfm", "rfm_no_compl", "none"])
def test_cold_start_view_with_random_masks_and_without_masks(pattern):
    layer = augment.FeatureMasker(6, pattern, mask_size=2, seed=2, cold_start_feature=3)
    subsets = set()
    for step in range(200):
        a, b = masks(layer, step)
        assert not a[3] and b[3]
        rest_a, rest_b = np.delete(a, 3), np.delete(b, 3)
        if pattern == "none":
            assert not rest_a.any() and not rest_b.any()
            continue
        assert rest_a.sum() == 2
        assert (rest_a ^ rest_b).all() if pattern == "rfm" else rest_b.sum() == 2
        subsets.add(tuple(rest_a))
    if pattern != "none":
        assert len(subsets) == 10  # every 2-subset of the other 5
    # The default mask size: k // 2 of the k - 1 other features.
    assert augment.FeatureMasker(8, pattern, cold_start_feature=0).mask_size == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pattern": "xfm"}, "pattern must be one of"),
        (
            {"pattern": "fm", "fixed_features": [1], "cold_start_feature": 0},
            "cold_start_feature does not apply to pattern 'fm'",
        ),
        ({"pattern": "rfm", "cold_start_feature": 6}, r"cold_start_feature must be in \[0, 5\]"),
        (
            {"pattern": "rfm", "mask_size": 5, "cold_start_feature": 0},
            r"mask_size must be in \[1, 4\] for 5 masked features",
        ),
        ({"pattern": "cfm"}, "mutual_info is required"),
        ({"pattern": "cfm", "mutual_info": [[1.0]]}, r"mutual_info must be \[6, 6\]"),
        ({"pattern": "rfm", "mask_size": 6}, r"mask_size must be in \[1, 5\]"),
        ({"pattern": "fm", "fixed_features": []}, "fixed_features must be a non-empty proper"),
        ({"pattern": "fm", "fixed_features": list(range(6))}, "fixed_features must be"),
    ],
)
def test_masker_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment.FeatureMasker(6, **kwargs)


def test_feature_dropout_rate_and_determinism():
    layer = augment.FeatureDropout(5, 0.3, seed=2)
    dropped = layer(4000, tf.constant(9, tf.int64)).numpy()
    assert dropped.shape == (4000, 5)
    assert abs(dropped.mean() - 0.3) < 0.02
    again = layer(4000, tf.constant(9, tf.int64)).numpy()
    other_view = layer(4000, tf.constant(9, tf.int64), salt=1).numpy()
    assert (dropped == again).all() and (dropped != other_view).any()


def test_value_dropout_keeps_structure_and_rate():
    values = tf.ragged.constant([["a", "b", "c"], [], ["d"], ["e", "f"]] * 500)
    layer = augment.ValueDropout(0.4, seed=5)
    out = layer(values, tf.constant(3, tf.int64))
    assert out.nrows() == values.nrows()
    assert (out.row_lengths().numpy() <= values.row_lengths().numpy()).all()
    kept = out.flat_values.shape[0] / values.flat_values.shape[0]
    assert abs(kept - 0.6) < 0.03
    # Kept values stay in their rows and order.
    for got, full in zip(out.to_list()[:40], values.to_list()[:40], strict=True):
        assert got == [v for v in full if v in got]
    same = layer(values, tf.constant(3, tf.int64))
    assert out.to_list() == same.to_list()
    assert out.to_list() != layer(values, tf.constant(3, tf.int64), salt=1).to_list()
    assert augment.ValueDropout(0.0)(values, 0) is values
    ids = tf.ragged.constant([[1, 2, 3], [4]], dtype=tf.int64)
    assert layer(ids, tf.constant(1, tf.int64)).dtype == tf.int64


@pytest.mark.parametrize(
    "layer",
    [
        augment.FeatureMasker(6, "cfm", mutual_info=MI.tolist(), mask_size=2, seed=4),
        augment.FeatureMasker(4, "fm", fixed_features=[1], seed=4),
        augment.FeatureMasker(6, "cfm", mutual_info=MI.tolist(), seed=4, cold_start_feature=2),
        augment.FeatureMasker(5, "rfm_no_compl", mask_size=1, seed=4, cold_start_feature=4),
        augment.FeatureDropout(3, 0.2, seed=8),
        augment.ValueDropout(0.25, seed=9),
    ],
)
def test_layers_round_trip_config(layer):
    config = layer.get_config()
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    for key, value in config.items():
        if key not in ("name", "trainable", "dtype"):
            assert getattr(restored, key) == value, key
    step = tf.constant(11, tf.int64)
    if isinstance(layer, augment.FeatureMasker):
        for x, y in zip(layer(step), restored(step), strict=True):
            assert (x.numpy() == y.numpy()).all()
    elif isinstance(layer, augment.FeatureDropout):
        assert (layer(10, step).numpy() == restored(10, step).numpy()).all()
    else:
        values = tf.ragged.constant([["a", "b"], ["c"]])
        assert layer(values, step).to_list() == restored(values, step).to_list()


def test_masking_besides_the_cold_start_feature_needs_two_more_features():
    with pytest.raises(ValueError, match="num_features must be >= 3 to mask besides"):
        augment.FeatureMasker(2, "rfm", mask_size=1, cold_start_feature=0)
    a, b = masks(augment.FeatureMasker(2, "none", cold_start_feature=1), 0)
    assert a.tolist() == [False, False] and b.tolist() == [False, True]


def test_masks_work_inside_tf_function():
    layer = augment.FeatureMasker(6, "cfm", mutual_info=MI.tolist())

    @tf.function
    def draw(step):
        return layer(step)

    a, b = draw(tf.constant(3, tf.int64))
    eager_a, _ = layer(tf.constant(3, tf.int64))
    assert (a.numpy() == eager_a.numpy()).all()
    cold_start = augment.FeatureMasker(6, "cfm", mutual_info=MI.tolist(), cold_start_feature=0)
    a, b = tf.function(cold_start)(tf.constant(3, tf.int64))
    assert not a.numpy()[0] and b.numpy()[0]
