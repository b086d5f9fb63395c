"""MovieLens through TensorFlow Datasets as an item-to-item (co-watch) dataset.

Items are movies: `item_id`, `genres` (multi-hot), `title` (lower-cased unigrams of the title
without its year) and `year` (categorical, from the "(1995)" suffix). Pairs are co-watches:
for each user, consecutive movies in rating-time order (ties broken by movie id) give one pair
(earlier movie = query, next movie = candidate).

Ratings are grouped by user in memory (one (timestamp, movie) tuple per rating): fine up to
MovieLens 25M on this machine, and documented as the one in-memory step. TFDS downloads the data
on first use, which needs internet; tests run offline under `tfds.testing.mock_data`.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict

from ssl_retrieval.sources import jsonl

FEATURES = [
    {"name": "item_id", "kind": "id"},
    {"name": "genres", "kind": "multi_hot"},
    {"name": "title", "kind": "multi_hot", "min_count": 2},
    {"name": "year", "kind": "categorical"},
]
VARIANTS = ("100k-ratings", "1m-ratings", "20m-ratings", "25m-ratings", "latest-small-ratings")
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")


def parse_title(title: str) -> tuple[list[str], str | None]:
    """`"Toy Story (1995)"` -> (["toy", "story"], "1995")."""
    match = _YEAR.search(title)
    year = match.group(1) if match else None
    text = title[: match.start()] if match else title
    return list(dict.fromkeys(_TOKEN.findall(text.lower()))), year


def _decode(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _co_watches(by_user: dict[str, list[tuple[int, str]]]):
    """The pairs of consecutive movies in each user's (timestamp, movie) history, users in
    order; a movie rated twice in a row is no pair."""
    for user in sorted(by_user):
        history = sorted(by_user[user])
        for (_, query), (_, candidate) in zip(history, history[1:], strict=False):
            if query != candidate:
                yield {"query_id": query, "candidate_id": candidate}


def build(
    output_dir: str,
    variant: str = "1m-ratings",
    tfds_data_dir: str | None = None,
    num_shards: int = 1,
    file_format: str = jsonl.JSONL,
    overwrite: bool = False,
    log_every: int = 200_000,
) -> dict:
    """Writes the MovieLens co-watch dataset into `output_dir`.

    Args:
      variant: a `movielens/<variant>` TFDS config with movie features (one of VARIANTS).
      tfds_data_dir: TFDS data directory (default: TFDS's own).
      log_every: progress line every this many ratings.
      output_dir, num_shards, file_format, overwrite: as for every source (`jsonl.write_dataset`).

    Returns:
      The summary dict (also in `summary.json` and README.md).
    """
    jsonl.check_format(file_format)
    if variant not in VARIANTS:
        raise ValueError(f"--variant={variant!r} is not one of {list(VARIANTS)}")
    jsonl.check_output_dir(output_dir, overwrite)
    import tensorflow_datasets as tfds  # noqa: PLC0415  (heavy; only this source needs it)

    from ssl_retrieval.compat import tf  # noqa: F401, PLC0415  (Keras 2 before TFDS imports TF)

    name = f"movielens/{variant}"
    builder = tfds.builder(name, data_dir=tfds_data_dir)
    genre_names = builder.info.features["movie_genres"].feature.names
    try:
        ratings = tfds.load(name, split="train", data_dir=tfds_data_dir)
    except Exception as e:  # TFDS raises many types for a failed download; translate them here.
        raise ValueError(
            f"cannot load TFDS dataset {name!r} ({type(e).__name__}: {e}); it is downloaded on "
            "first use, which needs internet access"
        ) from None
    movies: dict[str, dict] = {}
    by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    count = 0
    for ex in tfds.as_numpy(ratings):
        movie = _decode(ex["movie_id"])
        if movie not in movies:
            words, year = parse_title(_decode(ex["movie_title"]))
            genres = [genre_names[int(g)] for g in ex["movie_genres"]]
            item: dict = {"item_id": movie}
            if genres:
                item["genres"] = list(dict.fromkeys(genres))
            if words:
                item["title"] = words
            if year:
                item["year"] = year
            movies[movie] = item
        by_user[_decode(ex["user_id"])].append((int(ex["timestamp"]), movie))
        count += 1
        if log_every and count % log_every == 0:
            logging.info("movielens: %d ratings read", count)

    def describe(num_items, num_pairs):
        summary = {
            "source": "movielens",
            "variant": variant,
            "ratings": count,
            "users": len(by_user),
            "items": num_items,
            "pairs": num_pairs,
        }
        notes = (
            "Pairs are consecutive movies rated by the same user in time order (ties by movie "
            "id): query = the earlier movie, candidate = the next one."
        )
        return f"MovieLens {variant} as a co-watch dataset", summary, notes

    items = (movies[movie] for movie in sorted(movies))
    pairs = _co_watches(by_user)
    return jsonl.write_dataset(
        output_dir, FEATURES, items, pairs, describe, file_format, num_shards, overwrite
    )
