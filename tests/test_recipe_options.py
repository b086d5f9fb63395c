"""The training recipe's options beyond the paper: each against a numpy reference or a property.

Mixed negatives and the tempered logQ correction (loss), normalised MI for CFM (augment), ids
without an embedding of their own and id dropout (encoder), the symmetric loss (model).
"""

import json
import os

import numpy as np
import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval import data as data_lib
from ssl_retrieval import testing
from ssl_retrieval.compat import tf
from ssl_retrieval.model import augment, losses
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.training import trainer

TINY = dict(batch_size=32, hidden_layers=(32, 16), embedding_dim=8)


def normalise(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_mixed(q, c, extra, t, ids, extra_ids, counts, extra_counts):
    """In-batch + extra negatives, logQ by expected counts, accidental hits removed, in numpy."""
    columns = np.concatenate([normalise(c), normalise(extra)])
    all_ids = np.concatenate([ids, extra_ids])
    logits = normalise(q) @ columns.T / t - np.log(np.concatenate([counts, extra_counts]))[None]
    b = len(q)
    same = ids[:, None] == all_ids[None, :]
    same[np.arange(b), np.arange(b)] = False
    logits = np.where(same, -1e9, logits)
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(b), np.arange(b)].mean()


def test_mixed_negatives_match_numpy():
    rng = np.random.default_rng(0)
    q, c, extra = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    ids = np.array([b"a", b"b", b"c", b"d", b"e", b"f"])
    extra_ids = np.array([b"x", b"b", b"y", b"a", b"z"])  # two accidental hits
    counts, extra_counts = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 5)
    got = losses.ContrastiveSoftmax(0.1)(
        tf.constant(q, tf.float32),
        tf.constant(c, tf.float32),
        candidate_ids=tf.constant(ids),
        candidate_sampling_probability=tf.constant(counts, tf.float32),
        extra_embeddings=tf.constant(extra, tf.float32),
        extra_ids=tf.constant(extra_ids),
        extra_sampling_probability=tf.constant(extra_counts, tf.float32),
    )
    expected = reference_mixed(q, c, extra, 0.1, ids, extra_ids, counts, extra_counts)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    without = reference_mixed(q, c, extra[:0], 0.1, ids, extra_ids[:0], counts, extra_counts[:0])
    assert abs(without - expected) > 1e-2  # the extra negatives count


def test_mixed_negatives_require_matching_ids_and_probabilities():
    q = tf.ones([2, 3])
    with pytest.raises(ValueError, match="extra_ids"):
        losses.ContrastiveSoftmax(0.1)(
            q, q, candidate_ids=tf.constant([1, 2]), extra_embeddings=tf.ones([2, 3])
        )


@pytest.mark.parametrize("normalization", ["none", "min", "mean", "sqrt"])
def test_correlation_matrix_matches_formulas(normalization):
    mi = np.array([[2.0, 1.0, 0.5], [1.0, 1.5, 0.0], [0.5, 0.0, 0.0]])
    h = np.diag(mi)
    got = augment.correlation_matrix(mi, h, normalization)
    for i in range(3):
        for j in range(3):
            denominator = {
                "none": 1.0,
                "min": min(h[i], h[j]),
                "mean": (h[i] + h[j]) / 2,
                "sqrt": np.sqrt(h[i] * h[j]),
            }[normalization]
            expected = mi[i, j] / denominator if denominator > 0 else 0.0
            assert got[i, j] == pytest.approx(expected)


def test_unranked_id_and_normalised_mi_vary_cfm_masks():
    # An id feature (0) whose raw MI with each feature is that feature's entropy, the maximum:
    # raw MI makes it every seed's first correlate, so masks collapse onto sets holding it.
    h = np.array([5.0, 2.0, 1.9, 1.8, 1.7, 1.6])
    mi = np.full((6, 6), 0.1)
    mi[0, :] = mi[:, 0] = h
    mi[1, 2] = mi[2, 1] = 1.5
    mi[3, 4] = mi[4, 3] = 1.4
    np.fill_diagonal(mi, h)
    raw = augment.FeatureMasker(6, "cfm", mutual_info=mi, mask_size=2, seed=0)
    assert all(raw._masked_by_seed.numpy()[f][0] for f in range(6))  # id masked with every seed
    fixed = augment.FeatureMasker(
        6,
        "cfm",
        mutual_info=augment.correlation_matrix(mi, h, "min"),
        mask_size=2,
        seed=0,
        unranked_features=[0],
    )
    rows = fixed._masked_by_seed.numpy()
    assert not any(rows[f][0] for f in range(1, 6))  # the id is never a correlate
    assert rows[1][2] and rows[2][1] and rows[3][4] and rows[4][3]  # real correlates are
    # Raw MI: the id is masked in view A at every step, with five sets {f, id}.
    assert raw.distinct_patterns(200) == 5
    id_masked = [bool(raw(step)[0].numpy()[0]) for step in range(60)]
    assert all(id_masked)
    # Fixed: the id is masked only when it is the seed (about 1 step in 6).
    id_masked = np.mean([bool(fixed(step)[0].numpy()[0]) for step in range(300)])
    assert 0.05 < id_masked < 0.3
    assert fixed.get_config()["unranked_features"] == [0]


