"""The Beam preprocessing job: each transform with TestPipeline, and the whole job end to end."""

import glob
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import (
    batches,
    beam_options,
    mutual_information,
    pairs,
    pipeline,
    raw_io,
    readers,
    stats,
    tf_example,
    tmp_dirs,
    vocabulary,
    writers,
)
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.compat import tf
from ssl_retrieval.sources import jsonl as source_files

SCHEMA = {
    "features": [
        {"name": "item_id", "kind": "id"},
        {"name": "brand", "kind": "categorical", "min_count": 2},
        {"name": "tags", "kind": "multi_hot", "max_vocab": 6},
        {"name": "size", "kind": "dense", "transform": "log"},
    ]
}


def random_items(n, rng):
    items = []
    for i in range(n):
        cluster = i % 5
        item = {"item_id": f"it{i}"}
        if rng.random() < 0.9:
            item["brand"] = f"b{cluster}" if rng.random() < 0.7 else f"rare{i}"
        tags = sorted({f"t{cluster}{int(rng.integers(3))}" for _ in range(int(rng.integers(0, 4)))})
        if tags:
            item["tags"] = tags
        if rng.random() < 0.8:
            item["size"] = float(np.exp(rng.normal(cluster, 1)))
        items.append(item)
    return items


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    items = random_items(120, rng)
    pair_list = []
    for _ in range(1500):
        q = int(rng.integers(120))
        c = (q + 5 * int(rng.integers(1, 6))) % 120
        pair_list.append({"query_id": f"it{q}", "candidate_id": f"it{c}"})
    bad_items = [
        "{not json",
        json.dumps({"brand": "no id"}),
        json.dumps({"item_id": "bad_tags", "tags": "not-a-list"}),
        json.dumps({"item_id": "it0"}),  # duplicate id
    ]
    bad_pairs = [
        json.dumps({"query_id": "it1", "candidate_id": "ghost"}),
        json.dumps({"query_id": "it1", "candidate_id": "it2", "weight": -1}),
    ]
    write_jsonl(d / "items-00000-of-00002.jsonl", items[:60])
    write_jsonl(d / "items-00001-of-00002.jsonl", items[60:] + bad_items)
    write_jsonl(d / "pairs.jsonl", pair_list + bad_pairs)
    with open(d / "schema.json", "w") as f:
        json.dump(SCHEMA, f)
    return {"dir": d, "items": items, "pairs": pair_list, "bad": len(bad_items) + len(bad_pairs)}


def config_for(raw, out, **kwargs):
    return format_config(raw["dir"], out, extension=".jsonl", **kwargs)


@pytest.fixture(scope="module")
def output(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "data"
    summary = pipeline.run(config_for(raw, out))
    return {"dir": out, "summary": summary}


# ---------------------------------------------------------------- numpy reference for MI


def reference_mi(items, schema, vocabs, dense_stats):
    """Eq. 4 with the contract's weighting, written independently with numpy arrays."""

    def tokens(item, f):
        v = item.get(f.name)
        if v is None:
            return ["<MISSING>"]
        if f.kind == "dense":
            z = (math.log1p(v) - dense_stats[f.name][0]) / dense_stats[f.name][1]
            return [f"bin{min(7, max(-8, math.floor(2 * z)))}"]
        vals = [v] if isinstance(v, str) else v
        if f.kind == "id":
            return vals
        return [x if x in vocabs[f.name] else "<OOV>" for x in vals]

    feats = schema.features
    k, n = len(feats), len(items)
    toks = [[tokens(it, f) for f in feats] for it in items]

    def entropy_of(keys, weights):
        uniq, inverse = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
        p = np.bincount(inverse, weights=np.array(weights)) / n
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h = []
    for i in range(k):
        keys = [t for row in toks for t in row[i]]
        weights = [1.0 / len(row[i]) for row in toks for _ in row[i]]
        h.append(entropy_of(keys, weights))
    mi = np.zeros((k, k))
    for i in range(k):
        mi[i, i] = h[i]
        for j in range(i + 1, k):
            keys, weights = [], []
            for row in toks:
                for a in row[i]:
                    for b in row[j]:
                        keys.append(f"{a}\x00{b}")
                        weights.append(1.0 / (len(row[i]) * len(row[j])))
            mi[i, j] = mi[j, i] = h[i] + h[j] - entropy_of(keys, weights)
    return mi, np.array(h)


def test_mutual_information_matches_numpy_reference(raw, output):
    out = output["dir"]
    schema = schema_lib.load_from_data_dir(str(out))
    vocabs = {
        f.name: set(open(out / f.vocab_file).read().split("\n")) - {""}
        for f in schema.sparse_features
    }
    dense_stats = {f.name: (f.mean, f.std) for f in schema.dense_features}
    # The vocabulary caps really applied: min_count 2 removed the rare brands, max_vocab 6 tags.
    assert not any(v.startswith("rare") for v in vocabs["brand"])
    assert len(vocabs["tags"]) == 6
    mi_json = json.load(open(out / "mutual_info.json"))
    expected, entropy = reference_mi(raw["items"], schema, vocabs, dense_stats)
    got = np.array(mi_json["mutual_information"])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got, got.T)
    np.testing.assert_allclose(np.diag(got), mi_json["entropy"], atol=1e-12)
    np.testing.assert_allclose(mi_json["entropy"], entropy, atol=1e-6)
    assert mi_json["features"] == ["item_id", "brand", "tags", "size"]
    assert mi_json["ranked"]["item_id"][0] in ("brand", "tags", "size")
    assert got[1, 2] > 0.1  # brand and tags share the cluster


def test_counts_add_up(raw, output):
    out = output["dir"]
    counts = output["summary"]["counts"]
    bad_pairs, bad_items = 2, 4
    assert counts["input_pairs"] == len(raw["pairs"]) + bad_pairs
    assert counts["input_items"] == len(raw["items"]) + bad_items
    assert counts["items"] == len(raw["items"])
    pair_errors = sum(
        1
        for line in open(glob.glob(str(out / "errors" / "*"))[0])
        if "pairs" in json.loads(line)["file"]
    )
    split_pairs = counts["train_pairs"] + counts["validation_pairs"] + counts["eval_pairs"]
    assert split_pairs + pair_errors == counts["input_pairs"]
    assert 0 < counts["validation_pairs"] < counts["eval_pairs"]
    assert counts["error_records"] == raw["bad"]
    errors = [json.loads(line) for line in open(glob.glob(str(out / "errors" / "*"))[0])]
    by_field = Counter(e["field"] for e in errors)
    assert by_field == Counter({"": 1, "item_id": 2, "tags": 1, "candidate_id": 1, "weight": 1})
    ghost = next(e for e in errors if e["field"] == "candidate_id")
    assert ghost["file"].endswith("pairs.jsonl") and ghost["line"] == 1501
    assert "unknown item 'ghost'" in ghost["reason"]
    dup = next(e for e in errors if "duplicate" in e["reason"])
    assert dup["file"].endswith("items-00001-of-00002.jsonl")


def parse_all(pattern, spec):
    ds = tf.data.TFRecordDataset(sorted(glob.glob(pattern))).batch(100000)
    return next(iter(ds.map(lambda x: tf.io.parse_example(x, spec))))


