"""The SSL methods on the recipe's towers, and the cold-start view (issue 32, items 1 and 2).

The recipe (the package defaults): one shared tower, ids only for items in >= 2 training pairs,
id dropout 0.2, Adam (or lazy Adam), the blend chosen on validation. Every method with an
auxiliary loss trains on it, reaches the shared tower through its SSL batch, and checkpoints,
restores, resumes and exports; `--ssl_id_view=cold_start` is checked against numpy.
"""

import dataclasses
import re
from unittest import mock

import numpy as np
import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval import data as data_lib
from ssl_retrieval import methods, testing
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.model import two_tower as model_lib
from ssl_retrieval.ranking.config import BlendConfig
from ssl_retrieval.training import trainer

TINY = dict(batch_size=32, hidden_layers=(32, 16), embedding_dim=8, fm_hidden_layers=(16,))
# Every method with a part beyond the towers, and the cold-start view on each masking pattern.
COMBINATIONS = [
    *[dict(method=m) for m in methods.NAMES if m != "baseline"],
    *[
        dict(method=m, ssl_id_view="cold_start")
        for m in ("cfm", "rfm", "rfm_no_compl", "cfm_no_dropout", "no_masking")
    ],
]

# The methods with an auxiliary loss, and the cold-start view once (the same towers as cfm's).
SSL_COMBINATIONS = [
    *[dict(method=m.name) for m in methods.METHODS.values() if m.has_auxiliary_loss],
    dict(method="cfm", ssl_id_view="cold_start"),
]


def combination_id(options) -> str:
    return "+".join(f"{v}" for v in options.values())


def recipe_config(data_dir, model_dir, **options) -> config_lib.TrainConfig:
    """The recipe's towers (the package defaults), tiny, with `options` on top."""
    fm = ("item_id", "brand") if methods.get(options.get("method", "baseline")).fm else ()
    return config_lib.TrainConfig(
        data_dir=str(data_dir), model_dir=str(model_dir), fm_features=fm, **{**TINY, **options}
    )


def test_the_defaults_are_the_recipe_towers():
    config = config_lib.TrainConfig(data_dir="d", model_dir="m")
    assert config.share_towers and config.id_min_count == 2 and config.id_dropout == 0.2
    assert config.optimizer == "adam" and BlendConfig().choose_popularity_prior
    assert config.ssl_id_view == "masked"


@pytest.fixture(scope="module")
def batch(data_dir):
    schema = schema_lib.load_from_data_dir(data_dir)
    return next(iter(data_lib.training_dataset(data_dir, schema, 32, 32, seed=0)))


def train_steps(model, optimizer, batch, steps):
    """`steps` eager training steps on `batch`; -> (total, main, auxiliary) of the last one."""
    model.optimizer = optimizer
    for _ in range(steps):
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=True)
        grads = tape.gradient(losses[0], model.trainable_variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, model.trainable_variables, strict=True) if g is not None]
        )
    return [float(x) for x in losses]


