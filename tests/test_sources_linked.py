"""The linked source: deterministic, flat popularity, links that follow topics, symmetric."""

import collections
import json
import os
import re

import numpy as np
import pytest

from ssl_retrieval.sources import linked


def _read(directory, name):
    with open(os.path.join(directory, f"{name}.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("linked") / "raw")
    linked.build(out, num_items=20_000, num_pairs=60_000, seed=3)
    return out


def _topic(item):
    """The latent topic an item's words give away (None when it drew no topic word)."""
    for token in item["title"] + item["keywords"]:
        match = re.match(r"t(\d+)[wk]", token)
        if match:
            return int(match.group(1))
    return None


def test_counts_schema_and_same_bytes_for_the_same_seed(dataset, tmp_path, check_source_output):
    _, _, schema = check_source_output(dataset, 20_000, 60_000)
    assert [f.kind for f in schema.features].count("multi_hot") == 2
    again = str(tmp_path / "again")
    linked.build(again, num_items=20_000, num_pairs=60_000, seed=3)
    for name in ("items.jsonl", "pairs.jsonl"):
        with (
            open(os.path.join(dataset, name), "rb") as a,
            open(os.path.join(again, name), "rb") as b,
        ):
            assert a.read() == b.read()


def test_popularity_is_flat_and_the_graph_symmetric(dataset):
    pairs = _read(dataset, "pairs")
    as_query = collections.Counter(p["query_id"] for p in pairs)
    as_candidate = collections.Counter(p["candidate_id"] for p in pairs)
    degree = as_query + as_candidate
    top50 = sum(count for _, count in degree.most_common(50)) / (2 * len(pairs))
    assert 0.005 < top50 < 0.1  # a mild head, not Debian's hubs (libc6 alone holds 5%)
    # Orientation is a coin flip: an item is a query about as often as a candidate.
    busy = [i for i, d in degree.items() if d >= 20]
    share = np.array([as_query[i] / degree[i] for i in busy])
    assert len(busy) > 100 and abs(share.mean() - 0.5) < 0.02


def test_links_follow_topics_the_features_show(dataset):
    items = {i["item_id"]: i for i in _read(dataset, "items")}
    pairs = _read(dataset, "pairs")
    topics = {i: _topic(item) for i, item in items.items()}
    known = [(topics[p["query_id"]], topics[p["candidate_id"]]) for p in pairs]
    known = [(a, b) for a, b in known if a is not None and b is not None]
    same = np.mean([a == b for a, b in known])
    assert 0.5 < same < 0.75  # topic_links = 0.6 plus chance
    shuffled = np.random.default_rng(0).permutation([b for _, b in known])
    assert np.mean([a == b for (a, _), b in zip(known, shuffled, strict=True)]) < 0.01


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="topic_links and group_links"):
        linked.build(str(tmp_path / "a"), num_items=100, num_pairs=10, topic_links=0.8)
    with pytest.raises(ValueError, match="topic_size"):
        linked.build(str(tmp_path / "b"), num_items=100, num_pairs=10, topic_size=1)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_both_directions_writes_each_link_then_its_reverse(dataset, tmp_path):
    both = str(tmp_path / "both")
    summary = linked.build(both, num_items=20_000, num_pairs=60_000, seed=3, both_directions=True)
    one_way, pairs = _read(dataset, "pairs"), _read(both, "pairs")
    assert summary["pairs"] == len(pairs) == 120_000 and summary["links"] == 60_000
    assert pairs[0::2] == one_way  # the same links, as drawn
    assert pairs[1::2] == [
        {"query_id": p["candidate_id"], "candidate_id": p["query_id"]} for p in one_way
    ]
    with open(os.path.join(both, "items.jsonl"), "rb") as a:
        with open(os.path.join(dataset, "items.jsonl"), "rb") as b:
            assert a.read() == b.read()
    # A one-way build's summary is as it was before the option.
    assert "both_directions" not in json.load(open(os.path.join(dataset, "summary.json")))