def test_records_read_back_with_the_schema(raw, output):
    out = output["dir"]
    schema = schema_lib.load_from_data_dir(str(out))
    spec = {}
    for prefix in ("query_", "candidate_"):
        for f in schema.features:
            spec[prefix + f.name] = (
                tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
                if f.kind == "dense"
                else tf.io.RaggedFeature(tf.string)
            )
    spec["weight"] = tf.io.FixedLenFeature([], tf.float32)
    train = parse_all(str(out / schema.files["train"]), spec)
    evals = parse_all(str(out / schema.files["eval"]), spec)
    validation = parse_all(str(out / schema.files["validation"]), spec)
    got = Counter()
    for batch in (train, evals, validation):
        queries, candidates = batch["query_item_id"].numpy(), batch["candidate_item_id"].numpy()
        for q, c in zip(queries, candidates, strict=True):
            got[(q[0].decode(), c[0].decode())] += 1
    assert got == Counter((p["query_id"], p["candidate_id"]) for p in raw["pairs"])
    items = {it["item_id"]: it for it in raw["items"]}
    q0 = train["query_item_id"][0][0].numpy().decode()
    assert [t.decode() for t in train["query_tags"][0].numpy()] == items[q0].get("tags", [])
    size = train["query_size"][0].numpy()
    assert (np.isnan(size) and "size" not in items[q0]) or np.isclose(size, items[q0]["size"])
    corpus = parse_all(
        str(out / schema.files["items"]),
        {"item_id": tf.io.RaggedFeature(tf.string), "tags": tf.io.RaggedFeature(tf.string)},
    )
    assert sorted(x[0].decode() for x in corpus["item_id"].numpy()) == sorted(items)
    stats = json.load(open(out / "stats.json"))
    counts_file = [line.split("\t") for line in open(out / "stats/candidate_counts.tsv")]
    train_cands = Counter(c[0].decode() for c in train["candidate_item_id"].numpy())
    assert {k: int(v) for k, v in counts_file} == dict(train_cands)
    head = open(out / "stats/head_items.txt").read().split()
    assert len(head) == stats["num_head_items"] == math.ceil(0.1 * len(train_cands))
    assert min(train_cands[h] for h in head) >= max(
        n for c, n in train_cands.items() if c not in head
    )
    eval_cands = {c[0].decode() for c in evals["candidate_item_id"].numpy()}
    assert set(open(out / "stats/cold_items.txt").read().split()) == eval_cands - set(train_cands)
    assert "## Counts" in open(out / "README.md").read()


def test_rerun_is_byte_identical_and_train_fraction(raw, output, tmp_path):
    again = tmp_path / "again"
    pipeline.run(config_for(raw, again))
    for pattern in ("train-*", "eval-*", "items-*", "vocab/*", "stats/*", "mutual_info.json"):
        first = sorted(glob.glob(str(output["dir"] / pattern)))
        second = sorted(glob.glob(str(again / pattern)))
        assert [os.path.basename(p) for p in first] == [os.path.basename(p) for p in second]
        for a, b in zip(first, second, strict=True):
            assert open(a, "rb").read() == open(b, "rb").read(), a


def test_split_and_sampling_are_stable_hashes():
    keys = [(f"q{i}", f"c{i % 97}") for i in range(40000)]
    kept = [k for k in keys if pairs.kept_for_training(*k, 0.1)]
    assert abs(len(kept) / len(keys) - 0.1) < 0.005
    evals = [k for k in keys if pairs.split_of(*k, 0.1) == pairs.EVAL]
    assert abs(len(evals) / len(keys) - 0.1) < 0.005
    # The two hashes are independent: sampling does not favour either split.
    both = [k for k in evals if pairs.kept_for_training(*k, 0.1)]
    assert abs(len(both) / len(evals) - 0.1) < 0.02
    assert pairs.unit_hash("a\x1fb", "split") == pairs.unit_hash("a\x1fb", "split")


def test_train_fraction_end_to_end(raw, output, tmp_path):
    out = tmp_path / "sparse"
    summary = pipeline.run(config_for(raw, out, train_fraction=0.1))
    full = output["summary"]["counts"]
    counts = summary["counts"]
    assert counts["eval_pairs"] == full["eval_pairs"]
    assert counts["validation_pairs"] == full["validation_pairs"]
    assert counts["train_pairs"] + counts["downsampled_pairs"] == full["train_pairs"]
    assert abs(counts["train_pairs"] / full["train_pairs"] - 0.1) < 0.03  # ~1300 pairs


def test_too_many_errors_fail_and_leave_nothing(raw, tmp_path):
    out = tmp_path / "strict"
    cfg = pipeline.PreprocessConfig(
        items=str(raw["dir"] / "items*.jsonl"),
        pairs=str(raw["dir"] / "pairs*.jsonl"),
        schema=str(raw["dir"] / "schema.json"),
        output_dir=str(out),
        max_error_fraction=0.0,
    )
    with pytest.raises(ValueError, match=r"6 of 1626 input records are invalid"):
        pipeline.run(cfg)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["strict.errors"]


def test_cli_errors_are_clear(raw, tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pipelines.preprocess", *args], capture_output=True, text=True
        )

    missing = run(
        f"--items={tmp_path}/none*.jsonl",
        f"--pairs={raw['dir']}/pairs.jsonl",
        f"--schema={raw['dir']}/schema.json",
        f"--output_dir={tmp_path}/x",
    )
    assert missing.returncode == 1
    assert "--items=" in missing.stderr and "no file matches" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = run(
        f"--items={raw['dir']}/items*.jsonl",
        f"--pairs={raw['dir']}/pairs.jsonl",
        f"--schema={raw['dir']}/schema.json",
        f"--output_dir={tmp_path}/y",
        "--train_fraction=0",
    )
    assert bad.returncode == 1 and "--train_fraction must be in (0, 1]" in bad.stderr
    (tmp_path / "pairs.jsonl").write_text("")
    empty = run(
        f"--items={raw['dir']}/items*.jsonl",
        f"--pairs={tmp_path}/pairs.jsonl",
        f"--schema={raw['dir']}/schema.json",
        f"--output_dir={tmp_path}/z",
    )
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert empty.stderr.strip().splitlines()[-1] == (
        f"error: no pairs in --pairs={tmp_path}/pairs.jsonl (1 file, not one record); nothing "
        f"was written to {tmp_path}/z"
    )
    not_parquet = run(
        f"--items={raw['dir']}/items*.jsonl",
        f"--pairs={raw['dir']}/pairs.jsonl",
        f"--schema={raw['dir']}/schema.json",
        f"--output_dir={tmp_path}/w",
        "--input_format=parquet",
    )
    assert not_parquet.returncode == 1 and "Traceback" not in not_parquet.stderr
    assert f"error: {raw['dir']}/items-00000-of-00002.jsonl: not a readable Parquet file" in (
        not_parquet.stderr
    )
    help_text = run("--help").stdout
    assert "--direct_running_mode" in help_text and "--input_format" in help_text


# ---------------------------------------------------------------- issue 34.5: a misspelled flag


OWN_FLAGS = [f"--{name}" for name in ("train_fraction", "eval_fraction", "items")]


