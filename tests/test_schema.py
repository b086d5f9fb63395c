"""Tests for the feature schema: validation errors name the feature, round trips are exact."""

import json
import os
import subprocess
import sys

import pytest

from ssl_retrieval import schema as schema_lib

GOOD = {
    "features": [
        {"name": "item_id", "kind": "id"},
        {"name": "section", "kind": "categorical", "max_vocab": 100},
        {"name": "tags", "kind": "multi_hot", "min_count": 2, "embedding_dim": 16},
        {"name": "size", "kind": "dense", "transform": "log"},
    ]
}


def test_valid_schema_round_trips():
    schema = schema_lib.from_json(GOOD)
    assert schema.names == ["item_id", "section", "tags", "size"]
    assert schema.id_feature.name == "item_id"
    assert [f.name for f in schema.sparse_features] == ["item_id", "section", "tags"]
    assert [f.name for f in schema.dense_features] == ["size"]
    assert schema.feature("tags").min_count == 2
    again = schema_lib.from_json(json.loads(schema.dumps()))
    assert again == schema


def test_save_and_load(tmp_path):
    schema = schema_lib.from_json(GOOD)
    path = str(tmp_path / "schema.json")
    schema_lib.save(schema, path)
    assert schema_lib.load(path) == schema
    assert os.listdir(tmp_path) == ["schema.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "features, message",
    [
        ([{"name": "item_id", "kind": "id"}, {"name": "x", "kind": "bag"}], "feature 'x'.*'bag'"),
        (
            [{"name": "item_id", "kind": "id"}, {"name": "item_id", "kind": "categorical"}],
            "'item_id' is defined twice",
        ),
        (
            [{"name": "x", "kind": "categorical"}],
            "exactly one feature must have kind 'id', found 0",
        ),
        (
            [{"name": "a", "kind": "id"}, {"name": "b", "kind": "id"}],
            r"exactly one .* found 2: \['a', 'b'\]",
        ),
        (
            [{"name": "item_id", "kind": "id"}, {"name": "t", "kind": "multi_hot", "max_vocab": 0}],
            "feature 't'.*'max_vocab' must be an integer >= 1",
        ),
        (
            [{"name": "item_id", "kind": "id"}, {"name": "d", "kind": "dense", "max_vocab": 5}],
            "feature 'd'.*does not apply to a dense feature",
        ),
        (
            [{"name": "item_id", "kind": "id"}, {"name": "t", "kind": "categorical", "colour": 1}],
            r"feature 't'.*unknown field\(s\) \['colour'\]",
        ),
        (
            [
                {"name": "item_id", "kind": "id"},
                {"name": "d", "kind": "dense", "transform": "sqrt"},
            ],
            "feature 'd'.*'transform' is 'sqrt'",
        ),
        (
            [{"name": "item_id", "kind": "id"}, {"name": "query_x", "kind": "categorical"}],
            "feature 'query_x'.*clashes",
        ),
        ([{"kind": "id"}], r"features\[0\].*'name'"),
        ([], "'features' is empty"),
    ],
)
def test_invalid_schema_names_the_problem(features, message):
    with pytest.raises(ValueError, match=message):
        schema_lib.from_json({"features": features}, source="my.json")


def test_load_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="nope.json: cannot read"):
        schema_lib.load(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"features": [}')
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON at line 1"):
        schema_lib.load(str(bad))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"features": [{"name": "x", "kind": "nope"}]}))
    with pytest.raises(ValueError, match=r"wrong.json: feature 'x'"):
        schema_lib.load(str(wrong))


def test_load_from_data_dir_rejects_a_dataset_schema(tmp_path):
    schema_lib.save(schema_lib.from_json(GOOD), str(tmp_path / "schema.json"))
    with pytest.raises(ValueError, match="no 'vocab_file'.*pipelines.preprocess"):
        schema_lib.load_from_data_dir(str(tmp_path))


def test_package_selects_keras_2_before_tensorflow_is_imported():
    code = (
        "import ssl_retrieval.compat as c; print(c.tf.keras.layers.Layer.__module__.split('.')[0])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "tf_keras"


def test_keras_3_active_gives_a_clear_error():
    # TensorFlow imported first with Keras 3 selected: compat must explain, not crash later.
    code = "import os; os.environ['TF_USE_LEGACY_KERAS']='0'; import tensorflow; import ssl_retrieval.compat"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "needs Keras 2 (tf-keras)" in out.stderr
