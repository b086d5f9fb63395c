"""The MovieLens source, offline under tfds.testing.mock_data with ratings we control."""

import json
import os

import pytest

from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.sources import movielens

tfds = pytest.importorskip("tensorflow_datasets")

# (user, movie, title, genres, timestamp)
RATINGS = [
    ("u1", "10", "Toy Story (1995)", [3, 4], 300),
    ("u1", "20", "Heat (1995)", [0], 100),
    ("u1", "30", "Casino (1995)", [7], 200),
    ("u2", "20", "Heat (1995)", [0], 50),
    ("u2", "40", "The Matrix", [0, 17], 50),  # same time as movie 20: tie broken by movie id
    ("u2", "10", "Toy Story (1995)", [3, 4], 60),
    ("u3", "30", "Casino (1995)", [7], 10),  # a single rating gives no pair
]


def fake_as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_generator(
        lambda: (
            {
                "user_id": u,
                "movie_id": m,
                "movie_title": t,
                "movie_genres": g,
                "timestamp": ts,
            }
            for u, m, t, g, ts in RATINGS
        ),
        output_signature={
            "user_id": tf.TensorSpec([], tf.string),
            "movie_id": tf.TensorSpec([], tf.string),
            "movie_title": tf.TensorSpec([], tf.string),
            "movie_genres": tf.TensorSpec([None], tf.int64),
            "timestamp": tf.TensorSpec([], tf.int64),
        },
    )


def test_movielens_under_mock_data(tmp_path):
    out = str(tmp_path / "raw")
    with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset):
        summary = movielens.build(out)
    genre_names = tfds.builder("movielens/1m-ratings").info.features["movie_genres"].feature.names
    items = {}
    with open(os.path.join(out, "items.jsonl")) as f:
        for line in f:
            item = json.loads(line)
            items[item["item_id"]] = item
    assert items["10"] == {
        "item_id": "10",
        "genres": [genre_names[3], genre_names[4]],
        "title": ["toy", "story"],
        "year": "1995",
    }
    assert "year" not in items["40"] and items["40"]["title"] == ["the", "matrix"]
    with open(os.path.join(out, "pairs.jsonl")) as f:
        pairs = [(p["query_id"], p["candidate_id"]) for p in map(json.loads, f)]
    # u1 in time order: 20 (100), 30 (200), 10 (300); u2: 20 and 40 tie at 50 -> 20 first, then 10.
    assert pairs == [("20", "30"), ("30", "10"), ("20", "40"), ("40", "10")]
    assert summary == {
        "source": "movielens",
        "variant": "1m-ratings",
        "ratings": 7,
        "users": 3,
        "items": 4,
        "pairs": 4,
    }
    assert schema_lib.load(os.path.join(out, "schema.json")).id_feature.name == "item_id"


def test_movielens_as_parquet(tmp_path, read_raw):
    with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset):
        movielens.build(str(tmp_path / "jsonl"))
        movielens.build(str(tmp_path / "parquet"), file_format="parquet")
    items, pairs = read_raw(str(tmp_path / "parquet"))
    assert (items, pairs) == read_raw(str(tmp_path / "jsonl"))
    assert len(items) == 4 and [p[:2] for p in pairs][0] == ("20", "30")


def test_parse_title():
    assert movielens.parse_title("Se7en (1995)") == (["se7en"], "1995")
    assert movielens.parse_title("City of God (Cidade de Deus) (2002)") == (
        ["city", "of", "god", "cidade", "de", "deus"],
        "2002",
    )


def test_unknown_variant(tmp_path):
    with pytest.raises(ValueError, match="--variant='2m' is not one of"):
        movielens.build(str(tmp_path / "x"), variant="2m")