@pytest.mark.parametrize(
    "args",
    [
        ["--runner=DataflowRunner", "--project=p", "--region=europe-west1"],
        ["--temp_location=gs://b/tmp", "--staging_location", "gs://b/stage", "--num_workers=4"],
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        ["--runner=FlinkRunner", "--flink_master=localhost:8081", "--parallelism=4"],
        ["--runner=SparkRunner", "--spark_master_url=spark://host:7077"],
        ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=LOOPBACK"],
        ["--experiments=use_runner_v2", "--experiments=x", "--save_main_session"],
        ["--sdk_container_image=img", "--max_num_workers", "8", "--no_use_public_ips"],
        [],
    ],
)
def test_runner_options_pass_the_flag_check(args):
    options = beam_options.pipeline_options(args, OWN_FLAGS)
    assert options.get_all_options(drop_default=True).keys() >= {
        a.removeprefix("--").split("=")[0]
        for a in args
        if a.startswith("--") and not a.startswith("--no_") and "experiment" not in a
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--trian_fraction=0.1"],
            "unknown flag --trian_fraction: neither a flag of this "
            "command nor a Beam pipeline option; did you mean --train_fraction?",
        ),
        (["--runner=DirectRunner", "--trian_fraction", "0.1"], "did you mean --train_fraction?"),
        (["--direct_num_worker=2"], "did you mean --direct_num_workers?"),
        (["--runer=DataflowRunner"], "did you mean --runner?"),
        (
            ["--zzzzzzzz"],
            "unknown flag --zzzzzzzz: neither a flag of this command nor a Beam pipeline option",
        ),
        (["stray"], "unexpected argument 'stray'"),
        (["--direct_num_workers=two"], "--direct_num_workers: invalid int value: 'two'"),
    ],
)
def test_a_flag_that_is_not_ours_nor_beams_is_an_error_naming_the_closest(args, message):
    with pytest.raises(ValueError) as e:
        beam_options.pipeline_options(args, OWN_FLAGS)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_misspelled_preprocess_flag_stops_before_any_work(raw, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            f"--items={raw['dir']}/items*.jsonl",
            f"--pairs={raw['dir']}/pairs.jsonl",
            f"--schema={raw['dir']}/schema.json",
            f"--output_dir={out}",
            "--trian_fraction=0.1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: unknown flag --trian_fraction: neither a flag of this command nor a Beam "
        "pipeline option; did you mean --train_fraction?"
    ]
    assert proc.stdout == "" and os.listdir(tmp_path) == []


# ---------------------------------------------------------------- transforms, one by one


def test_parse_items_transform():
    schema = schema_lib.from_json(SCHEMA)
    lines = [
        ("a.jsonl", 1, json.dumps({"item_id": "x", "tags": ["t", "t", "u"], "size": 3})),
        ("a.jsonl", 2, json.dumps({"item_id": "y", "brand": 5})),
        ("b.jsonl", 1, json.dumps({"item_id": "x", "brand": "later"})),
    ]
    with TestPipeline() as p:
        # Two batches, three buckets: the duplicate meets its first version across batches.
        out = p | beam.Create([lines[:2], lines[2:]]) | raw_io.ParseItems(schema, num_buckets=3)
        assert_that(
            out["items"] | beam.FlatMap(lambda bucket: bucket[1]),
            equal_to([("x", {"item_id": "x", "tags": ["t", "u"], "size": 3.0})]),
            label="Items",
        )
        assert_that(
            out["errors"] | beam.Map(lambda e: (e["file"], e["line"], e["field"], e["reason"])),
            equal_to(
                [
                    ("a.jsonl", 2, "brand", "expected a string, got int"),
                    ("b.jsonl", 1, "item_id", "duplicate item id (first seen at a.jsonl:1)"),
                ]
            ),
            label="Errors",
        )


def test_vocabulary_transform(tmp_path):
    schema = schema_lib.from_json(SCHEMA)
    os.makedirs(tmp_path / "vocab")
    items = [
        ("a", {"item_id": "a", "brand": "b1", "tags": ["x", "y"]}),
        ("b", {"item_id": "b", "brand": "b1", "tags": ["y"]}),
        ("c", {"item_id": "c", "brand": "b2"}),
    ]
    with TestPipeline() as p:
        buckets = [(0, items[:2]), (1, items[2:])]
        out = p | beam.Create(buckets) | vocabulary.ComputeVocabularies(schema, str(tmp_path))
        assert_that(
            out["sizes"] | beam.Map(lambda kv: (kv[0], kv[1]["vocab_size"])),
            equal_to([("item_id", 3), ("brand", 1), ("tags", 2)]),
            label="Sizes",
        )
        # The side input of later stages: value -> line in the file; no id vocabulary.
        assert_that(
            out["codes"],
            equal_to([("brand", {"b1": 0}), ("tags", {"y": 0, "x": 1})]),
            label="Codes",
        )
    assert open(tmp_path / "vocab" / "tags.txt").read() == "y\nx\n"
    assert open(tmp_path / "vocab" / "brand.txt").read() == "b1\n"  # min_count 2
    assert open(tmp_path / "vocab" / "item_id.txt").read() == "a\nb\nc\n"


def test_mutual_information_transform_on_a_hand_case():
    # Two features that determine each other: MI = H = log 2.
    schema = schema_lib.from_json(
        {
            "features": [
                {"name": "id", "kind": "id"},
                {"name": "a", "kind": "categorical"},
                {"name": "b", "kind": "categorical"},
            ]
        }
    )
    items = [(str(i), {"id": str(i), "a": f"a{i % 2}", "b": f"b{i % 2}"}) for i in range(8)]
    codes = {"a": {"a0": 0, "a1": 1}, "b": {"b0": 0, "b1": 1}}
    with TestPipeline() as p:
        sums = (
            p
            | beam.Create([(0, items[:3]), (1, items[3:])])  # two buckets
            | mutual_information.ComputeMutualInformation(
                schema,
                codes=beam.pvalue.AsDict(p | "Codes" >> beam.Create(codes.items())),
                dense_stats=beam.pvalue.AsDict(p | "Dense" >> beam.Create([])),
            )
        )
        result = (
            sums
            | beam.combiners.ToDict()
            | beam.Map(
                lambda s: mutual_information.finalize(["id", "a", "b"], s, 8)["mutual_information"]
            )
        )

        def check(matrices):
            (m,) = matrices
            np.testing.assert_allclose(
                m, [[math.log(8), math.log(2), math.log(2)], [math.log(2)] * 3, [math.log(2)] * 3]
            )

        assert_that(result, check)


def test_join_pairs_transform():
    schema = schema_lib.from_json({"features": [{"name": "item_id", "kind": "id"}]})
    items = [("a", {"item_id": "a"}), ("b", {"item_id": "b"})]
    raw_pairs = [
        {"query_id": "a", "candidate_id": "b", "weight": 2.0, "file": "p", "line": 1},
        {"query_id": "a", "candidate_id": "zz", "weight": 1.0, "file": "p", "line": 2},
    ]
    with TestPipeline() as p:
        out = {
            "pairs": p | "Pairs" >> beam.Create([raw_pairs]),
            "items": p | "Items" >> beam.Create([(0, items)]) | pairs.EncodeItems(schema),
        } | pairs.JoinPairs(eval_fraction=0.0, train_fraction=1.0)
        expected = tf_example.example(
            {
                "query_item_id": tf_example.bytes_feature(["a"]),
                "candidate_item_id": tf_example.bytes_feature(["b"]),
                "weight": tf_example.float_feature([2.0]),
            }
        )
        assert_that(
            out["train"] | beam.FlatMap(lambda batch: batch),
            equal_to([("a\x1fb", expected)]),
            label="Train",
        )
        assert_that(
            out["errors"] | beam.Map(lambda e: (e["line"], e["field"])),
            equal_to([(2, "candidate_id")]),
            label="Errors",
        )


def test_tf_example_encoder_matches_tensorflow():
    encoded = tf_example.example(
        {
            "s": tf_example.bytes_feature(["héllo", "x"]),
            "e": tf_example.bytes_feature([]),
            "f": tf_example.float_feature([1.5]),
            "g": tf_example.float_feature([]),
        }
    )
    parsed = tf.train.Example.FromString(encoded)
    assert list(parsed.features.feature["s"].bytes_list.value) == ["héllo".encode(), b"x"]
    assert list(parsed.features.feature["e"].bytes_list.value) == []
    assert list(parsed.features.feature["f"].float_list.value) == [1.5]
    assert parsed.features.feature["g"].WhichOneof("kind") == "float_list"


