"""The synthetic source: deterministic, sharded, long-tailed and clustered."""

import collections
import glob
import json
import os
import subprocess
import sys

import pytest

from ssl_retrieval.sources import synthetic


def read_all(directory, prefix):
    records = []
    for path in sorted(glob.glob(os.path.join(directory, f"{prefix}*.jsonl"))):
        with open(path) as f:
            records += [json.loads(line) for line in f]
    return records


def file_bytes(directory):
    return {
        os.path.basename(p): open(p, "rb").read()
        for p in sorted(glob.glob(os.path.join(directory, "*.jsonl")))
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "raw")
    synthetic.build(out, num_items=3000, num_pairs=60000, num_clusters=30, num_shards=3, seed=7)
    return out


def test_counts_shards_and_schema(dataset, check_source_output):
    assert sorted(os.listdir(dataset)) == sorted(
        [f"items-0000{i}-of-00003.jsonl" for i in range(3)]
        + [f"pairs-0000{i}-of-00003.jsonl" for i in range(3)]
        + ["schema.json", "README.md", "summary.json"]
    )
    check_source_output(dataset, 3000, 60000)


def test_same_seed_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    again = str(tmp_path / "again")
    synthetic.build(again, num_items=3000, num_pairs=60000, num_clusters=30, num_shards=3, seed=7)
    assert file_bytes(again) == file_bytes(dataset)
    other = str(tmp_path / "other")
    synthetic.build(other, num_items=3000, num_pairs=60000, num_clusters=30, num_shards=3, seed=8)
    assert file_bytes(other) != file_bytes(dataset)


def test_long_tail_and_cluster_structure(dataset):
    pairs = read_all(dataset, "pairs")
    counts = collections.Counter(p["candidate_id"] for p in pairs)
    top = sum(c for _, c in counts.most_common(30))  # top 1% of 3000 items
    assert top / len(pairs) > 0.2  # uniform would give 0.01
    same_cluster = sum(
        int(p["query_id"][1:]) % 30 == int(p["candidate_id"][1:]) % 30 for p in pairs
    )
    assert same_cluster / len(pairs) > 0.85  # chance: 1/30
    items = {i["item_id"]: i for i in read_all(dataset, "items")}
    agree = sum(
        items[p["query_id"]]["brand"] == items[p["candidate_id"]]["brand"] for p in pairs[:5000]
    )
    assert agree / 5000 > 0.5


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_parquet_and_csv_hold_the_same_records(tmp_path, read_raw, file_format):
    args = dict(num_items=300, num_pairs=2000, num_clusters=10, num_shards=2, seed=3)
    synthetic.build(str(tmp_path / "jsonl"), **args)
    synthetic.build(str(tmp_path / file_format), file_format=file_format, **args)
    assert sorted(os.listdir(tmp_path / file_format)) == sorted(
        [f"items-0000{i}-of-00002.{file_format}" for i in range(2)]
        + [f"pairs-0000{i}-of-00002.{file_format}" for i in range(2)]
        + ["schema.json", "README.md", "summary.json"]
    )
    items, pairs = read_raw(str(tmp_path / file_format))
    assert (items, pairs) == read_raw(str(tmp_path / "jsonl"))
    assert len(items) == 300 and len(pairs) == 2000
    assert f"items*.{file_format}" in (tmp_path / file_format / "README.md").read_text()


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="--num_items must be >= 2"):
        synthetic.build(str(tmp_path / "x"), num_items=1)
    with pytest.raises(ValueError, match="--zipf_exponent must be > 0"):
        synthetic.build(str(tmp_path / "x"), zipf_exponent=0)
    with pytest.raises(ValueError, match=r"--format='avro' is not one of"):
        synthetic.build(str(tmp_path / "x"), file_format="avro")


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ssl_retrieval.sources", *args], capture_output=True, text=True
    )


def test_cli_end_to_end_and_errors(tmp_path):
    out = str(tmp_path / "raw")
    ok = run_cli("--source=synthetic", "--num_items=100", "--num_pairs=500", f"--output_dir={out}")
    assert ok.returncode == 0, ok.stderr
    assert "synthetic: 100 items, 500 pairs" in ok.stdout
    again = run_cli("--source=synthetic", f"--output_dir={out}")
    assert again.returncode == 1
    assert "exists and is not empty" in again.stderr and "Traceback" not in again.stderr
    assert len(read_all(out, "items")) == 100  # the existing dataset is untouched
    bad = run_cli("--source=nope", f"--output_dir={tmp_path / 'y'}")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert (
        "debian, movielens, synthetic" in bad.stderr or "debian|movielens|synthetic" in bad.stderr
    )
    replaced = run_cli(
        "--source=synthetic",
        "--num_items=50",
        "--num_pairs=10",
        f"--output_dir={out}",
        "--overwrite",
    )
    assert replaced.returncode == 0, replaced.stderr
    assert len(read_all(out, "items")) == 50
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temp dirs left
    helptext = run_cli("--help").stdout
    for flag in (
        "--source",
        "--output_dir",
        "--packages_file",
        "--variant",
        "--num_items",
        "--seed",
        "--format",
    ):
        assert flag in helptext
