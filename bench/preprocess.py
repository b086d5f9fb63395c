"""Benchmark of the preprocessing job: the whole job in both DirectRunner modes against the time
one Python process takes to read its input, the mutual-information stage against numpy, and
reading Parquet, JSON Lines and CSV.

Prints JSON lines:
  {"figure": "read_json", "seconds"}   one process reading and json.loads-ing every input line
                                       (items*.jsonl, pairs*.jsonl): the floor of any job;
  {"figure": "preprocess", "mode": "in_memory" | "multi_processing_2", "seconds",
   "cpu_s", "ratio_to_read_json", "goal_ratio": 10, "meets_goal", "pairs_per_s", "items_per_s"}
                                       the whole job, end to end (pipeline.run), in each mode
                                       (cpu_s: CPU seconds of this process and its workers);
  {"figure": "mutual_information", "mi_beam_s", "mi_numpy_s", "ratio", "goal_ratio": 3,
   "meets_goal", "max_abs_diff_*"}     the Beam MI stage alone (items already parsed, in buckets
                                       as in the job; the time of a pipeline that only creates
                                       and writes them is subtracted, fastest of 3 runs each;
                                       ratio and meets_goal are null when the difference is
                                       within the noise) beside a single-process numpy
                                       computation of the same matrix;
  {"figure": "read", "source": "synthetic", "jsonl_s", "parquet_s", "csv_s", ...}
                                       (--read_only) the job's read + validate stage on the same
                                       synthetic data written as JSON Lines, Parquet and CSV,
                                       and the same read + validation in one process without
                                       Beam (`*_single_s`).

  .venv/bin/python bench/preprocess.py [--raw_dir=runs/debian/raw] [--work_dir=runs/bench]
  .venv/bin/python bench/preprocess.py --synthetic_items=1000000 --synthetic_pairs=10000000 \
      --raw_dir=runs/bench/synthetic_1m
  .venv/bin/python bench/preprocess.py --read_only [--read_items=50000 --read_pairs=500000]
"""

import argparse
import ast
import json
import os
import resource
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipelines import (  # noqa: E402
    batches,
    mutual_information,
    pipeline,
    raw_io,
    readers,
    vocabulary,
)
from ssl_retrieval import schema as schema_lib  # noqa: E402
from ssl_retrieval.data_dir import DataDir  # noqa: E402
from ssl_retrieval.sources import jsonl as source_files  # noqa: E402
from ssl_retrieval.sources import synthetic  # noqa: E402


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the runner's worker processes):
    steadier than wall time on a shared machine."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def emit(**fields):
    print(json.dumps(fields), flush=True)


def ensure_raw(raw_dir: str) -> str:
    if not os.path.exists(os.path.join(raw_dir, "schema.json")):
        from ssl_retrieval.sources import debian

        debian.build(raw_dir)
    return raw_dir


def load_items(raw_dir: str, schema):
    items = []
    for path in sorted(os.listdir(raw_dir)):
        if path.startswith("items") and path.endswith(".jsonl"):
            for _, line, text in raw_io.read_lines(os.path.join(raw_dir, path)):
                item, error = raw_io.validate_item(schema.features, path, line, text)
                if item is not None:
                    items.append(item)
    return items


def numpy_mi(items, schema, vocabularies, dense_stats):
    """The same matrix in one process: token codes per feature, then weighted bincounts.

    `vocabularies`: feature -> the set of values its capped vocabulary kept (the job's files).
    """
    features = schema.features
    n = len(items)
    per_feature = []  # (indptr, codes, weights) in CSR form over items
    for f in features:
        vocab: dict[str, int] = {}
        lengths, codes, weights = [], [], []
        kept = vocabularies.get(f.name) if f.kind != schema_lib.ID else None
        for item in items:
            value = item.get(f.name)
            if value is None:
                tokens = [mutual_information.MISSING]
            elif f.kind == schema_lib.DENSE:
                mean, std = dense_stats[f.name]
                z = (vocabulary.transform_dense(value, f) - mean) / std
                tokens = [mutual_information.dense_bin(z)]
            else:
                tokens = [value] if isinstance(value, str) else value
                if kept is not None:
                    tokens = [t if t in kept else mutual_information.OOV for t in tokens]
            lengths.append(len(tokens))
            for t in tokens:
                codes.append(vocab.setdefault(t, len(vocab)))
                weights.append(1.0 / len(tokens))
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        per_feature.append((indptr, np.array(codes), np.array(weights), len(vocab)))

    def entropy(keys, weights):
        _, inverse = np.unique(keys, return_inverse=True)
        p = np.bincount(inverse, weights=weights) / n
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    k = len(features)
    h = [entropy(c, w) for _, c, w, _ in per_feature]
    mi = np.zeros((k, k))
    for i in range(k):
        mi[i, i] = h[i]
        pi, ci, wi, _ = per_feature[i]
        li = np.diff(pi)
        for j in range(i + 1, k):
            pj, cj, wj, vj = per_feature[j]
            lj = np.diff(pj)
            pairs = li * lj
            item = np.repeat(np.arange(n), pairs)
            r = np.arange(pairs.sum()) - np.repeat(np.cumsum(pairs) - pairs, pairs)
            a = pi[item] + r // lj[item]
            b = pj[item] + r % lj[item]
            keys = ci[a].astype(np.int64) * vj + cj[b]
            mi[i, j] = mi[j, i] = h[i] + h[j] - entropy(keys, wi[a] * wj[b])
    return mi