@pytest.mark.slow
def test_multi_processing_gives_the_same_outputs(raw, output, tmp_path):
    out = tmp_path / "mp"
    pipeline.run(
        config_for(raw, out),
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
    )
    for pattern in ("train-*", "eval-*", "items-*", "vocab/*", "stats/*"):
        for a in sorted(glob.glob(str(output["dir"] / pattern))):
            b = out / os.path.relpath(a, output["dir"])
            assert open(a, "rb").read() == open(b, "rb").read(), a
    np.testing.assert_allclose(
        json.load(open(out / "mutual_info.json"))["mutual_information"],
        json.load(open(output["dir"] / "mutual_info.json"))["mutual_information"],
        atol=1e-9,
    )


def test_portable_runner_gives_byte_identical_outputs(raw, output, tmp_path):
    """The job through Beam's portable runner API (the path Flink, Spark and Dataflow Runner v2
    take: a job service, and SDK workers here in this process) writes the same bytes."""
    out = tmp_path / "portable"
    pipeline.run(
        config_for(raw, out),
        ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    )
    written = sorted(
        os.path.relpath(f, output["dir"])
        for f in glob.glob(str(output["dir"] / "**" / "*"), recursive=True)
        if os.path.isfile(f)
    )
    assert "mutual_info.json" in written and any(f.startswith("train-") for f in written)
    for name in written:
        assert open(output["dir"] / name, "rb").read() == open(out / name, "rb").read(), name


# ---------------------------------------------------------------- input formats (issue 16)

# Bad records every format can hold: a null id, a duplicate id, a TAB in an id (issue 13), a
# pair to an unknown item, a negative weight, a self pair.
BAD_ITEMS = [
    {"item_id": None, "brand": "no id"},
    {"item_id": "it0", "brand": "duplicate"},
    {"item_id": "tab\tid", "brand": "b0"},
]
BAD_PAIRS = [
    {"query_id": "it1", "candidate_id": "ghost"},
    {"query_id": "it1", "candidate_id": "it2", "weight": -1.0},
    {"query_id": "it3", "candidate_id": "it3"},
]
PAIR_COLUMNS = [*source_files.PAIR_FEATURES, {"name": "weight", "kind": "dense"}]


@pytest.fixture(scope="module")
def same_data(raw, tmp_path_factory):
    """The same items and pairs, good and bad, as JSON Lines, Parquet and CSV (two item files)."""
    items = raw["items"]
    item_files = [items[:70], items[70:] + BAD_ITEMS]
    pair_list = raw["pairs"][:300] + BAD_PAIRS + [dict(p, weight=2.5) for p in raw["pairs"][300:]]
    dirs = {}
    for fmt in source_files.FORMATS:
        d = tmp_path_factory.mktemp(fmt)
        for i, records in enumerate(item_files):
            with source_files.open_writer(fmt, str(d), f"items{i}", 1, SCHEMA["features"]) as w:
                for r in records:
                    w.write({k: v for k, v in r.items() if v is not None or k == "item_id"})
        with source_files.open_writer(fmt, str(d), "pairs", 1, PAIR_COLUMNS) as w:
            for r in pair_list:
                w.write(r)
        with open(d / "schema.json", "w") as f:
            json.dump(SCHEMA, f)
        dirs[fmt] = d
    return {"dirs": dirs, "items": [r for f in item_files for r in f], "pairs": pair_list}


def format_config(directory, out, extension="", **kwargs):
    """The job's config over the raw files of `directory` (items*<extension>, pairs*...)."""
    return pipeline.PreprocessConfig(
        items=str(directory / f"items*{extension}"),
        pairs=str(directory / f"pairs*{extension}"),
        schema=str(directory / "schema.json"),
        output_dir=str(out),
        max_error_fraction=0.05,
        num_shards=2,
        **kwargs,
    )


def output_files(directory):
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, _, names in os.walk(directory)
        for name in names
    )


def dead_letters(directory, line_offset=0):
    """Dead letters with the input's directory and extension taken out of file names."""
    letters = []
    for path in glob.glob(str(directory / "errors" / "*")):
        for line in open(path):
            e = json.loads(line)
            stem = os.path.splitext(os.path.basename(e["file"]))[0]
            reason = re.sub(
                r"at \S*/(items\d)\.\w+:(\d+)",
                lambda m: f"at {m[1]}:{int(m[2]) - line_offset}",
                e["reason"],
            )
            letters.append((stem, e["line"] - line_offset, e["field"], reason))
    return sorted(letters)


@pytest.mark.slow
def test_parquet_csv_and_bigquery_give_byte_identical_outputs(same_data, tmp_path, monkeypatch):
    outputs, configs = {}, {}
    # A temporary directory left by a killed run beside the output is removed by the next run.
    stale = tmp_path / ".parquet.tmp-0badc0de"
    stale.mkdir()
    (stale / tmp_dirs.LOCK_FILE).write_text("")
    for fmt, directory in same_data["dirs"].items():
        configs[fmt] = format_config(directory, tmp_path / fmt)
        summary = pipeline.run(configs[fmt])
        outputs[fmt] = tmp_path / fmt
        assert summary["counts"]["error_records"] == len(BAD_ITEMS) + len(BAD_PAIRS)
    assert not stale.exists()
    reference = outputs["jsonl"]
    names = output_files(reference)
    assert "schema.json" in names and "vocab/tags.txt" in names
    for fmt in ("parquet", "csv"):
        assert output_files(outputs[fmt]) == names
        for name in names:
            if name == "README.md" or name.startswith("errors/"):
                continue
            assert (outputs[fmt] / name).read_bytes() == (reference / name).read_bytes(), name
        readme = (outputs[fmt] / "README.md").read_text()
        for key in ("items", "pairs", "schema"):
            readme = readme.replace(getattr(configs[fmt], key), getattr(configs["jsonl"], key))
        assert readme == (reference / "README.md").read_text()
    expected = dead_letters(reference)
    assert [(e[0], e[2]) for e in expected] == [
        ("items1", "item_id"),
        ("items1", "item_id"),
        ("items1", "item_id"),
        ("pairs", "candidate_id"),
        ("pairs", "weight"),
        ("pairs", "candidate_id"),
    ]
    assert dead_letters(outputs["parquet"]) == expected
    # CSV lines count the header.
    assert dead_letters(outputs["csv"], line_offset=1) == expected

    # BigQuery: Beam's read replaced by a local stand-in giving the rows BigQuery IO gives (a
    # table has no row order, so "first of duplicates" is not defined there: no duplicate).
    # Every column is in every row (NULL: None), as BigQuery gives them.
    tables = {
        "proj:ds.items": [
            {f["name"]: r.get(f["name"]) for f in SCHEMA["features"]}
            for r in same_data["items"]
            if r.get("brand") != "duplicate"
        ],
        "proj:ds.pairs": [
            {c["name"]: r.get(c["name"]) for c in PAIR_COLUMNS} for r in same_data["pairs"]
        ],
    }
    read = []

    def stand_in(table, columns):
        read.append((table, columns))
        return beam.Create([dict(r) for r in tables[table]])

    monkeypatch.setattr(readers, "bigquery_read", stand_in)
    bq_out = tmp_path / "bigquery"
    bq = pipeline.PreprocessConfig(
        items="proj:ds.items",
        pairs="proj:ds.pairs",
        schema=str(same_data["dirs"]["jsonl"] / "schema.json"),
        output_dir=str(bq_out),
        max_error_fraction=0.05,
        num_shards=2,
        input_format="bigquery",
    )
    summary = pipeline.run(bq)
    assert sorted(read) == [
        ("proj:ds.items", ["item_id", "brand", "tags", "size"]),
        ("proj:ds.pairs", None),
    ]
    assert summary["counts"]["input_items"] == len(tables["proj:ds.items"])
    for name in names:
        if name.startswith(("train-", "eval-", "items-", "vocab/", "stats/", "mutual_info")):
            assert (bq_out / name).read_bytes() == (reference / name).read_bytes(), name
    letters = dead_letters(bq_out)
    assert {(e[0], e[1]) for e in letters} == {("proj:ds", 0)}
    assert [e[2:] for e in letters] == sorted(e[2:] for e in expected if "duplicate" not in e[3])