@pytest.mark.parametrize("optimizer", ["adam", "lazy_adam"])
@pytest.mark.parametrize("options", COMBINATIONS, ids=combination_id)
def test_each_method_trains_on_the_recipe_towers_and_its_checkpoint_restores(
    data_dir, tmp_path, batch, options, optimizer
):
    config = recipe_config(data_dir, tmp_path, optimizer=optimizer, **options).validate(
        schema_lib.load_from_data_dir(data_dir).names
    )
    parts = methods.get(config.method)

    def fresh():
        tf.keras.utils.set_random_seed(0)
        return model_lib.build_model(config), trainer.make_optimizer(config)

    model, opt = fresh()
    total, main, auxiliary = train_steps(model, opt, batch, 2)
    assert np.isfinite([total, main, auxiliary]).all()
    if parts.has_auxiliary_loss:
        assert auxiliary > 0 and total == pytest.approx(main + config.alpha * auxiliary, rel=1e-5)
    else:
        assert auxiliary == 0
    # The whole training state (towers, fm heads, optimizer slots) restores: a restored model
    # takes the same next step as the one that saved it.
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))
    restored, restored_opt = fresh()
    tf.train.Checkpoint(model=restored, optimizer=restored_opt).restore(path)
    assert train_steps(restored, restored_opt, batch, 1) == train_steps(model, opt, batch, 1)
    for a, b in zip(model.trainable_variables, restored.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def auxiliary_gradients(model, batch) -> dict[str, bool]:
    """{part of the model: whether the auxiliary loss alone reaches its weights} (all of them;
    of the encoder, whose default rows only masked or missing values use, some)."""
    _, items = batch
    model.compute_losses(batch, training=True)  # builds every layer
    with tf.GradientTape() as tape:
        loss = model.auxiliary_loss(items, tf.constant(5, tf.int64))
    grads = tape.gradient(loss, model.trainable_variables)
    moved = {
        id(v): g is not None and float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) > 0
        for v, g in zip(model.trainable_variables, grads, strict=True)
    }
    parts = {
        "encoder": model.encoder,
        "query_mlp": model.query_tower.mlp,
        "item_mlp": model.item_tower.mlp,
        "fm_heads": [model.fm_head_a, model.fm_head_b] if model.fm_masker else [],
    }
    out = {}
    for name, layers in parts.items():
        layers = layers if isinstance(layers, list) else [layers]
        variables = [v for layer in layers for v in layer.trainable_variables]
        every = any if name == "encoder" else all
        out[name] = bool(variables) and every(moved[id(v)] for v in variables)
    return out


@pytest.mark.parametrize("share_towers", [True, False])
@pytest.mark.parametrize("options", SSL_COMBINATIONS, ids=combination_id)
def test_the_ssl_batch_trains_the_shared_tower(data_dir, tmp_path, batch, options, share_towers):
    """The uniform corpus items go through the item tower: with --share_towers that is the
    query tower too; with two towers the query tower gets nothing from them (the paper). The
    fm heads sit on the encoder, beside the towers."""
    parts = methods.get(options["method"])
    tf.keras.utils.set_random_seed(0)
    config = recipe_config(data_dir, tmp_path, share_towers=share_towers, **options)
    reached = auxiliary_gradients(model_lib.build_model(config), batch)
    through_towers = parts.masking is not None or parts.fd_ssl or parts.spread_out
    assert reached["encoder"]
    assert reached["item_mlp"] == through_towers
    assert reached["query_mlp"] == (through_towers and share_towers)
    assert reached["fm_heads"] == parts.fm


def spy_masks(model, batch):
    """The feature masks each tower call of one training step got, in call order."""
    seen = []
    call = model_lib.Tower.call

    def spy(tower, features, feature_mask=None, *args, **kwargs):
        seen.append(None if feature_mask is None else tf.convert_to_tensor(feature_mask).numpy())
        return call(tower, features, feature_mask, *args, **kwargs)

    with mock.patch.object(model_lib.Tower, "call", spy):
        model.compute_losses(batch, training=True)
    return seen


@pytest.mark.parametrize("method", ["cfm", "fd", "fd_ssl"])
def test_id_dropout_is_on_the_pairs_and_composes_with_feature_dropout(
    data_dir, tmp_path, batch, method
):
    """Id dropout masks the pairs' ids; fd's feature dropout is OR-ed onto the candidate's
    mask; the SSL views get their augmentation's masks alone (a masking view already drops
    the id in one of the two views, or in B with the cold-start view)."""
    config = recipe_config(data_dir, tmp_path, method=method, id_dropout=0.5)
    model = model_lib.build_model(config)
    query, candidate, *views = spy_masks(model, batch)
    step, rows = tf.constant(0, tf.int64), tf.constant(32)
    id_query = model._id_mask(rows, step, salt=20).numpy()
    id_candidate = model._id_mask(rows, step, salt=21).numpy()
    np.testing.assert_array_equal(query, id_query)
    if method == "fd":
        dropped = model.feature_dropout(rows, step, salt=0).numpy()
        np.testing.assert_array_equal(candidate, id_candidate | dropped)
        assert (candidate != id_candidate).any() and views == []
        return
    np.testing.assert_array_equal(candidate, id_candidate)
    assert len(views) == 2
    if method == "cfm":
        expected = [m.numpy() for m in model.masker(step)]
    else:
        expected = [model.feature_dropout(rows, step, salt=s).numpy() for s in (1, 2)]
    for got, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(got, want)