def test_ids_below_min_count_use_the_default_embedding(data_dir, tmp_path):
    counts = data_lib.train_item_counts(data_dir, data_lib.schema_lib.load_from_data_dir(data_dir))
    config = config_lib.TrainConfig(
        data_dir=data_dir, model_dir=str(tmp_path), id_min_count=20, **TINY
    )
    model = model_lib.build_model(config)
    id_config = model.encoder.features[model.id_index]
    kept = set(id_config["vocabulary"])
    assert kept == {i for i, n in counts.items() if n >= 20}
    assert 0 < len(kept) < len(counts)
    rare = next(i for i, n in counts.items() if n < 20)
    frequent = next(iter(kept))
    features = {
        "item_id": tf.ragged.constant([[rare], [frequent]]),
        "brand": tf.ragged.constant([["brand1"], ["brand1"]]),
        "category": tf.ragged.constant([["cat0"], ["cat0"]]),
        "tags": tf.ragged.constant([["tag1_0"], ["tag1_0"]]),
        "price": tf.constant([1.0, 1.0]),
    }
    encoded = model.encoder(features).numpy()
    start = sum(model.encoder.dims[: model.id_index])
    id_part = encoded[:, start : start + model.encoder.dims[model.id_index]]
    default = model.encoder._defaults["item_id"].numpy()
    np.testing.assert_allclose(id_part[0], default)  # rare id: the default
    assert not np.allclose(id_part[1], default)  # kept id: its own row
    np.testing.assert_allclose(encoded[0, id_part.shape[1] :], encoded[1, id_part.shape[1] :])


def test_id_dropout_masks_only_the_id_column(data_dir, tmp_path):
    config = config_lib.TrainConfig(
        data_dir=data_dir, model_dir=str(tmp_path), id_dropout=0.5, **TINY
    )
    model = model_lib.build_model(config)
    mask = model._id_mask(tf.constant(2000), tf.constant(3, tf.int64), salt=20).numpy()
    assert mask.shape == (2000, model.encoder.num_features)
    others = np.delete(mask, model.id_index, axis=1)
    assert not others.any()
    assert mask[:, model.id_index].mean() == pytest.approx(0.5, abs=0.05)


def test_symmetric_loss_with_shared_towers_is_the_mean_of_both_directions(data_dir, tmp_path):
    batch = next(
        iter(
            data_lib.training_dataset(
                data_dir, data_lib.schema_lib.load_from_data_dir(data_dir), 16, 8, seed=0
            )
        )
    )
    common = dict(data_dir=data_dir, model_dir=str(tmp_path), share_towers=True, **TINY)
    tf.keras.utils.set_random_seed(0)
    symmetric = model_lib.build_model(config_lib.TrainConfig(symmetric_loss=True, **common))
    _, main, _ = symmetric.compute_losses(batch)
    pairs, items = batch
    forward = symmetric.task(
        symmetric.query_tower(pairs["query"]),
        symmetric.item_tower(pairs["candidate"]),
        candidate_ids=pairs["candidate"]["item_id"].flat_values,
    )
    backward = symmetric.task(
        symmetric.query_tower(pairs["candidate"]),
        symmetric.item_tower(pairs["query"]),
        candidate_ids=pairs["query"]["item_id"].flat_values,
    )
    assert float(main) == pytest.approx((float(forward) + float(backward)) / 2, rel=1e-5)
    assert abs(float(forward) - float(backward)) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        dict(mixed_negatives=True),
        dict(mixed_negatives=True, sampling_correction=True, correction_strength=0.5),
        dict(share_towers=True, symmetric_loss=True, id_min_count=3, id_dropout=0.3),
        dict(symmetric_loss=True, method="cfm", mi_normalization="min", cfm_exclude_id=True),
    ],
)
def test_recipe_options_train(data_dir, tmp_path, options):
    config = config_lib.TrainConfig(
        data_dir=data_dir, model_dir=str(tmp_path), train_steps=4, **{**TINY, **options}
    )
    summary = trainer.run(config)
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    if options.get("method") == "cfm":
        assert summary["distinct_mask_patterns"] >= 2


