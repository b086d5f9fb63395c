"""The input layer, towers and input pipeline on a tiny data dir."""

import numpy as np
import pytest

from ssl_retrieval import data, testing
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.model import augment
from ssl_retrieval.model import two_tower as model


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return testing.make_data_dir(str(tmp_path_factory.mktemp("data")), num_items=120, num_pairs=800)


@pytest.fixture(scope="module")
def batch(data_dir):
    return next(iter(data.items_dataset(data_dir, 16)))


def encoder_for(data_dir, dim=4):
    schema = schema_lib.load_from_data_dir(data_dir)
    return model.FeatureEncoder(model.feature_configs(schema, data_dir), dim)


def blocks(x, dim, k):
    return [x[:, i * dim : (i + 1) * dim] for i in range(k)]


def test_masking_substitutes_the_default_embedding(data_dir, batch):
    encoder = encoder_for(data_dir)
    k = encoder.num_features
    plain = blocks(encoder(batch).numpy(), 4, k)
    mask = np.zeros(k, bool)
    mask[1] = True
    masked = blocks(encoder(batch, feature_mask=mask).numpy(), 4, k)
    default = encoder._defaults[encoder.names[1]].numpy()
    np.testing.assert_allclose(masked[1], np.tile(default, (16, 1)))
    for i in range(k):
        if i != 1:
            np.testing.assert_allclose(masked[i], plain[i])
    assert not np.allclose(plain[1], masked[1])
    # Per-example masks [B, k]: only row 0 of feature 0 is replaced.
    per_example = np.zeros((16, k), bool)
    per_example[0, 0] = True
    out = blocks(encoder(batch, feature_mask=per_example).numpy(), 4, k)
    np.testing.assert_allclose(out[0][0], encoder._defaults[encoder.names[0]].numpy())
    np.testing.assert_allclose(out[0][1:], plain[0][1:])


def test_missing_values_use_the_default_and_values_are_mean_pooled(data_dir):
    encoder = encoder_for(data_dir)
    features = {
        "item_id": tf.ragged.constant([["item00000"], ["item00001"]]),
        "brand": tf.ragged.constant([["brand0"], []]),
        "category": tf.ragged.constant([["cat0"], ["cat0"]]),
        "tags": tf.ragged.constant([["tag0_0", "tag0_1"], []]),
        "price": tf.constant([2.0, float("nan")]),
    }
    out = blocks(encoder(features).numpy(), 4, 5)
    names = encoder.names
    np.testing.assert_allclose(out[names.index("brand")][1], encoder._defaults["brand"].numpy())
    np.testing.assert_allclose(out[names.index("tags")][1], encoder._defaults["tags"].numpy())
    np.testing.assert_allclose(out[names.index("price")][1], encoder._defaults["price"].numpy())
    ids = encoder.lookup("tags", tf.ragged.constant([["tag0_0", "tag0_1"]])).flat_values.numpy()
    table = encoder._tables["tags"].numpy()
    np.testing.assert_allclose(out[names.index("tags")][0], table[ids].mean(axis=0), rtol=1e-6)
    unknown = encoder.lookup("brand", tf.ragged.constant([["never-seen"]])).flat_values.numpy()
    assert unknown.tolist() == [0]  # the OOV bucket comes first


def test_value_dropout_changes_multi_hot_only(data_dir, batch):
    encoder = encoder_for(data_dir)
    k = encoder.num_features
    plain = blocks(encoder(batch).numpy(), 4, k)
    dropout = augment.ValueDropout(0.9, seed=1)
    dropped = blocks(encoder(batch, value_dropout=dropout, step=3).numpy(), 4, k)
    tags = encoder.names.index("tags")
    assert not np.allclose(plain[tags], dropped[tags])
    for i in range(k):
        if i != tags:
            np.testing.assert_allclose(plain[i], dropped[i])


def test_layers_round_trip_config(data_dir, batch):
    encoder = encoder_for(data_dir)
    mlp = model.MLP([8, 3])
    out = mlp(encoder(batch))
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, rtol=1e-5)
    for layer in (encoder, mlp):
        config = layer.get_config()
        restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(restored) is type(layer)
        assert restored.get_config() == config
    restored_encoder = model.FeatureEncoder.from_config(encoder.get_config())
    restored_encoder(batch)
    restored_encoder.set_weights(encoder.get_weights())
    np.testing.assert_allclose(restored_encoder(batch).numpy(), encoder(batch).numpy())
    assert restored_encoder.features == encoder.features
    assert restored_encoder.embedding_dim == encoder.embedding_dim
    with pytest.raises(ValueError, match="hidden_layers must be positive"):
        model.MLP([8, 0])