def bench_read(work_dir: str, num_items: int, num_pairs: int) -> None:
    """The read + validate stage on the same synthetic data in each input format."""
    seconds, single, sizes, counts = {}, {}, {}, {}
    for fmt in source_files.FORMATS:
        raw = os.path.join(work_dir, f"read_{fmt}")
        summary_path = os.path.join(raw, "summary.json")
        summary = {}
        if os.path.exists(summary_path):
            with open(summary_path) as f:
                summary = json.load(f)
        if (summary.get("items"), summary.get("pairs")) != (num_items, num_pairs):
            synthetic.build(
                raw,
                num_items=num_items,
                num_pairs=num_pairs,
                num_shards=4,
                file_format=fmt,
                overwrite=True,
            )
        schema = schema_lib.load(os.path.join(raw, "schema.json"))
        inputs = {
            "items": readers.resolve(
                os.path.join(raw, "items*"), "--items", "auto", readers.item_columns(schema)
            ),
            "pairs": readers.resolve(
                os.path.join(raw, "pairs*"), "--pairs", "auto", readers.pair_columns()
            ),
        }
        sizes[fmt] = sum(os.path.getsize(f) for source in inputs.values() for f in source.files)
        counts_file = os.path.join(work_dir, f"read_counts_{fmt}")
        start = time.time()
        with beam.Pipeline(
            runner=pipeline.local_runner(PipelineOptions([])), options=PipelineOptions([])
        ) as p:
            items = (
                p
                | "ReadItems" >> readers.ReadRecords(inputs["items"])
                | "ParseItems" >> raw_io.ParseItems(schema)
            )
            pairs = (
                p
                | "ReadPairs" >> readers.ReadRecords(inputs["pairs"])
                | "ParsePairs" >> raw_io.ParsePairs()
            )
            _ = (
                (
                    items["items"]
                    | "ItemsPerBucket" >> beam.Map(lambda bucket: len(bucket[1]))
                    | "CountItems" >> beam.CombineGlobally(sum),
                    pairs["pairs"]
                    | "PairsPerBatch" >> beam.Map(len)
                    | "CountPairs" >> beam.CombineGlobally(sum),
                    (items["errors"], pairs["errors"])
                    | "Errors" >> beam.Flatten()
                    | "CountErrors" >> beam.combiners.Count.Globally(),
                )
                | "AllCounts" >> beam.Flatten()
                | "Write" >> beam.io.WriteToText(counts_file, shard_name_template="")
            )
        seconds[fmt] = time.time() - start
        with open(counts_file) as f:
            counts[fmt] = sorted(int(line) for line in f)
        os.remove(counts_file)
        start = time.time()
        valid = 0
        for path, line, raw_record in readers.iter_records(inputs["items"]):
            valid += raw_io.validate_item(schema.features, path, line, raw_record)[0] is not None
        for path, line, raw_record in readers.iter_records(inputs["pairs"]):
            valid += raw_io.validate_pair(path, line, raw_record)[0] is not None
        single[fmt] = time.time() - start
    if len({tuple(c) for c in counts.values()}) != 1:
        raise SystemExit(f"formats gave different counts: {counts}")
    emit(
        figure="read",
        source="synthetic",
        items=num_items,
        pairs=num_pairs,
        input_mb={k: round(v / 2**20, 1) for k, v in sizes.items()},
        jsonl_s=round(seconds["jsonl"], 2),
        parquet_s=round(seconds["parquet"], 2),
        csv_s=round(seconds["csv"], 2),
        ratio_parquet_to_jsonl=round(seconds["parquet"] / seconds["jsonl"], 2),
        ratio_csv_to_jsonl=round(seconds["csv"] / seconds["jsonl"], 2),
        jsonl_single_s=round(single["jsonl"], 2),
        parquet_single_s=round(single["parquet"], 2),
        csv_single_s=round(single["csv"], 2),
        ratio_parquet_to_jsonl_single=round(single["parquet"] / single["jsonl"], 2),
        records_per_format=counts["jsonl"],
    )