# The cold-start view on a toy encoder: 5 features of dimension 2, an MLP 6 -> 3.
TOY_FEATURES = [
    # "d" is not in the id vocabulary: the recipe's item without training pairs (default row).
    {"name": "item_id", "kind": "id", "vocabulary": ["a", "b", "c"], "oov_as_missing": True},
    {"name": "brand", "kind": "categorical", "vocabulary": ["x", "y"]},
    {"name": "tags", "kind": "multi_hot", "vocabulary": ["t", "u", "v"]},
    {"name": "shop", "kind": "categorical", "vocabulary": ["p", "q"]},
    {"name": "price", "kind": "dense", "transform": "log", "mean": 1.0, "std": 2.0},
]
for _feature in TOY_FEATURES:
    _feature.update(
        embedding_dim=None, **({} if _feature["kind"] == "dense" else {"oov_buckets": 1})
    )
# Item "a" twice: the SSL loss removes an item's other copies from its negatives.
TOY_ITEMS = {
    "item_id": [["a"], ["b"], ["d"], ["a"], ["c"]],
    "brand": [["x"], [], ["y"], ["x"], ["y"]],
    "tags": [["t", "u"], ["v"], [], ["t", "u"], ["u"]],
    "shop": [["p"], ["q"], ["q"], ["p"], ["p"]],
    "price": [3.0, float("nan"), 0.5, 3.0, 10.0],
}
TOY_MI = np.array(
    [
        [4.0, 1.0, 1.0, 1.0, 1.0],
        [1.0, 2.0, 1.5, 0.2, 0.1],
        [1.0, 1.5, 2.0, 0.3, 0.2],
        [1.0, 0.2, 0.3, 1.0, 0.9],
        [1.0, 0.1, 0.2, 0.9, 1.0],
    ]
)


def toy_model(method, ssl_id_view):
    config = config_lib.TrainConfig(
        data_dir="unused",
        model_dir="unused",
        method=method,
        ssl_id_view=ssl_id_view,
        embedding_dim=2,
        hidden_layers=(6, 3),
        ssl_temperature=0.5,
        dropout_rate=0.0,  # no value dropout: the views are the masks alone
        seed=3,
    )
    tf.keras.utils.set_random_seed(1)
    return model_lib.SSLRetrievalModel(config, TOY_FEATURES, mutual_info=TOY_MI.tolist())


def toy_items():
    return {
        name: tf.constant(values, tf.float32) if name == "price" else tf.ragged.constant(values)
        for name, values in TOY_ITEMS.items()
    }


def numpy_encoder(model, mask):
    """The encoder by hand: [items, 10], a masked or missing feature -> its default row."""
    tables = {n: t.numpy() for n, t in model.encoder._tables.items()}
    defaults = {n: d.numpy() for n, d in model.encoder._defaults.items()}
    rows = []
    for i in range(len(TOY_ITEMS["item_id"])):
        row = []
        for j, f in enumerate(TOY_FEATURES):
            name, value = f["name"], TOY_ITEMS[f["name"]][i]
            if f["kind"] == "dense":
                vector = None
                if not np.isnan(value):
                    vector = (np.log1p(value) - f["mean"]) / f["std"] * tables[name][0]
            else:
                known = [f["vocabulary"].index(v) + 1 for v in value if v in f["vocabulary"]]
                vector = tables[name][known].mean(axis=0) if known else None
            row.append(defaults[name] if mask[j] or vector is None else vector)
        rows.append(np.concatenate(row))
    return np.array(rows)


