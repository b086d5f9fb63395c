"""Training batches are uniform samples of the pairs and of the corpus, for any data size.

The shuffle buffer is shrunk far below the data size so that these small data dirs behave like a
data set that does not fit in it (Debian's 265k pairs against the old 100k buffer; any catalogue of
millions of items): what makes batches uniform then is the hashed record order on disk, which the
Beam job writes, plus the per-epoch file shuffle. A Kolmogorov-Smirnov test compares the ranks
(in sorted key order) of a batch's records with the uniform distribution.
"""

import json

import numpy as np
import pytest
from scipy import stats

from pipelines import pipeline
from ssl_retrieval import data as data_lib
from ssl_retrieval import schema as schema_lib

SCHEMA = {
    "features": [
        {"name": "item_id", "kind": "id"},
        {"name": "brand", "kind": "categorical"},
        {"name": "tags", "kind": "multi_hot"},
    ]
}
NUM_ITEMS = 400
NUM_PAIRS = 3000


def _write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _preprocess(raw, out, **kwargs):
    config = pipeline.PreprocessConfig(
        items=str(raw / "items.jsonl"),
        pairs=str(raw / "pairs.jsonl"),
        schema=str(raw / "schema.json"),
        output_dir=str(out),
        num_shards=3,
        **kwargs,
    )
    pipeline.run(config)
    return str(out)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("order_raw")
    rng = np.random.default_rng(1)
    items = [
        {"item_id": f"it{i:04d}", "brand": f"b{i % 7}", "tags": [f"t{i % 5}"]}
        for i in range(NUM_ITEMS)
    ]
    # Pairs listed in sorted order, the worst case for a reader that keeps file order.
    pairs = sorted(
        {(int(q), int(c)) for q, c in rng.integers(NUM_ITEMS, size=(NUM_PAIRS, 2)) if q != c}
    )
    _write_jsonl(d / "items.jsonl", items)
    _write_jsonl(
        d / "pairs.jsonl",
        [{"query_id": f"it{q:04d}", "candidate_id": f"it{c:04d}"} for q, c in pairs],
    )
    with open(d / "schema.json", "w") as f:
        json.dump(SCHEMA, f)
    return d


@pytest.fixture(scope="module")
def data_dir(raw, tmp_path_factory):
    return _preprocess(raw, tmp_path_factory.mktemp("order_out") / "data")


def _pair_keys(batch):
    q = batch["query"]["item_id"].flat_values.numpy().astype(str)
    c = batch["candidate"]["item_id"].flat_values.numpy().astype(str)
    return [f"{a}\x1f{b}" for a, b in zip(q, c, strict=True)]


def _all_pair_keys(data_dir, schema):
    keys = []
    for batch in data_lib.pairs_dataset(data_dir, "train", 4096, schema=schema):
        keys += _pair_keys(batch)
    return sorted(keys)


def _ks_pvalue(ranks, population):
    return stats.kstest((np.asarray(ranks) + 0.5) / population, "uniform").pvalue


@pytest.mark.slow
def test_pair_batches_are_uniform_when_data_exceeds_the_buffer(data_dir, monkeypatch):
    monkeypatch.setattr(data_lib, "SHUFFLE_BUFFER", 64)
    schema = schema_lib.load_from_data_dir(data_dir)
    ordered = _all_pair_keys(data_dir, schema)
    rank = {k: i for i, k in enumerate(ordered)}
    assert len(ordered) > 20 * data_lib.SHUFFLE_BUFFER
    stream = data_lib.training_dataset(data_dir, schema, 256, 64, seed=3)
    first_batches = [pairs for pairs, _ in stream.take(3)]
    for pairs in first_batches:
        ranks = [rank[k] for k in _pair_keys(pairs)]
        assert _ks_pvalue(ranks, len(ordered)) > 1e-3, sorted(ranks)[:10]
    # Whole-epoch batches of a different seed come in another order.
    other = next(iter(data_lib.training_dataset(data_dir, schema, 256, 64, seed=4)))[0]
    assert _pair_keys(other) != _pair_keys(first_batches[0])


@pytest.mark.slow
def test_uniform_item_batches_when_corpus_exceeds_the_buffer(data_dir, monkeypatch):
    monkeypatch.setattr(data_lib, "SHUFFLE_BUFFER", 16)
    schema = schema_lib.load_from_data_dir(data_dir)
    stream = data_lib.training_dataset(data_dir, schema, 64, 96, seed=0)
    for _, items in stream.take(3):
        ids = items["item_id"].flat_values.numpy().astype(str)
        ranks = [int(i[2:]) for i in ids]  # ids sort as their numbers
        assert _ks_pvalue(ranks, NUM_ITEMS) > 1e-3, sorted(ranks)[:10]


@pytest.mark.slow
def test_each_epoch_is_a_fresh_permutation_when_the_data_fits(data_dir):
    schema = schema_lib.load_from_data_dir(data_dir)
    n = schema.counts["train_pairs"]
    batch = 50
    per_epoch = n // batch
    stream = data_lib.training_dataset(data_dir, schema, batch, 8, seed=0)
    keys = [k for pairs, _ in stream.take(2 * per_epoch + 2) for k in _pair_keys(pairs)]
    first, second = keys[: per_epoch * batch], keys[n : n + per_epoch * batch]
    assert len(set(first)) == len(first)  # no pair twice within an epoch
    assert first[:batch] != second[:batch]


@pytest.mark.slow
def test_validation_split_is_disjoint_and_fixed_across_train_fractions(raw, data_dir, tmp_path):
    schema = schema_lib.load_from_data_dir(data_dir)
    assert schema.counts["validation_pairs"] > 0

    def keys(directory, split):
        s = schema_lib.load_from_data_dir(directory)
        out = set()
        for batch in data_lib.pairs_dataset(directory, split, 4096, schema=s):
            out.update(_pair_keys(batch))
        return out

    train, validation, test = (keys(data_dir, s) for s in ("train", "validation", "eval"))
    assert not train & validation and not train & test and not validation & test
    share = len(validation) / (len(train) + len(validation))
    assert 0.02 < share < 0.09  # default 5% of the non-test pairs
    sparse = _preprocess(raw, tmp_path / "sparse", train_fraction=0.3)
    assert keys(sparse, "validation") == validation
    assert keys(sparse, "eval") == test
    assert keys(sparse, "train") < train