def _odd_input(directory, fmt):
    """30 good items, 200 good pairs, and after them records with bytes that are not UTF-8 and
    numbers that do not fit a float32, as `fmt` files; the bad ones' (file, line, field)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = [(f"it{i}".encode(), b"b%d" % (i % 3), float(i)) for i in range(30)]
    items += [(b"bad\xff", b"b0", 1.0), (b"big", b"b1", 1e300), (b"neg", b"b\xe9", -1e300)]
    pairs = [(f"it{i % 30}".encode(), f"it{(i * 7 + 1) % 30}".encode(), 1.0) for i in range(200)]
    pairs += [(b"it1\xff", b"it2", 1.0), (b"it1", b"it2", 1e300)]
    if fmt == "parquet":

        def column(values):  # strings as Parquet holds them: bytes it never checks
            return pa.array(values, type=pa.binary()).view(pa.string())

        for name, rows, columns in (
            ("items", items, ("item_id", "brand", "size")),
            ("pairs", pairs, ("query_id", "candidate_id", "weight")),
        ):
            cols = list(zip(*rows, strict=True))
            table = pa.table(
                {columns[0]: column(cols[0]), columns[1]: column(cols[1]), columns[2]: cols[2]}
            )
            pq.write_table(table, directory / f"{name}.parquet")
        first = 1
    elif fmt == "csv":
        (directory / "items.csv").write_bytes(
            b"item_id,brand,size\n" + b"".join(b"%s,%s,%r\n" % row for row in items)
        )
        (directory / "pairs.csv").write_bytes(
            b"query_id,candidate_id,weight\n" + b"".join(b"%s,%s,%r\n" % row for row in pairs)
        )
        first = 2  # the header is line 1
    else:
        (directory / "items.jsonl").write_bytes(
            b"".join(b'{"item_id": "%s", "brand": "%s", "size": %r}\n' % row for row in items)
        )
        (directory / "pairs.jsonl").write_bytes(
            b"".join(
                b'{"query_id": "%s", "candidate_id": "%s", "weight": %r}\n' % row for row in pairs
            )
        )
        first = 1
    schema = {"features": [SCHEMA["features"][0], SCHEMA["features"][1], SCHEMA["features"][3]]}
    (directory / "schema.json").write_text(json.dumps(schema))
    return sorted(
        [
            ("items", first + 30, "item_id"),
            ("items", first + 31, "size"),
            ("items", first + 32, "brand"),  # its size is -1e300 too: the first field
            ("pairs", first + 200, "query_id"),
            ("pairs", first + 201, "weight"),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_odd_bytes_and_numbers_are_dead_letters_naming_file_line_and_field(tmp_path, fmt):
    """Issue 35: bytes that are not UTF-8 stopped the job in Beam's coder, and 1e300 in
    struct.pack; both are dead letters, the job runs, and its outputs hold neither."""
    expected = _odd_input(tmp_path, fmt)
    summary = pipeline.run(format_config(tmp_path, tmp_path / "out"))
    assert summary["counts"]["error_records"] == 5
    assert summary["counts"]["items"] == 30
    letters = dead_letters(tmp_path / "out")
    assert [(stem, line, field) for stem, line, field, _ in letters] == expected
    reasons = {field: reason for _, _, field, reason in letters}
    assert reasons["item_id"] == reasons["query_id"] == raw_io.NOT_UTF8
    assert reasons["size"].startswith("1e+300 does not fit a float32")
    assert reasons["weight"].startswith("1e+300 does not fit a float32")


def test_bigquery_needs_num_shards():
    with pytest.raises(ValueError, match="--num_shards is required with --input_format=bigquery"):
        pipeline.PreprocessConfig(
            items="p:d.i", pairs="p:d.p", schema="s", output_dir="o", input_format="bigquery"
        )


# ---------------------------------------------------------------- empty inputs (issue 13.7)


def test_empty_input_files_fail_before_the_job(raw, tmp_path):
    (tmp_path / "items.jsonl").write_text("")
    pq_pairs = tmp_path / "pq"
    pq_pairs.mkdir()
    with source_files.open_writer("parquet", str(pq_pairs), "pairs", 1, PAIR_COLUMNS):
        pass  # a valid Parquet file with no row
    cases = [
        (str(tmp_path / "items.jsonl"), str(raw["dir"] / "pairs.jsonl"), "no items in --items="),
        (str(raw["dir"] / "items*.jsonl"), str(pq_pairs / "pairs.parquet"), "no pairs in --pairs="),
    ]
    for items, pair_files, message in cases:
        cfg = pipeline.PreprocessConfig(
            items=items,
            pairs=pair_files,
            schema=str(raw["dir"] / "schema.json"),
            output_dir=str(tmp_path / "out"),
        )
        with pytest.raises(ValueError, match=message):
            pipeline.run(cfg)
    assert sorted(os.listdir(tmp_path)) == ["items.jsonl", "pq"]  # no output, no temp dir


@pytest.mark.slow
def test_blank_pairs_fail_after_the_job_with_one_line(raw, tmp_path):
    (tmp_path / "pairs.jsonl").write_text("\n  \n\n")
    cfg = pipeline.PreprocessConfig(
        items=str(raw["dir"] / "items*.jsonl"),
        pairs=str(tmp_path / "pairs.jsonl"),
        schema=str(raw["dir"] / "schema.json"),
        output_dir=str(tmp_path / "out"),
        max_error_fraction=0.05,
    )
    with pytest.raises(ValueError) as e:
        pipeline.run(cfg)
    assert str(e.value) == (
        f"no pairs in --pairs={tmp_path}/pairs.jsonl (1 file, not one record); nothing was "
        f"written to {tmp_path}/out"
    )
    assert sorted(os.listdir(tmp_path)) == ["pairs.jsonl"]  # no output, no temp dir


def test_no_training_pairs_is_an_error(tmp_path):
    meta = tmp_path / pipeline.META
    meta.mkdir()
    counts = {
        "input_items": 3,
        "input_pairs": 2,
        "items": 3,
        "train_pairs": 0,
        "eval_pairs": 2,
        "error_records": 0,
    }
    (meta / "meta.jsonl").write_text(
        "".join(json.dumps(["counts", [k, v]]) + "\n" for k, v in counts.items())
    )
    cfg = pipeline.PreprocessConfig(items="i", pairs="p", schema="s", output_dir="o")
    with pytest.raises(ValueError, match=r"^no training pairs: of 2 pairs read, 2 went to eval"):
        pipeline._finish(cfg, None, {}, str(tmp_path), {"items": ["i"], "pairs": ["p"]})


def test_batches_chunks_and_routes_every_record_once():
    records = [f"id{i}" for i in range(10_001)]
    chunked = list(batches.chunks(records, 4096))
    assert [len(c) for c in chunked] == [4096, 4096, 1809]
    assert batches.flatten(chunked) == records
    routed = list(batches.route(records, lambda r: r, 7))
    assert [bucket for bucket, _ in routed] == sorted({b for b, _ in routed})
    assert sorted(batches.flatten(group for _, group in routed)) == sorted(records)
    for bucket, group in routed:
        assert all(batches.bucket_of(r, 7) == bucket for r in group)
    sizes = [len(group) for _, group in routed]
    assert len(sizes) == 7 and min(sizes) > 0.8 * len(records) / 7  # CRC-32 spreads the ids


def test_mutual_information_does_not_depend_on_the_bucketing():
    schema = schema_lib.from_json(SCHEMA)
    items = [(it["item_id"], it) for it in random_items(200, np.random.default_rng(1))]
    codes = {"brand": {f"b{i}": i for i in range(5)}, "tags": {f"t{i}0": i for i in range(5)}}
    dense = {"size": {"mean": 1.0, "std": 1.5}}

    def sums(p, num_buckets):
        buckets = {}
        for item_id, item in items:
            buckets.setdefault(batches.bucket_of(item_id, num_buckets), []).append((item_id, item))
        return (
            p
            | f"Create{num_buckets}" >> beam.Create(sorted(buckets.items()))
            | f"MI{num_buckets}"
            >> mutual_information.ComputeMutualInformation(
                schema,
                codes=beam.pvalue.AsDict(p | f"Codes{num_buckets}" >> beam.Create(codes.items())),
                dense_stats=beam.pvalue.AsDict(
                    p | f"Dense{num_buckets}" >> beam.Create(dense.items())
                ),
            )
            | f"ToDict{num_buckets}" >> beam.combiners.ToDict()
        )

    def differences(one, many):
        assert one.keys() == many.keys() and len(one) == 10  # 4 marginals + 6 pairs
        return [k for k in one if not math.isclose(one[k], many[k], rel_tol=1e-12, abs_tol=1e-9)]

    with TestPipeline() as p:
        compared = sums(p, 1) | beam.Map(differences, many=beam.pvalue.AsSingleton(sums(p, 9)))
        assert_that(compared, equal_to([[]]))


def test_side_input_and_shuffle_joins_give_byte_identical_outputs(raw, tmp_path):
    outputs = {}
    for join in ("side_input", "shuffle"):
        out = tmp_path / join
        summary = pipeline.run(config_for(raw, out, join=join))
        outputs[join] = {
            os.path.relpath(path, out): open(path, "rb").read()
            for path in glob.glob(str(out / "**" / "*"), recursive=True)
            if os.path.isfile(path) and not path.endswith("README.md")
        }
        assert summary["counts"]["error_records"] == raw["bad"]
    assert outputs["side_input"].keys() == outputs["shuffle"].keys()
    for name, content in outputs["side_input"].items():
        assert content == outputs["shuffle"][name], name
    assert any(name.startswith("train-") for name in outputs["shuffle"])


def _catalogue_and_pairs(rng):
    """Encoded item buckets and raw pair batches (duplicates, unknown ids) for the joins."""
    schema = schema_lib.from_json(
        {"features": [{"name": "item_id", "kind": "id"}, {"name": "brand", "kind": "categorical"}]}
    )
    ids = [f"it{i}" for i in range(40)]
    buckets = {}
    for item_id in ids:
        item = {"item_id": item_id, "brand": f"b{len(item_id) % 3}"}
        buckets.setdefault(batches.bucket_of(item_id, 4), []).append((item_id, item))
    item_buckets = [(b, sorted(members)) for b, members in sorted(buckets.items())]
    raw_pairs = []
    for line in range(1, 601):
        q, c = rng.choice(ids + ["ghost"], 2, replace=False)
        # Weights whose order as numbers is not that of their Examples' bytes.
        weight = float(rng.choice([1.0, 2.5, 0.5, 3.0]))
        raw_pairs.append(
            {"query_id": q, "candidate_id": c, "weight": weight, "file": "p", "line": line}
        )
    raw_pairs += raw_pairs[:50]  # the same pairs again (some with the same weight)
    return schema, item_buckets, [raw_pairs[:300], raw_pairs[300:]]


@pytest.mark.parametrize("collide", [False, True])
def test_compact_side_input_join_writes_the_sorted_writers_bytes(tmp_path, monkeypatch, collide):
    """LookupPairs + WritePairShards (pairs as 24-byte records of item indices) write the same
    files as JoinPairs + WriteSortedShards, also when different pairs share an order hash (the
    writer then orders them by key, as the sorted writer does)."""
    if collide:
        real = pipeline.writers.order_hash
        # One byte of hash: about 2 pairs in 3 share their order hash with another pair.
        monkeypatch.setattr(pipeline.writers, "order_hash", lambda key: real(key) >> 56 << 56)
    schema, item_buckets, pair_batches = _catalogue_and_pairs(np.random.default_rng(1))
    shards = {pairs.TRAIN: 3, pairs.EVAL: 2, pairs.VALIDATION: 1}
    fractions = {"eval_fraction": 0.2, "train_fraction": 0.8, "validation_fraction": 0.1}
    known = Counter()
    unknown_lines = []
    for pair in (pair for batch in pair_batches for pair in batch):
        q, c = pair["query_id"], pair["candidate_id"]
        if "ghost" in (q, c):
            unknown_lines.append(pair["line"])
            continue
        split = pairs.split_of(q, c, fractions["eval_fraction"], fractions["validation_fraction"])
        if split != pairs.TRAIN or pairs.kept_for_training(q, c, fractions["train_fraction"]):
            known[f"{split}_pairs"] += 1
    expected_counts = list(known.items())
    assert len(expected_counts) == 3 and unknown_lines
    outputs = {}
    for join in ("compact", "shuffle"):
        out = tmp_path / join
        out.mkdir()
        with TestPipeline() as p:
            raw_pairs = p | "Pairs" >> beam.Create(pair_batches)
            encoded = p | "Items" >> beam.Create(item_buckets) | pairs.EncodeItems(schema)
            if join == "compact":
                # The side inputs in reverse bucket order: the item indices must not depend on it.
                def side(fn, label, encoded=encoded):
                    return beam.pvalue.AsList(
                        encoded
                        | f"{label}Map" >> beam.Map(fn)
                        | f"{label}All" >> beam.combiners.ToList()
                        | f"{label}Reverse" >> beam.FlatMap(lambda xs: sorted(xs, reverse=True))
                    )

                ids = side(pairs.catalogue_ids, "Ids")
                entries = side(pairs.catalogue_entries, "Entries")
                joined = raw_pairs | pairs.LookupPairs(ids, shards=shards, **fractions)
                counts = joined["pairs"] | pairs.WritePairShards(str(out), shards, ids, entries)
            else:
                joined = {"pairs": raw_pairs, "items": encoded} | pairs.JoinPairs(
                    num_buckets=4, **fractions
                )
                counts = [
                    joined[split]
                    | f"Write{split}" >> pipeline.writers.WriteSortedShards(str(out), split, n)
                    | f"Name{split}" >> beam.Map(lambda n, s=split: (f"{s}_pairs", n))
                    for split, n in shards.items()
                ] | beam.Flatten()
            assert_that(counts | beam.CombinePerKey(sum), equal_to(expected_counts), label="Counts")
            assert_that(
                joined["errors"] | beam.Map(lambda e: e["line"]),
                equal_to(unknown_lines),
                label="Errors",
            )
        outputs[join] = {f.name: f.read_bytes() for f in sorted(out.iterdir())}
    assert len(outputs["compact"]) == 6 and outputs["compact"] == outputs["shuffle"]


def test_item_encoder_gives_encode_item_bytes(monkeypatch):
    schema = schema_lib.from_json(SCHEMA)
    items = random_items(300, np.random.default_rng(3)) + [
        {"item_id": "only_id"},
        {"item_id": "ünï", "brand": "héllo", "tags": ["b", "a", "é" * 200], "size": 0.0},
    ]
    # A tiny cache, cleared several times on the way: entries from a cleared cache must agree.
    monkeypatch.setattr(pairs.ItemEncoder, "MAX_CACHED", 5)
    monkeypatch.setattr(pairs.ItemEncoder, "SLICE", 7)
    encoder = pairs.ItemEncoder(schema.features)
    expected = [pairs.encode_item(item, schema.features) for item in items]
    assert encoder.encode(items) == expected
    assert encoder.encode(items[::-1]) == expected[::-1]  # the caches are warm now
    assert encoder(items[-1]) == expected[-1]
    assert encoder.encode([]) == []


def test_framed_tfrecords_are_beams_tfrecords():
    from apache_beam.io.tfrecordio import _TFRecordUtil

    values = [b"", b"x", b"y" * 300, b"z" * 70_000, b"x"]
    expected = io.BytesIO()
    for value in values:
        _TFRecordUtil.write_record(expected, value)
    assert writers.framed_tfrecords(values) == expected.getvalue()
    assert writers.framed_tfrecords([]) == b""


def test_read_line_batches_are_the_chunks_of_read_lines(tmp_path):
    path = tmp_path / "lines.jsonl"
    lines = [f'{{"n": {i}}}' if i % 7 else "  " for i in range(1, 2_000)]
    path.write_bytes(("\n".join(lines) + "\n\xff\n").encode("utf-8", "surrogateescape"))
    for size in (1, 5, 4096):
        expected = list(batches.chunks(raw_io.read_lines(str(path)), size))
        assert list(raw_io.read_line_batches(str(path), size)) == expected
    assert expected[0][-1][1] == len(lines) + 1  # blank lines skipped, numbers kept


def test_quick_validation_agrees_with_the_full_checks(monkeypatch):
    schema = schema_lib.from_json(SCHEMA)
    items = [
        {"item_id": "a", "brand": "b", "tags": ["t", "t", "", "u"], "size": 3},
        {"item_id": "a", "brand": "", "tags": [], "size": None},
        {"item_id": "", "brand": "b"},
        {"brand": "b"},
        {"item_id": "a", "brand": ["x"]},
        {"item_id": "a", "tags": "t"},
        {"item_id": "a", "tags": ["t", 1]},
        {"item_id": "a", "tags": ["ok", "bad\tvalue"]},
        {"item_id": "a\n"},
        {"item_id": "a", "size": True},
        {"item_id": "a", "size": "3"},
        {"item_id": "a", "size": 1e308 * 10},
        {"item_id": "a", "size": -2.5, "other": [1]},
        {"item_id": ["a"]},
        {"item_id": "a", "size": 1e300},
        {"item_id": "a", "size": -3.5e38},
        {"item_id": "a", "size": 10**400},
        {"item_id": "a", "size": 3.4e38},
    ]
    pair_records = [
        {"query_id": "a", "candidate_id": "b"},
        {"query_id": "a", "candidate_id": "b", "weight": 2},
        {"query_id": "a", "candidate_id": "b", "weight": None},
        {"query_id": "a", "candidate_id": "b", "weight": 0},
        {"query_id": "a", "candidate_id": "b", "weight": True},
        {"query_id": "a", "candidate_id": "b", "weight": 2**60},
        {"query_id": "a", "candidate_id": "b", "weight": float("nan")},
        {"query_id": "a", "candidate_id": "a"},
        {"query_id": "a", "candidate_id": ""},
        {"query_id": "a\x85", "candidate_id": "b"},
        {"query_id": "a", "candidate_id": 3},
        {"query_id": "a", "candidate_id": "b", "weight": 1e300},
        {"query_id": "a", "candidate_id": "b", "weight": 1e-50},
        {"query_id": "a", "candidate_id": "b", "weight": 10**400},
        {"query_id": "a", "candidate_id": "b", "weight": 3e38},
    ]
    texts = [json.dumps(r) for r in items + pair_records] + ["[1]", "{", '{"a": 1} x', "\ufeff{}"]
    raws = texts + items + pair_records

    def results():
        return [
            (
                raw_io.validate_item(schema.features, "f", i, raw),
                raw_io.validate_pair("f", i, raw),
            )
            for i, raw in enumerate(raws)
        ]

    assert raw_io._fast_item(schema.features, texts[0]) is not None  # the quick path is taken
    quick = results()
    monkeypatch.setattr(raw_io, "_fast_object", lambda raw: None)  # the full checks only
    assert quick == results()
    assert sum(item is not None for (item, _), _ in quick) == 8
    assert sum(pair is not None for _, (pair, _) in quick) == 10


def test_split_and_route_is_split_records_then_the_writers_hashes():
    rng = np.random.default_rng(5)
    known = [
        (f"q{rng.integers(50)}", f"c{i}é", float(rng.integers(1, 4)), i % 50, i)
        for i in range(3_000)
    ]
    shards = {pairs.TRAIN: 3, pairs.VALIDATION: 2, pairs.EVAL: 1}
    for fractions in ((0.1, 0.05, 1.0), (0.2, 0.0, 0.3)):
        routed, train, evals, downsampled = pairs._split_and_route(known, fractions, shards)
        out, train_ids, eval_ids, expected_downsampled = pairs._split_records(known, fractions)
        assert downsampled == expected_downsampled > (0 if fractions[2] < 1 else -1)
        assert [known[i][1] for i in train] == train_ids
        assert [known[i][1] for i in evals] == eval_ids
        for split, split_pairs in out.items():
            expected = {}
            for query, candidate, weight, q, c in split_pairs:
                key = pairs.pair_key(query, candidate)
                order = int.from_bytes(writers.order_key(key), "big")
                shard = writers.shard_of(key, shards[split])
                expected.setdefault(shard, []).append((order, q, c, weight))
            assert routed[split] == expected
            assert len(expected) == (shards[split] if split_pairs else 0)


# ---------------------------------------------------------------- issue 30: the reverse-link leak


def _link_code(split, reverse):
    return 2 * pairs.LINK_SPLITS.index(split) + reverse


def _records(rows):
    records = np.empty(len(rows), dtype=pairs.LINK_RECORD)
    records["link"], records["code"] = zip(*rows, strict=True) if rows else ((), ())
    return records


def test_reverse_counts_on_a_hand_checked_toy():
    train, val, ev = pairs.TRAIN, pairs.VALIDATION, pairs.EVAL
    rows = [
        # link 1: eval a->b, its reverse b->a in train: 1 eval pair
        (1, _link_code(ev, 0)),
        (1, _link_code(train, 1)),
        # link 2: the same eval pair twice, reverse in train: 2
        (2, _link_code(ev, 0)),
        (2, _link_code(ev, 0)),
        (2, _link_code(train, 1)),
        # link 3: the same direction in train is no reverse: 0
        (3, _link_code(ev, 0)),
        (3, _link_code(train, 0)),
        # link 4: validation b->a, a->b twice in train: 1 validation pair
        (4, _link_code(val, 1)),
        (4, _link_code(train, 0)),
        (4, _link_code(train, 0)),
        # link 5: the reverse in validation, not training: 0
        (5, _link_code(ev, 1)),
        (5, _link_code(val, 0)),
        # link 6: both directions in eval and in train: 2
        (6, _link_code(ev, 0)),
        (6, _link_code(ev, 1)),
        (6, _link_code(train, 0)),
        (6, _link_code(train, 1)),
        # link 2**40 + 1 (not link 1): eval only
        (2**40 + 1, _link_code(ev, 1)),
    ]
    assert stats.reverse_counts(_records(rows)) == {
        "eval_pairs_with_reverse_in_train": 5,
        "validation_pairs_with_reverse_in_train": 1,
    }
    assert stats.reverse_counts(_records([])) == dict.fromkeys(stats.REVERSE_COUNTS, 0)


def test_reverse_counts_match_a_reference_in_python():
    rng = np.random.default_rng(3)
    rows = [(int(rng.integers(40)), int(rng.integers(6))) for _ in range(2_000)]
    directions_in_train = {(link, code % 2) for link, code in rows if code < 2}
    expected = {name: 0 for name in stats.REVERSE_COUNTS}
    for link, code in rows:
        split = pairs.LINK_SPLITS[code // 2]
        if split != pairs.TRAIN and (link, 1 - code % 2) in directions_in_train:
            expected[f"{split}_pairs_with_reverse_in_train"] += 1
    assert stats.reverse_counts(_records(rows)) == expected
    assert min(expected.values()) > 100


def test_link_records_of_indices_and_of_ids():
    split_pairs = {pairs.TRAIN: [(3, 1), (1, 3)], pairs.EVAL: [(7, 2, "rest")]}
    records = np.frombuffer(pairs.link_records(split_pairs), dtype=pairs.LINK_RECORD)
    assert records["link"].tolist() == [(1 << 32) | 3, (1 << 32) | 3, (2 << 32) | 7]
    assert records["code"].tolist() == [1, 0, _link_code(pairs.EVAL, 1)]
    by_id = {pairs.VALIDATION: [("b", "a"), ("a", "b")]}
    records = np.frombuffer(
        pairs.link_records(by_id, index_of=pairs.link_hash), dtype=pairs.LINK_RECORD
    )
    assert records["link"].tolist() == [pairs.link_hash("a", "b")] * 2
    assert records["code"].tolist() == [3, 2]


def test_split_by_link_puts_a_pair_and_its_reverse_together():
    keys = [(f"q{i}é", f"c{i % 97}") for i in range(20_000)]
    for split_by in pairs.SPLIT_BY:
        same_split = [
            pairs.split_of(q, c, 0.1, 0.05, split_by) == pairs.split_of(c, q, 0.1, 0.05, split_by)
            for q, c in keys
        ]
        same_kept = [
            pairs.kept_for_training(q, c, 0.3, split_by)
            == pairs.kept_for_training(c, q, 0.3, split_by)
            for q, c in keys
        ]
        if split_by == pairs.LINK:
            assert all(same_split) and all(same_kept)
        else:  # independent hashes: P(same) = 0.1^2 + 0.045^2 + 0.855^2 and 0.3^2 + 0.7^2
            assert abs(np.mean(same_split) - 0.7431) < 0.01
            assert abs(np.mean(same_kept) - 0.58) < 0.01
    evals = [k for k in keys if pairs.split_of(*k, 0.1, 0.05, pairs.LINK) == pairs.EVAL]
    assert abs(len(evals) / len(keys) - 0.1) < 0.005
    # The default is the pair's own hash, as before the option.
    assert pairs.split_key("b", "a") == "b\x1fa" and pairs.split_key("b", "a", "link") == "a\x1fb"


def test_split_and_route_splits_by_link_as_split_records():
    rng = np.random.default_rng(9)
    known = []
    for _ in range(1_500):
        q, c = int(rng.integers(60)), int(rng.integers(60, 120))
        known += [(f"i{q}", f"i{c}", 1.0, q, c), (f"i{c}", f"i{q}", 1.0, c, q)]
    shards = {pairs.TRAIN: 2, pairs.VALIDATION: 1, pairs.EVAL: 1}
    fractions = (0.2, 0.1, 0.5)
    routed, train, evals, downsampled = pairs._split_and_route(known, fractions, shards, "link")
    out, train_ids, eval_ids, expected_downsampled = pairs._split_records(known, fractions, "link")
    assert downsampled == expected_downsampled > 0
    assert [f"i{c}" for c in train] == train_ids and [f"i{c}" for c in evals] == eval_ids
    for split, split_pairs in out.items():
        got = sorted((q, c) for rows in routed[split].values() for _, q, c, _ in rows)
        assert got == sorted((p[3], p[4]) for p in split_pairs)
        # every pair of the split has its reverse in the same split
        assert Counter((p[0], p[1]) for p in split_pairs) == Counter(
            (p[1], p[0]) for p in split_pairs
        )


def _split_ids(out):
    """{split: Counter of (query, candidate)} of a data dir's tfrecords."""
    found = {}
    for split in (pairs.TRAIN, pairs.VALIDATION, pairs.EVAL):
        found[split] = Counter()
        for path in glob.glob(str(out / f"{split}-*.tfrecord")):
            for record in tf.data.TFRecordDataset(path):
                feature = tf.train.Example.FromString(record.numpy()).features.feature
                q = feature["query_item_id"].bytes_list.value[0].decode()
                c = feature["candidate_item_id"].bytes_list.value[0].decode()
                found[split][(q, c)] += 1
    return found


