"""The preprocessing job: raw items and pairs in, a data directory the trainer reads out.

Stages (one composite PTransform each): read (readers: JSON Lines, Parquet, CSV or BigQuery) and
validate (raw_io), vocabularies and dense statistics (vocabulary), mutual information
(mutual_information), pair join + split + encoding (pairs; with the side-input join also the
pairs' writer, which encodes them as it writes), deterministic sharded writing (writers), slice
statistics (stats). The driver then assembles the small JSON files (schema.json,
mutual_info.json, stats.json, README.md) from the pipeline's small outputs and moves the finished
directory into place.

The job writes into `.<output_dir>.tmp-<random>` and renames it at the end: an interrupted or failed
run never leaves a half-written output directory, and an existing one is replaced only with
`overwrite=True`, after the new one is complete. The temporary directory of a killed run is
removed by the next run on the same output directory (`tmp_dirs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import glob
import json
import logging
import math
import os
import shutil
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import (
    batches,
    beam_options,
    mutual_information,
    raw_io,
    readers,
    stats,
    tmp_dirs,
    vocabulary,
    writers,
)
from pipelines.pairs import (
    EVAL,
    PAIR,
    SPLIT_BY,
    TRAIN,
    VALIDATION,
    EncodeItems,
    JoinPairs,
    LookupPairs,
    WritePairShards,
    catalogue_entries,
    catalogue_ids,
)
from ssl_retrieval import atomic
from ssl_retrieval import data_dir as data_dir_lib
from ssl_retrieval import schema as schema_lib
from ssl_retrieval.cli import option

TARGET_SHARD_BYTES = 64 << 20
AUTO_JOIN, SIDE_INPUT, SHUFFLE = "auto", "side_input", "shuffle"
JOINS = (AUTO_JOIN, SIDE_INPUT, SHUFFLE)
# --join=auto: the side-input join while the items' input (as JSON) is at most this big.
SIDE_INPUT_JOIN_BYTES = 2 << 30
META = "_meta"
COUNTS = (
    "train_pairs",
    "eval_pairs",
    "validation_pairs",
    "items",
    "error_records",
    "input_items",
    "input_pairs",
    "downsampled_pairs",
)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Options of one preprocessing run (the CLI flags, validated).

    Attributes:
      items, pairs: globs of the raw input files (a BigQuery table with input_format "bigquery").
      schema: path of the dataset schema JSON.
      output_dir: the data directory to create.
      eval_fraction: share of pairs (by pair hash) held out for evaluation (the test split).
      split_by: "pair" (each pair hashed on its own) or "link" (a pair and its reverse hashed
        together: same split, kept or dropped together by train_fraction).
      validation_fraction: share of the remaining pairs (by another hash) held out for model
        selection and tuning; the same pairs at every train_fraction.
      train_fraction: share of training pairs kept (data-sparsity study); eval is untouched.
      max_error_fraction: fail if dead letters exceed this share of input records.
      head_fraction: share of distinct training candidates that form the head slice.
      max_vocab, min_count: defaults for features whose schema does not set them.
      num_shards: shards of train-* (eval and items scale from it); 0 = from the input size.
      overwrite: replace an existing output directory.
      input_format: "auto" (by file extension), "jsonl", "parquet", "csv" or "bigquery".
      csv_list_separator: separator of the values of a multi-hot CSV cell.
    """

    items: str = option(help="Glob of the raw item files (or PROJECT:DATASET.TABLE with bigquery).")
    pairs: str = option(help="Glob of the raw pair files (or PROJECT:DATASET.TABLE with bigquery).")
    schema: str = option(help="Dataset schema JSON (feature names and kinds).")
    output_dir: str = option(
        help="Data directory to create (written to a temporary sibling, then renamed)."
    )
    eval_fraction: float = option(
        0.1, "Share of pairs held out for evaluation, chosen by a hash of the pair."
    )
    split_by: str = option(
        PAIR,
        "What the split hashes: pair (query, candidate), or link (the unordered pair: a pair and "
        "its reverse fall in the same split and --train_fraction keeps or drops them together). "
        "Use link when links come in both directions: with pair, eval pairs whose reverse is in "
        "training can be recalled without generalising (stats.json reports their share).",
        enum=SPLIT_BY,
    )
    validation_fraction: float = option(
        0.05,
        "Share of the non-eval pairs held out for validation (model selection, tuning), chosen by "
        "another hash of the pair; the same pairs at every --train_fraction.",
    )
    train_fraction: float = option(
        1.0,
        "Share of training pairs kept (e.g. 0.1, 0.01 for the data-sparsity study); eval untouched.",
    )
    max_error_fraction: float = option(
        0.01, "Fail if invalid records exceed this share of input records."
    )
    head_fraction: float = option(
        0.1, "Share of distinct training candidates (most frequent) in the head slice."
    )
    max_vocab: int | None = option(
        None, "Default vocabulary cap for features whose schema sets no max_vocab."
    )
    min_count: int | None = option(
        None, "Default minimum item count for features whose schema sets no min_count."
    )
    num_shards: int = option(
        0, "Shards of train-*; eval-* and items-* scale from it. 0 = from input size."
    )
    overwrite: bool = option(
        False, "Replace an existing --output_dir once the new one is complete."
    )
    input_format: str = option(
        readers.AUTO,
        "Format of --items and --pairs; auto: by file extension (.parquet/.pq, .csv, else JSON "
        "Lines).",
        enum=readers.FORMATS,
    )
    join: str = option(
        AUTO_JOIN,
        "How pairs meet their items' features: side_input (every encoded item in each worker's "
        "memory, under 1 KB an item; no shuffle of pairs or Examples), shuffle (pairs grouped "
        "with their items' buckets, twice; any catalogue size), or auto: side_input when the "
        "items' input is at most 2 GB of JSON (millions of items), else shuffle. The outputs are "
        "the same.",
        enum=JOINS,
    )
    csv_list_separator: str = option(
        readers.DEFAULT_CSV_LIST_SEPARATOR,
        "CSV input: separator of the values in a multi_hot cell.",
    )

    def __post_init__(self):
        checks = [
            (0.0 <= self.eval_fraction < 1.0, "--eval_fraction must be in [0, 1)"),
            (
                0.0 <= self.validation_fraction < 1.0,
                "--validation_fraction must be in [0, 1)",
            ),
            (0.0 < self.train_fraction <= 1.0, "--train_fraction must be in (0, 1]"),
            (0.0 <= self.max_error_fraction <= 1.0, "--max_error_fraction must be in [0, 1]"),
            (0.0 < self.head_fraction <= 1.0, "--head_fraction must be in (0, 1]"),
            (self.max_vocab is None or self.max_vocab >= 1, "--max_vocab must be >= 1"),
            (self.min_count is None or self.min_count >= 1, "--min_count must be >= 1"),
            (self.num_shards >= 0, "--num_shards must be >= 0 (0 = automatic)"),
            (self.join in JOINS, f"--join={self.join!r} is not one of {list(JOINS)}"),
            (
                self.split_by in SPLIT_BY,
                f"--split_by={self.split_by!r} is not one of {list(SPLIT_BY)}",
            ),
            (
                self.input_format in readers.FORMATS,
                f"--input_format={self.input_format!r} is not one of {list(readers.FORMATS)}",
            ),
            (
                self.input_format != readers.BIGQUERY or self.num_shards > 0,
                "--num_shards is required with --input_format=bigquery (the job cannot see a "
                "table's size to choose it)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _join_of(config: PreprocessConfig, items: readers.InputSource) -> str:
    if config.join != AUTO_JOIN:
        return config.join
    size = items.estimated_bytes
    return SIDE_INPUT if size is not None and size <= SIDE_INPUT_JOIN_BYTES else SHUFFLE


def _shard_counts(items: readers.InputSource, pairs: readers.InputSource, num_shards: int):
    # Sizes are of the input as JSON Lines (estimated for other formats); None for a table.
    if num_shards:
        train = num_shards
    else:
        # A pair Example carries both items' features: about 25x its JSON line.
        train = max(1, math.ceil(pairs.estimated_bytes * 25 / TARGET_SHARD_BYTES))
    if items.estimated_bytes is None:
        num_items = max(1, train // 9)
    else:
        num_items = max(1, math.ceil(items.estimated_bytes * 1.5 / TARGET_SHARD_BYTES))
    return {
        TRAIN: train,
        EVAL: max(1, train // 9),
        VALIDATION: max(1, train // 18),
        "items": num_items,
        # As many item buckets as train shards: the same count for every input format
        # whenever the shards agree (the float sums of the MI depend on how items are
        # bucketed, in their last bits), and a few thousand items per bucket.
        "buckets": train,
    }


def local_runner(options: PipelineOptions):
    """Beam's in-process FnApiRunner when the user asked for the DirectRunner (or nothing).

    Beam 2.77's DirectRunner first tries to download the Prism runner, which fails offline and
    costs a network attempt per run; the FnApiRunner is what it falls back to, and it honours
    `--direct_num_workers` and `--direct_running_mode`. Any other `--runner` is left to Beam.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return None


@contextlib.contextmanager
def _fewer_collections():
    """`batches.collect_less` while the job runs in this process (the local runner), undone
    after."""
    previous = gc.get_threshold()
    batches.collect_less()
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _write_meta(named: dict, directory: str):
    """The pipeline's small outputs as one JSON Lines file of [name, value], read by `_read_meta`.

    One gather for all of them: each global combine costs the local runner several stages.
    """

    def write(values):
        lines = sorted(json.dumps(x, sort_keys=True) for x in values)
        with FileSystems.create(FileSystems.join(directory, META, "meta.jsonl")) as f:
            f.write("".join(line + "\n" for line in lines).encode("utf-8"))

    tagged = [
        pcoll | f"Name{name}" >> beam.Map(lambda value, name=name: (name, value))
        for name, pcoll in named.items()
    ]
    return (
        tagged
        | "AllMeta" >> beam.Flatten()
        | "GatherMeta" >> beam.combiners.ToList()
        | "WriteMeta" >> beam.Map(write)
    )


def _read_meta(directory: str, name: str) -> list:
    path = os.path.join(directory, META, "meta.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [value for key, value in map(json.loads, filter(str.strip, f)) if key == name]


def _join_and_write_pairs(config: PreprocessConfig, pairs, encoded, join: str, shards, out: str):
    """Pairs meet their items' features, are split and written (`join`: SIDE_INPUT or SHUFFLE).

    Returns (the join's outputs, (name, records) per written shard, the side input of catalogue
    ids when candidates are item indices, else None).
    """
    split_shards = {split: shards[split] for split in (TRAIN, EVAL, VALIDATION)}
    fractions = (config.eval_fraction, config.train_fraction, config.validation_fraction)
    if join == SIDE_INPUT:
        ids = beam.pvalue.AsList(encoded | "CatalogueIds" >> beam.Map(catalogue_ids))
        entries = beam.pvalue.AsList(encoded | "CatalogueEntries" >> beam.Map(catalogue_entries))
        joined = pairs | "LookupPairs" >> LookupPairs(
            ids, *fractions, shards=split_shards, split_by=config.split_by
        )
        # (name, records) per shard of the three splits
        pair_counts = joined["pairs"] | "WritePairs" >> WritePairShards(
            out, split_shards, ids, entries
        )
        return joined, pair_counts, ids  # LookupPairs gives the candidates as item indices
    joined = {"pairs": pairs, "items": encoded} | "JoinPairs" >> JoinPairs(
        *fractions, num_buckets=shards["buckets"], split_by=config.split_by
    )
    pair_counts = [
        joined[split]
        | f"Write{split.capitalize()}" >> writers.WriteSortedShards(out, split, n)
        | f"Count_{split}_pairs" >> beam.Map(lambda n, name=f"{split}_pairs": (name, n))
        for split, n in split_shards.items()
    ] | "AllPairCounts" >> beam.Flatten()
    return joined, pair_counts, None


def build_pipeline(p: beam.Pipeline, config: PreprocessConfig, schema, inputs, shards, out: str):
    """Adds the whole job to pipeline `p`, writing into directory `out`.

    `inputs` maps "items" and "pairs" to their `readers.InputSource`.
    """
    lines_items = p | "ReadItems" >> readers.ReadRecords(inputs["items"])
    lines_pairs = p | "ReadPairs" >> readers.ReadRecords(inputs["pairs"])
    parsed_items = lines_items | "ParseItems" >> raw_io.ParseItems(schema, shards["buckets"])
    parsed_pairs = lines_pairs | "ParsePairs" >> raw_io.ParsePairs()
    items = parsed_items["items"]

    vocab = items | "Vocabularies" >> vocabulary.ComputeVocabularies(
        schema, out, config.max_vocab, config.min_count
    )
    dense = items | "DenseStats" >> vocabulary.ComputeDenseStats(schema)
    mi_sums = items | "MutualInformation" >> mutual_information.ComputeMutualInformation(
        schema,
        codes=beam.pvalue.AsDict(vocab["codes"]),
        dense_stats=beam.pvalue.AsDict(dense),
    )
    encoded = items | "EncodeItems" >> EncodeItems(schema)
    item_records = encoded | "ItemRecords" >> beam.Map(
        lambda bucket: [(item_id, example) for item_id, example, _, _ in bucket[1]]
    )
    joined, pair_counts, candidate_ids = _join_and_write_pairs(
        config, parsed_pairs["pairs"], encoded, _join_of(config, inputs["items"]), shards, out
    )
    item_count = item_records | "WriteItems" >> writers.WriteSortedShards(
        out, "items", shards["items"]
    )
    slice_stats = {
        "train_candidates": joined["train_candidates"],
        "eval_candidates": joined["eval_candidates"],
    } | "SliceStats" >> stats.ComputeSliceStats(out, config.head_fraction, ids=candidate_ids)
    # A few million links a bucket (9 bytes each): the count scales out like the rest.
    link_buckets = max(1, math.ceil(shards[TRAIN] / 64))
    reverse = joined["links"] | "ReverseLinks" >> stats.CountReverseLinks(link_buckets)

    errors = (
        parsed_items[raw_io.ERRORS],
        parsed_pairs[raw_io.ERRORS],
        joined[raw_io.ERRORS],
    ) | "AllErrors" >> beam.Flatten()
    error_records = errors | "ErrorRecords" >> beam.Map(
        lambda e: [(f"{e['file']}\x1f{e['line']:012d}", json.dumps(e, sort_keys=True).encode())]
    )
    error_count = error_records | "WriteErrors" >> writers.WriteSortedShards(
        FileSystems.join(out, "errors"), "errors", 1, tfrecord=False, order="key"
    )

    def num_values(element):
        _, bucket = element
        for f in schema.sparse_features:
            yield (
                f.name,
                sum(
                    0 if (v := item.get(f.name)) is None else (1 if isinstance(v, str) else len(v))
                    for _, item in bucket
                ),
            )

    def count(name, pcoll, size=len):
        """(name, records of one batch) per batch; _finish adds them up."""
        return pcoll | f"Count_{name}" >> beam.Map(lambda batch: (name, size(batch)))

    meta = {
        "vocab": vocab["sizes"],
        "dense": dense,
        "mi": mi_sums | "MiKeys" >> beam.Map(lambda kv: (list(kv[0]), kv[1])),
        "num_values": items
        | "NumValues" >> beam.FlatMap(num_values)
        | "SumNumValues" >> beam.CombinePerKey(sum),
        "slices": slice_stats,
        "reverse": reverse,
        "counts": (
            pair_counts,
            count("items", item_count, int),
            count("error_records", error_count, int),
            count("input_items", lines_items),
            count("input_pairs", lines_pairs),
            count("downsampled_pairs", joined["downsampled"], int),
        )
        | "AllCounts" >> beam.Flatten(),
    }
    _write_meta(meta, out)


def _final_schema(schema, meta_vocab, meta_dense, meta_num_values, counts, shards, num_items):
    vocab = dict((k, v) for k, v in meta_vocab)
    dense = dict((k, v) for k, v in meta_dense)
    num_values = dict((k, v) for k, v in meta_num_values)
    features = []
    for f in schema.features:
        if f.is_sparse:
            features.append(
                dataclasses.replace(
                    f,
                    vocab_size=vocab.get(f.name, {}).get("vocab_size", 0),
                    vocab_file=data_dir_lib.vocab_file(f.name),
                    oov_buckets=f.oov_buckets or 1,
                    num_values_mean=num_values.get(f.name, 0) / max(num_items, 1),
                )
            )
        else:
            stats_ = dense.get(f.name, {"mean": 0.0, "std": 1.0})
            features.append(
                dataclasses.replace(
                    f, transform=f.dense_transform, mean=stats_["mean"], std=stats_["std"]
                )
            )
    files = {
        "train": f"train-*-of-{shards[TRAIN]:05d}.tfrecord",
        "eval": f"eval-*-of-{shards[EVAL]:05d}.tfrecord",
        "validation": f"validation-*-of-{shards[VALIDATION]:05d}.tfrecord",
        "items": f"items-*-of-{shards['items']:05d}.tfrecord",
    }
    return schema_lib.Schema(features=tuple(features), counts=counts, files=files)


README = """# Preprocessed data for ssl_retrieval

Written by `python -m pipelines.preprocess` from:
- items: `{items}`
- pairs: `{pairs}`
- schema: `{schema}`
(eval_fraction {eval_fraction}, validation_fraction {validation_fraction}, train_fraction
{train_fraction}, head_fraction {head_fraction}, split_by {split_by})

| file | what it is |
|---|---|
| `schema.json` | features in order with kinds, vocabulary sizes and files, OOV buckets, dense normalisation constants; record counts; file patterns. The trainer builds its input layer from it. |
| `vocab/<feature>.txt` | one value per line, most frequent first; line i is id i + oov_buckets. |
| `mutual_info.json` | k x k mutual information between features (nats) over the item corpus, entropies, and each feature's others ranked by MI. |
| `train-*.tfrecord`, `validation-*.tfrecord`, `eval-*.tfrecord` | tf.Example pairs: `query_<feature>`, `candidate_<feature>`, `weight`. Split by a hash of the pair (with split_by link, of the unordered pair, so a pair and its reverse share a split): eval is the test split (report on it), validation is for model selection and tuning (choose on it). Records are in the order of a hash of the pair, so any stretch of a file is a random sample. |
| `items-*.tfrecord` | the item corpus, one tf.Example per item (uniform item sampling, evaluation corpus, serving index). |
| `stats.json`, `stats/` | candidate counts in training, the head set and the cold set for head/tail evaluation. |
| `errors/` | dead letters: records that were skipped, with file, line, field and reason. |

## Counts

| | |
|---|---|
{count_rows}

{reverse_note}

## Mutual information (features ranked by MI with each feature)

{ranked}
"""


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def run(config: PreprocessConfig, beam_args: list[str] | None = None) -> dict:
    """Runs the job and returns a summary (counts, shards, seconds).

    Args:
      config: the run's options.
      beam_args: Beam pipeline options (`--runner=...`), each checked before any work.

    Raises:
      ValueError: bad configuration, an argument that is not a Beam option, unreadable input,
        or too many dead letters (the message names the counts and where the dead letters were
        kept).
    """
    own_flags = [f"--{field.name}" for field in dataclasses.fields(PreprocessConfig)]
    options = beam_options.pipeline_options(beam_args or [], own_flags)
    schema = schema_lib.load(config.schema)
    out_dir = config.output_dir
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not config.overwrite:
        raise ValueError(
            f"--output_dir={out_dir} exists and is not empty; pass --overwrite to replace it "
            "(only after the new one is complete)"
        )
    inputs = {
        name: readers.resolve(
            pattern, flag, config.input_format, columns, config.csv_list_separator
        )
        for name, pattern, flag, columns in (
            ("items", config.items, "--items", readers.item_columns(schema)),
            ("pairs", config.pairs, "--pairs", readers.pair_columns()),
        )
    }
    files = {name: list(source.files) for name, source in inputs.items()}
    for name, source in inputs.items():
        if (
            source.estimated_bytes == 0
        ):  # empty files (or Parquet without rows): fail before the job
            raise _no_records(config, name, len(source.files))
    shards = _shard_counts(inputs["items"], inputs["pairs"], config.num_shards)
    tmp_dirs.remove_stale(out_dir)
    tmp_dir = tmp_dirs.TmpDir(out_dir)
    tmp = tmp_dir.path
    os.makedirs(os.path.join(tmp, data_dir_lib.VOCAB_DIR))
    os.makedirs(os.path.join(tmp, data_dir_lib.STATS_DIR))
    os.makedirs(os.path.join(tmp, "errors"))
    start = time.time()
    try:
        logging.info(
            "preprocess: %d item files (%s), %d pair files (%s) -> %s (%s join, %d train shards)",
            len(files["items"]),
            inputs["items"].format,
            len(files["pairs"]),
            inputs["pairs"].format,
            out_dir,
            _join_of(config, inputs["items"]),
            shards[TRAIN],
        )
        with (
            _fewer_collections(),
            beam.Pipeline(runner=local_runner(options), options=options) as p,
        ):
            build_pipeline(p, config, schema, inputs, shards, tmp)
        logging.info("preprocess: pipeline done in %.1fs; assembling metadata", time.time() - start)
        summary = _finish(config, schema, shards, tmp, files)
        tmp_dir.release()
    except BaseException:
        tmp_dir.remove()
        raise
    summary["seconds"] = round(time.time() - start, 2)
    atomic.replace_dir(tmp, out_dir, old=f"{tmp}.old")  # tmp_dirs recognises the .old name
    logging.info("preprocess: wrote %s", out_dir)
    return summary


def _no_records(config: PreprocessConfig, name: str, num_files: int) -> ValueError:
    pattern = config.items if name == "items" else config.pairs
    files = f"{num_files} file{'s' if num_files != 1 else ''}"
    return ValueError(
        f"no {name} in --{name}={pattern} ({files}, not one record); nothing was written to "
        f"{config.output_dir}"
    )


def _finish(config, schema, shards, tmp, files) -> dict:
    counts = dict.fromkeys(COUNTS, 0)
    for name, n in _read_meta(tmp, "counts"):
        counts[name] += n
    for name in ("items", "pairs"):
        if counts[f"input_{name}"] == 0:
            raise _no_records(config, name, len(files[name]))
    inputs = counts["input_items"] + counts["input_pairs"]
    if counts["error_records"] > config.max_error_fraction * inputs:
        kept = f"{config.output_dir}.errors"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(os.path.join(tmp, "errors"), kept)
        sample = _first_errors(kept, 3)
        raise ValueError(
            f"{counts['error_records']} of {inputs} input records are invalid "
            f"(more than --max_error_fraction={config.max_error_fraction}); nothing was written "
            f"to {config.output_dir}. The dead letters are in {kept}/; first ones:\n{sample}"
        )
    if counts["train_pairs"] == 0:
        raise ValueError(
            f"no training pairs: of {counts['input_pairs']} pairs read, {counts['eval_pairs']} "
            f"went to eval (--eval_fraction={config.eval_fraction}), "
            f"{counts['downsampled_pairs']} were dropped by --train_fraction="
            f"{config.train_fraction}, and the rest were dead letters; nothing was written to "
            f"{config.output_dir}"
        )
    names = schema.names
    mi_sums = {tuple(k): v for k, v in _read_meta(tmp, "mi")}
    mi = mutual_information.finalize(names, mi_sums, counts["items"])
    _write_json(os.path.join(tmp, data_dir_lib.MUTUAL_INFO), mi)
    final = _final_schema(
        schema,
        _read_meta(tmp, "vocab"),
        _read_meta(tmp, "dense"),
        _read_meta(tmp, "num_values"),
        {k: counts[k] for k in sorted(counts)},
        shards,
        counts["items"],
    )
    schema_lib.save(final, os.path.join(tmp, data_dir_lib.SCHEMA))
    slices = {}
    for d in _read_meta(tmp, "slices"):
        slices.update(d)
    reverse = reverse_links(counts, _read_meta(tmp, "reverse"), config.split_by)
    stats_json = {
        "num_items": counts["items"],
        "num_train_pairs": counts["train_pairs"],
        "num_eval_pairs": counts["eval_pairs"],
        "num_validation_pairs": counts.get("validation_pairs", 0),
        "num_train_candidates": slices.get("num_train_candidates", 0),
        "head_fraction": config.head_fraction,
        "num_head_items": slices.get("num_head_items", 0),
        "num_cold_items": slices.get("num_cold_items", 0),
        **reverse,
        "files": dict(data_dir_lib.STATS_FILES),
    }
    _write_json(os.path.join(tmp, data_dir_lib.STATS), stats_json)
    shutil.rmtree(os.path.join(tmp, META), ignore_errors=True)
    count_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items()))
    count_rows += "\n" + "\n".join(
        f"| {k} | {stats_json[k]} |" for k in ("num_head_items", "num_cold_items", *reverse)
    )
    ranked = "\n".join(f"- `{n}`: {', '.join(mi['ranked'][n])}" for n in names)
    with open(os.path.join(tmp, data_dir_lib.README), "w", encoding="utf-8") as f:
        f.write(
            README.format(
                **dataclasses.asdict(config),
                count_rows=count_rows,
                ranked=ranked,
                reverse_note=_reverse_note(reverse),
            )
        )
    return {
        "counts": counts,
        "reverse": reverse,
        "shards": shards,
        "files": {k: len(v) for k, v in files.items()},
    }


# Above this share of eval (or validation) pairs with their reverse in training, the job warns.
REVERSE_WARNING_SHARE = 0.1


def reverse_links(counts: dict, meta_reverse: list, split_by: str) -> dict:
    """The stats.json fields of the reverse-link leak: the split, and for eval and validation
    the pairs whose reverse pair is in training and their share of the split; logs a warning
    naming --split_by=link when a share is above `REVERSE_WARNING_SHARE`."""
    found = dict.fromkeys(stats.REVERSE_COUNTS, 0)
    for name, n in meta_reverse:
        found[name] += n
    fields = {"split_by": split_by}
    high = []
    for split in ("eval", "validation"):
        n, total = found[f"{split}_pairs_with_reverse_in_train"], counts[f"{split}_pairs"]
        share = round(n / total, 6) if total else 0.0
        fields[f"{split}_pairs_with_reverse_in_train"] = n
        fields[f"{split}_reverse_in_train_share"] = share
        if share > REVERSE_WARNING_SHARE:
            high.append(f"{100 * share:.1f}% of {split} pairs ({n} of {total})")
    if high:
        logging.warning(
            "preprocess: %s have their reverse pair in training: a model can recall them without "
            "generalising. If the data holds links in both directions, preprocess with "
            "--split_by=link (a pair and its reverse in the same split).",
            " and ".join(high),
        )
    return fields


def _reverse_note(reverse: dict) -> str:
    eval_share, validation_share = (
        100 * reverse[f"{split}_reverse_in_train_share"] for split in ("eval", "validation")
    )
    note = (
        f"Split by {reverse['split_by']}: {eval_share:.1f}% of eval pairs and "
        f"{validation_share:.1f}% of validation pairs have their reverse pair (candidate, query) "
        "in training."
    )
    if max(eval_share, validation_share) > 100 * REVERSE_WARNING_SHARE:
        note += (
            " A model can recall those without generalising: if the data holds links in both "
            "directions, preprocess with `--split_by=link`."
        )
    return note


def _first_errors(directory: str, n: int) -> str:
    lines = []
    for path in sorted(glob.glob(os.path.join(directory, "*"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                e = json.loads(line)
                lines.append(f"  {e['file']}:{e['line']}: field {e['field']!r}: {e['reason']}")
                if len(lines) >= n:
                    return "\n".join(lines)
    return "\n".join(lines)