def read_json_seconds(raw_dir: str) -> float:
    """One process reading and parsing every input line: the floor of any job on this input."""
    start = time.time()
    for name in sorted(os.listdir(raw_dir)):
        if name.startswith(("items", "pairs")) and name.endswith(".jsonl"):
            with open(os.path.join(raw_dir, name), encoding="utf-8") as f:
                for line in f:
                    json.loads(line)
    return time.time() - start


def bench_mi(raw: str, data_dir: str, work_dir: str) -> None:
    schema = schema_lib.load(os.path.join(raw, "schema.json"))
    final = DataDir(data_dir).schema
    items = load_items(raw, schema)
    vocabularies = {}
    for f in final.sparse_features:
        with open(os.path.join(data_dir, f.vocab_file), encoding="utf-8") as vf:
            vocabularies[f.name] = [line.rstrip("\n") for line in vf]
    dense_stats = {f.name: (f.mean, f.std) for f in final.dense_features}

    start = time.time()
    expected = numpy_mi(items, schema, {k: set(v) for k, v in vocabularies.items()}, dense_stats)
    mi_numpy_s = time.time() - start

    id_name = schema.id_feature.name
    num_buckets = max(1, len(items) // 10_000)
    buckets = {}
    for item in items:
        bucket = batches.bucket_of(item[id_name], num_buckets)
        buckets.setdefault(bucket, []).append((item[id_name], item))
    codes = {
        name: {v: i for i, v in enumerate(values)}
        for name, values in vocabularies.items()
        if name != id_name
    }
    dense = {name: {"mean": m, "std": s} for name, (m, s) in dense_stats.items()}
    sums_path = os.path.join(work_dir, "mi_sums")
    options = PipelineOptions([])

    def timed(with_mi: bool) -> float:
        start = time.time()
        with beam.Pipeline(runner=pipeline.local_runner(options), options=options) as p:
            created = p | beam.Create(sorted(buckets.items()))
            if with_mi:
                out = created | mutual_information.ComputeMutualInformation(
                    schema,
                    codes=beam.pvalue.AsDict(p | "Codes" >> beam.Create(codes.items())),
                    dense_stats=beam.pvalue.AsDict(p | "Dense" >> beam.Create(dense.items())),
                )
                lines = out | beam.Map(lambda kv: repr((tuple(kv[0]), float(kv[1]))))
            else:
                lines = created | beam.Map(lambda bucket: repr(len(bucket[1])))
            # Through a file: the runner pickles closures, so a DoFn cannot fill a dict of ours.
            _ = lines | beam.io.WriteToText(sums_path, shard_name_template="")
        return time.time() - start

    # The stage alone: a pipeline that only creates and writes the same buckets is subtracted
    # (Create serialises the items into the pipeline, which the job never does).
    # Each ~20 s pipeline is timed 3 times, alternating, and the fastest run of each kept: the
    # stage is a few seconds of the difference, which one run of each under load can swamp.
    runs = {False: [], True: []}
    for _ in range(3):
        for with_mi in (False, True):
            runs[with_mi].append(timed(with_mi=with_mi))
    baseline_s = min(runs[False])
    mi_beam_s = min(runs[True]) - baseline_s
    with open(sums_path) as f:
        result = dict(ast.literal_eval(line) for line in f)
    os.remove(sums_path)
    beam_mi = np.array(
        mutual_information.finalize(schema.names, result, len(items))["mutual_information"]
    )
    with open(os.path.join(data_dir, "mutual_info.json")) as f:
        job_mi = np.array(json.load(f)["mutual_information"])
    # A difference at or below zero is within the noise: no ratio, rather than a 0 that "meets".
    ratio = mi_beam_s / max(mi_numpy_s, 1e-9) if mi_beam_s > 0 else None
    emit(
        figure="mutual_information",
        items=len(items),
        features=len(schema.features),
        mi_beam_s=round(mi_beam_s, 2),
        create_and_write_s=round(baseline_s, 2),
        mi_numpy_s=round(mi_numpy_s, 2),
        ratio=None if ratio is None else round(ratio, 2),
        goal_ratio=3,
        meets_goal=None if ratio is None else ratio <= 3,
        spread_s=round(max(runs[True]) - min(runs[True]), 2),
        max_abs_diff_beam_vs_numpy=float(np.abs(beam_mi - expected).max()),
        max_abs_diff_job_vs_numpy=float(np.abs(job_mi - expected).max()),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--raw_dir",
        default="runs/debian/raw",
        help="Raw input (items*.jsonl, pairs*.jsonl, schema.json); built from the Debian index "
        "(or the synthetic source with --synthetic_items) when missing.",
    )
    parser.add_argument("--work_dir", default="runs/bench", help="Scratch outputs.")
    parser.add_argument(
        "--synthetic_items",
        type=int,
        default=0,
        help="Build --raw_dir from the synthetic source with this many items (JSON Lines).",
    )
    parser.add_argument(
        "--synthetic_pairs", type=int, default=0, help="Pairs of the synthetic source."
    )
    parser.add_argument(
        "--synthetic_shards",
        type=int,
        default=8,
        help="Files per kind of the synthetic source (a line format is read one worker per file).",
    )
    parser.add_argument(
        "--modes",
        default="in_memory,multi_processing_2",
        help="Comma list of DirectRunner modes to time: in_memory, multi_processing_2.",
    )
    parser.add_argument(
        "--mi_only",
        action="store_true",
        help="Skip the whole-job runs; reuse <work_dir>/data_in_memory from an earlier run.",
    )
    parser.add_argument(
        "--read_only",
        action="store_true",
        help="Only the read figure (JSON Lines vs Parquet vs CSV on synthetic data).",
    )
    parser.add_argument("--read_items", type=int, default=50_000)
    parser.add_argument("--read_pairs", type=int, default=500_000)
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    if args.read_only:
        bench_read(args.work_dir, args.read_items, args.read_pairs)
        return
    raw = args.raw_dir
    if args.synthetic_items and not os.path.exists(os.path.join(raw, "schema.json")):
        synthetic.build(
            raw,
            num_items=args.synthetic_items,
            num_pairs=args.synthetic_pairs,
            num_shards=args.synthetic_shards,
        )
    raw = ensure_raw(raw)
    read_s = read_json_seconds(raw)
    emit(figure="read_json", raw_dir=raw, seconds=round(read_s, 2))
    all_modes = {
        "in_memory": [],
        "multi_processing_2": [
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ],
    }
    modes = [] if args.mi_only else args.modes.split(",")
    for mode in modes:
        out = os.path.join(args.work_dir, f"data_{mode}")
        config = pipeline.PreprocessConfig(
            items=os.path.join(raw, "items*.jsonl"),
            pairs=os.path.join(raw, "pairs*.jsonl"),
            schema=os.path.join(raw, "schema.json"),
            output_dir=out,
            overwrite=True,
        )
        start, cpu_start = time.time(), cpu_seconds()
        summary = pipeline.run(config, all_modes[mode])
        seconds = time.time() - start
        counts = summary["counts"]
        emit(
            figure="preprocess",
            mode=mode,
            seconds=round(seconds, 2),
            cpu_s=round(cpu_seconds() - cpu_start, 2),
            ratio_to_read_json=round(seconds / read_s, 1),
            goal_ratio=10,
            meets_goal=seconds <= 10 * read_s,
            pairs_per_s=round(counts["input_pairs"] / seconds, 1),
            items_per_s=round(counts["input_items"] / seconds, 1),
            items=counts["items"],
            pairs=counts["input_pairs"],
        )
    data_dir = os.path.join(args.work_dir, f"data_{modes[0] if modes else 'in_memory'}")
    bench_mi(raw, data_dir, args.work_dir)
    for mode in modes[1:]:
        shutil.rmtree(os.path.join(args.work_dir, f"data_{mode}"), ignore_errors=True)


if __name__ == "__main__":
    main()