@pytest.mark.slow
def test_split_by_link_removes_the_reverse_link_leak_that_stats_report(tmp_path, caplog):
    from ssl_retrieval.sources import linked

    raw_dir = tmp_path / "raw"
    linked.build(str(raw_dir), num_items=300, num_pairs=1_500, seed=1, both_directions=True)

    def run(name, **kwargs):
        cfg = pipeline.PreprocessConfig(
            items=str(raw_dir / "items.jsonl"),
            pairs=str(raw_dir / "pairs.jsonl"),
            schema=str(raw_dir / "schema.json"),
            output_dir=str(tmp_path / name),
            **kwargs,
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            summary = pipeline.run(cfg)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        return summary, json.load(open(tmp_path / name / "stats.json")), warned

    for name, kwargs in [
        ("by_pair", {}),
        ("by_link", {"split_by": "link"}),
        ("by_link_sparse", {"split_by": "link", "train_fraction": 0.5}),
        ("by_pair_shuffle", {"join": "shuffle"}),
    ]:
        summary, stats_json, warned = run(name, **kwargs)
        found = _split_ids(tmp_path / name)
        for split in (pairs.EVAL, pairs.VALIDATION):
            # the reference: the split's pairs (with repeats) whose reverse is a training pair
            expected = sum(
                n for (q, c), n in found[split].items() if found[pairs.TRAIN][(c, q)] > 0
            )
            assert stats_json[f"{split}_pairs_with_reverse_in_train"] == expected
            share = stats_json[f"{split}_reverse_in_train_share"]
            assert share == round(expected / summary["counts"][f"{split}_pairs"], 6)
        assert stats_json["split_by"] == kwargs.get("split_by", "pair")
        readme = open(tmp_path / name / "README.md").read()
        row = f"| eval_pairs_with_reverse_in_train | {stats_json['eval_pairs_with_reverse_in_train']} |"
        assert row in readme
        if name.startswith("by_pair"):
            # Every link in both directions, split by pair: most eval pairs leak.
            assert stats_json["eval_reverse_in_train_share"] > 0.7
            assert len(warned) == 1 and "--split_by=link" in warned[0]
            assert "% of eval pairs" in warned[0] and "`--split_by=link`" in readme
        else:
            assert stats_json["eval_pairs_with_reverse_in_train"] == 0
            assert stats_json["validation_pairs_with_reverse_in_train"] == 0
            assert warned == []
            # A link and its reverse are kept or dropped together: every split is symmetric.
            for split_counts in found.values():
                assert split_counts == Counter({(c, q): n for (q, c), n in split_counts.items()})
    sparse = _split_ids(tmp_path / "by_link_sparse")
    full = _split_ids(tmp_path / "by_link")
    assert sparse[pairs.EVAL] == full[pairs.EVAL]
    assert 0.4 < sum(sparse[pairs.TRAIN].values()) / sum(full[pairs.TRAIN].values()) < 0.6
    # The two joins count the same (item indices there, hashes of ids here).
    assert (tmp_path / "by_pair" / "stats.json").read_bytes() == (
        tmp_path / "by_pair_shuffle" / "stats.json"
    ).read_bytes()