@pytest.mark.slow
def test_validation_keeps_the_best_weights_and_stops_early(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.1)
    config = config_lib.TrainConfig(
        data_dir=data_dir,
        model_dir=str(tmp_path / "model"),
        train_steps=400,
        validate_every=10,
        max_validations_per_epoch=0,  # tiny data: validate every 10 steps, uncapped
        patience=2,
        learning_rate=0.5,
        **TINY,
    )
    summary = trainer.run(config)
    history = trainer._read_validations(config.model_dir)
    assert [r["step"] for r in history] == list(range(10, 10 * len(history) + 1, 10))
    values = [r["value"] for r in history]
    best = int(np.argmax(values))
    # Stopped exactly `patience` validations after the best one, long before 400 steps.
    assert summary["stopped_early"] and len(values) == best + 1 + 2
    assert summary["steps"] == history[-1]["step"] < 400
    assert summary["best_step"] == history[best]["step"]
    # Evaluation loads the best weights, not the last ones.
    restored = model_lib.load_from_model_dir(config.model_dir)
    validator = trainer.Validator(config)
    assert validator(restored)["all"]["recall@50"] == pytest.approx(values[best], abs=1e-6)
    # The blends were chosen on validation with the best weights, and evaluation uses them by
    # default. The first grid point is plain cosine: the validation metric of the best step.
    from ssl_retrieval.evaluation import blend_choice, evaluator
    from ssl_retrieval.ranking import blend as blend_lib
    from ssl_retrieval.ranking.config import BlendConfig

    choice = json.load(open(f"{config.model_dir}/{blend_lib.FILE}"))
    first = choice["choices"]["50"]["grid"][0]
    assert (first["popularity_prior"], first["content_weight"], first["prior_share"]) == (0, 0, 1)
    assert first["metrics"]["all"]["recall@50"] == pytest.approx(values[best], abs=1e-6)
    assert choice["objective"] == "references"
    assert set(choice["references"]["50"]) == {"top_popular", "feature_knn", "cooccurrence"}
    for k in choice["blends"]:
        trials = choice["choices"][k]["grid"]
        best_trial = max(trials, key=lambda t: (tuple(t["value"]), *blend_choice._simplicity(t)))
        chosen = {n: choice["blends"][k][n] for n in blend_lib.NAMES}
        assert chosen == {n: best_trial[n] for n in blend_lib.NAMES}
        assert bool(choice["blends"][k]["fusion"]) == best_trial["fused"]
    assert choice["blends"] == summary["blends"]
    assert blend_lib.load(config.model_dir) == blend_lib.Blends.from_json(choice["blends"])
    beta = choice["blends"]["50"]["popularity_prior"]
    assert evaluator.resolve_popularity_prior(config.model_dir, "auto") == beta
    assert evaluator.resolve_popularity_prior(config.model_dir, "0") == 0.0
    with pytest.raises(ValueError, match="popularity_prior"):
        evaluator.resolve_popularity_prior(config.model_dir, "-1")
    assert choice["options"] == BlendConfig().options()
    assert any(t["cold_share"] > 0 for t in choice["choices"]["50"]["grid"])
    # The same options again: nothing to do, the blend is not touched.
    path = f"{config.model_dir}/{blend_lib.FILE}"
    modified = os.path.getmtime(path)
    assert trainer.run(config)["already_finished"]
    assert os.path.getmtime(path) == modified


def test_popularity_prior_adds_beta_log_counts_to_the_cosine(tmp_path):
    from ssl_retrieval.ranking import popularity

    data_dir = testing.make_data_dir(str(tmp_path / "data"))
    ids = ["item00000", "item00001", "never-seen"]
    prior = popularity.log_counts(data_dir, ids)
    counts = {}
    for line in open(f"{data_dir}/stats/candidate_counts.tsv"):
        item_id, count = line.split("\t")
        counts[item_id] = int(count)
    np.testing.assert_allclose(prior, np.log1p([counts.get(i, 0) for i in ids]), rtol=1e-6)
    rng = np.random.default_rng(0)
    q, items = normalise(rng.normal(size=(4, 5))), normalise(rng.normal(size=(3, 5)))
    qa, ia = popularity.augment(q.astype(np.float32), items.astype(np.float32), prior, 0.07)
    np.testing.assert_allclose(qa @ ia.T, q @ items.T + 0.07 * prior[None, :], rtol=1e-5)