def numpy_tower(model, x):
    hidden, output = model.query_tower.mlp._dense
    h = np.maximum(x @ hidden.kernel.numpy() + hidden.bias.numpy(), 0.0)
    z = h @ output.kernel.numpy() + output.bias.numpy()
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def numpy_contrastive(z_a, z_b, ids, temperature):
    """Eq. 3: softmax of view A's row over view B's rows, other copies of an item removed."""
    logits = z_a @ z_b.T / temperature
    same = np.array([[p == q for q in ids] for p in ids])
    np.fill_diagonal(same, False)
    logits = np.where(same, -1e9, logits)
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.diag(log_softmax).mean()


@pytest.mark.parametrize("method", ["cfm_no_dropout", "rfm", "rfm_no_compl", "no_masking"])
def test_cold_start_view_loss_matches_numpy(method):
    model = toy_model(method, "cold_start")
    items = toy_items()
    ids = [v[0] for v in TOY_ITEMS["item_id"]]
    flipped_differs = False
    for step in range(10):
        got = float(model.auxiliary_loss(items, tf.constant(step, tf.int64)))
        mask_a, mask_b = (m.numpy() for m in model.masker(tf.constant(step, tf.int64)))
        # View A keeps the id, view B drops it; the pattern masks the other four features.
        assert not mask_a[0] and mask_b[0]
        if method in ("cfm_no_dropout", "rfm"):
            assert (mask_a[1:] == ~mask_b[1:]).all()
        if method == "no_masking":
            assert not mask_a[1:].any() and not mask_b[1:].any()
        z_a = numpy_tower(model, numpy_encoder(model, mask_a))
        z_b = numpy_tower(model, numpy_encoder(model, mask_b))
        expected = numpy_contrastive(z_a, z_b, ids, 0.5)
        assert got == pytest.approx(expected, rel=1e-5)
        # The id's view matters: the same masks with the id in B instead of A give another loss.
        swapped_a, swapped_b = mask_a.copy(), mask_b.copy()
        swapped_a[0], swapped_b[0] = True, False
        flipped = numpy_contrastive(
            numpy_tower(model, numpy_encoder(model, swapped_a)),
            numpy_tower(model, numpy_encoder(model, swapped_b)),
            ids,
            0.5,
        )
        flipped_differs |= abs(flipped - expected) > 1e-4
    assert flipped_differs


def checkpoint_values(model_dir) -> dict:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(f"{model_dir}/checkpoints"))
    names = [n for n in reader.get_variable_to_dtype_map() if "VARIABLE_VALUE" in n]
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.slow
def test_the_recipe_with_the_cold_start_view_resumes_blends_evaluates_and_exports(tmp_path):
    from ssl_retrieval.evaluation import evaluator
    from ssl_retrieval.ranking import blend as blend_lib
    from ssl_retrieval.serving import exporter

    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.1)
    options = dict(
        method="cfm", ssl_id_view="cold_start", validate_every=5, patience=0, checkpoint_every=5
    )
    # The blend is chosen once, at the end (the weights do not depend on it).
    unblended = BlendConfig(choose_popularity_prior=False)
    straight = recipe_config(data_dir, tmp_path / "straight", train_steps=10, **options)
    trainer.run(straight, unblended)
    halfway = recipe_config(data_dir, tmp_path / "resumed", train_steps=5, **options)
    trainer.run(halfway, unblended)
    summary = trainer.run(dataclasses.replace(halfway, train_steps=10), BlendConfig())
    assert summary["resumed_from_step"] == 5 and summary["steps"] == 10
    assert summary["final_auxiliary_loss"] > 0 and summary["distinct_mask_patterns"] >= 2
    # Stateless augmentations and a restored optimizer: the resumed run is the straight one.
    expected, got = checkpoint_values(straight.model_dir), checkpoint_values(halfway.model_dir)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert config_lib.load(halfway.model_dir).ssl_id_view == "cold_start"
    assert blend_lib.load(halfway.model_dir) == blend_lib.Blends.from_json(summary["blends"])
    metrics = evaluator.run(data_dir, model_dir=halfway.model_dir)["metrics"]
    assert 0 < metrics["all"]["recall@50"] <= 1
    info = exporter.run(
        exporter.ExportConfig(
            data_dir=None, model_dir=halfway.model_dir, export_dir=str(tmp_path / "export"), k=10
        )
    )
    assert info["method"] == "cfm"