def test_items_dataset_is_the_whole_corpus(data_dir):
    ids = []
    for b in data.items_dataset(data_dir, 50):
        ids += [x[0].decode() for x in b["item_id"].numpy()]
    assert len(ids) == 120 and len(set(ids)) == 120


def first_ids(ds, n):
    out = []
    for pairs, items in ds.take(n):
        out.append(
            (
                pairs["candidate"]["item_id"].flat_values.numpy().tolist(),
                items["item_id"].flat_values.numpy().tolist(),
            )
        )
    return out


def test_training_stream_is_deterministic_and_skips_for_resume(data_dir):
    schema = schema_lib.load_from_data_dir(data_dir)

    def stream(seed, skip=0):
        return data.training_dataset(data_dir, schema, 32, 16, seed, skip_batches=skip)

    first = first_ids(stream(4), 6)
    assert first == first_ids(stream(4), 6)
    assert first[3:] == first_ids(stream(4, skip=3), 3)
    assert first != first_ids(stream(5), 6)
    pairs, items = next(iter(stream(4)))
    assert pairs["weight"].shape == [32] and items["item_id"].nrows() == 16


@pytest.mark.parametrize("share_towers", [True, False])
def test_embed_corpus_matches_the_towers_and_embeds_once_when_shared(
    data_dir, tmp_path, share_towers
):
    config = testing.tiny_train_config(data_dir, tmp_path, share_towers=share_towers)
    built = model.build_model(config)
    calls = {"query": 0, "item": 0}

    def counted(tower, name):
        def call(batch):
            calls[name] += 1
            return tower(batch)

        return call

    functions = (counted(built.query_tower, "query"), counted(built.item_tower, "item"))
    queries, items = model.embed_corpus(built, data_dir, batch_size=50, functions=functions)
    corpus = next(iter(data.items_dataset(data_dir, 1000)))
    np.testing.assert_allclose(queries, built.query_tower(corpus).numpy(), atol=1e-5)
    np.testing.assert_allclose(items, built.item_tower(corpus).numpy(), atol=1e-5)
    assert model.towers_are_shared(built) == share_towers
    assert calls == {"query": 3, "item": 0 if share_towers else 3}  # 120 items, batches of 50
    # Validation embeds only its queries with the query tower (two towers), from batches it
    # read once; the other rows are never read.
    rows = np.array([3, 7, 110])
    calls.update(query=0, item=0)
    batches = list(data.items_dataset(data_dir, 50))
    some, same_items = model.embed_corpus(
        built, data_dir, functions=functions, query_rows=rows, batches=batches
    )
    np.testing.assert_allclose(some[rows], queries[rows], atol=1e-6)
    np.testing.assert_array_equal(same_items, items)
    if not share_towers:
        assert not np.delete(some, rows, axis=0).any()
        assert calls == {"query": 2, "item": 3}  # no query in the batch of items 50-99


def test_train_item_counts_match_a_python_count(data_dir):
    from collections import Counter

    schema = schema_lib.load_from_data_dir(data_dir)
    spec = {
        f"{side}_item_id": tf.io.FixedLenFeature([], tf.string) for side in ("query", "candidate")
    }
    expected = Counter()
    for path in data.files(data_dir, schema, "train"):
        for record in tf.data.TFRecordDataset(path):
            parsed = tf.io.parse_single_example(record, spec)
            expected.update(parsed[key].numpy().decode() for key in spec)
    counts = data.train_item_counts(data_dir, schema)
    assert counts == dict(expected) and sum(counts.values()) > 0


@pytest.mark.parametrize("method", ["baseline", "rfm", "so", "cfm"])
def test_flags_a_method_does_not_read_do_not_change_its_losses(data_dir, tmp_path, method):
    """What lets the ledger keep a method's records when one of these defaults changes."""
    from ssl_retrieval import methods

    other = {
        "mi_normalization": "sqrt",
        "cfm_exclude_id": True,
        "so_loss": "square",
        "fm_hidden_layers": (7,),
        "ssl_id_view": "cold_start",
    }
    unread = {k: v for k, v in other.items() if k in methods.get(method).unread_fields}
    assert unread  # every method here lacks some part
    schema = schema_lib.load_from_data_dir(data_dir)
    batch = next(iter(data.training_dataset(data_dir, schema, 32, 16, seed=0)))

    def losses(**overrides):
        tf.keras.utils.set_random_seed(0)
        config = testing.tiny_train_config(data_dir, tmp_path, method=method, **overrides)
        return [float(x) for x in model.build_model(config).compute_losses(batch, training=True)]

    assert losses(**unread) == losses()
    if method == "so":  # and the test can fail: a flag it reads changes them
        assert losses(so_loss="square") != losses()
    if method == "cfm":
        assert losses(ssl_id_view="cold_start") != losses()