NO_MASKING_METHODS = [m.name for m in methods.METHODS.values() if m.masking is None]


@pytest.mark.parametrize("method", NO_MASKING_METHODS)
def test_the_cold_start_view_needs_a_masking_method(method):
    fm = ("brand",) if methods.get(method).fm else ()
    config = config_lib.TrainConfig(
        data_dir="d", model_dir="m", method=method, ssl_id_view="cold_start", fm_features=fm
    )
    expected = (
        r"--ssl_id_view=cold_start needs a masking method \(--method=cfm\|rfm\|rfm_no_compl\|"
        rf"cfm_no_dropout\|no_masking\), got --method={re.escape(method)}$"
    )
    with pytest.raises(ValueError, match=expected):
        config.validate()
    dataclasses.replace(config, ssl_id_view="masked").validate()


@pytest.mark.parametrize(
    "options, names, message",
    [
        (dict(ssl_id_view="both"), None, "--ssl_id_view must be one of"),
        (dict(mask_size=4), 5, r"--mask_size must be < the number of features besides the id \(4"),
        (dict(method="rfm"), 2, "needs 2 of them, the data has 1"),
    ],
)
def test_cold_start_flags_are_checked_against_the_data(options, names, message):
    config = config_lib.TrainConfig(
        data_dir="d", model_dir="m", **{"method": "cfm", "ssl_id_view": "cold_start", **options}
    )
    feature_names = None if names is None else [f"f{i}" for i in range(names)]
    with pytest.raises(ValueError, match=message):
        config.validate(feature_names)
    if "mask_size" in options:  # one fewer is fine, and so is the same size without the view
        dataclasses.replace(config, mask_size=3).validate(feature_names)
        dataclasses.replace(config, ssl_id_view="masked").validate(feature_names)
    if names == 2:  # no masking pattern: the id alone against the features
        dataclasses.replace(config, method="no_masking").validate(feature_names)


def test_the_cold_start_flag_keeps_recorded_runs_valid():
    """Declared neutral: a record's key leaves it out while it is "masked" (experimentation/
    keys.py), and methods without masking never read it."""
    from ssl_retrieval.experimentation import keys

    field = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}["ssl_id_view"]
    assert field.default == field.metadata["neutral"] == "masked"
    command = ["-m", "ssl_retrieval.train", "--method=cfm", "--data_dir=d", "--model_dir=m"]
    key = keys.run_key(command, "fingerprint", 10_000)
    assert "ssl_id_view" not in key.fields
    assert keys.run_key(command + ["--ssl_id_view=masked"], "fingerprint", 10_000) == key
    assert keys.run_key(command + ["--ssl_id_view=cold_start"], "fingerprint", 10_000) != key
    for method in NO_MASKING_METHODS:
        assert "ssl_id_view" in methods.get(method).unread_fields
    assert "ssl_id_view" not in methods.get("rfm").unread_fields


def test_train_refuses_the_cold_start_view_without_masking(data_dir, tmp_path):
    out = testing.run_command(
        "ssl_retrieval.train",
        f"--data_dir={data_dir}",
        f"--model_dir={tmp_path}/m",
        "--method=fd_ssl",
        "--ssl_id_view=cold_start",
        timeout=120,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "error: --ssl_id_view=cold_start needs a masking method" in out.stderr
    assert "got --method=fd_ssl" in out.stderr
