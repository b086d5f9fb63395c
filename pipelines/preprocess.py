r"""Preprocesses raw items and pairs into the data directory the trainer reads.

  python -m pipelines.preprocess --items='runs/debian/raw/items*.jsonl' \
      --pairs='runs/debian/raw/pairs*.jsonl' --schema=runs/debian/raw/schema.json \
      --output_dir=runs/debian/data [--train_fraction=0.1] [Beam pipeline options]

Items and pairs may be JSON Lines, Parquet or CSV with a header (by file extension, or
--input_format), or BigQuery tables (--input_format=bigquery --items=PROJECT:DATASET.TABLE);
see pipelines/readers.py for the columns each format needs.

Flags not listed below pass through to Apache Beam untouched, e.g. `--runner=DataflowRunner
--project=... --region=... --temp_location=gs://...`, `--runner=FlinkRunner`, or for the local
DirectRunner `--direct_running_mode=multi_processing --direct_num_workers=2`.
"""

import logging
import sys

from absl import app, flags

from pipelines import preprocess_lib

ITEMS = flags.DEFINE_string(
    "items", None, "Glob of the raw item files (or PROJECT:DATASET.TABLE with bigquery)."
)
PAIRS = flags.DEFINE_string(
    "pairs", None, "Glob of the raw pair files (or PROJECT:DATASET.TABLE with bigquery)."
)
INPUT_FORMAT = flags.DEFINE_enum(
    "input_format",
    "auto",
    ["auto", "jsonl", "parquet", "csv", "bigquery"],
    "Format of --items and --pairs; auto: by file extension (.parquet/.pq, .csv, else JSON Lines).",
)
CSV_LIST_SEPARATOR = flags.DEFINE_string(
    "csv_list_separator", "|", "CSV input: separator of the values in a multi_hot cell."
)
SCHEMA = flags.DEFINE_string("schema", None, "Dataset schema JSON (feature names and kinds).")
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Data directory to create (written to a temporary sibling, then renamed)."
)
EVAL_FRACTION = flags.DEFINE_float(
    "eval_fraction", 0.1, "Share of pairs held out for evaluation, chosen by a hash of the pair."
)
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction",
    0.05,
    "Share of the non-eval pairs held out for validation (model selection, tuning), chosen by "
    "another hash of the pair; the same pairs at every --train_fraction.",
)
TRAIN_FRACTION = flags.DEFINE_float(
    "train_fraction",
    1.0,
    "Share of training pairs kept (e.g. 0.1, 0.01 for the data-sparsity study); eval untouched.",
)
MAX_ERROR_FRACTION = flags.DEFINE_float(
    "max_error_fraction", 0.01, "Fail if invalid records exceed this share of input records."
)
HEAD_FRACTION = flags.DEFINE_float(
    "head_fraction", 0.1, "Share of distinct training candidates (most frequent) in the head slice."
)
MAX_VOCAB = flags.DEFINE_integer(
    "max_vocab", None, "Default vocabulary cap for features whose schema sets no max_vocab."
)
MIN_COUNT = flags.DEFINE_integer(
    "min_count", None, "Default minimum item count for features whose schema sets no min_count."
)
NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 0, "Shards of train-*; eval-* and items-* scale from it. 0 = from input size."
)
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing --output_dir once the new one is complete."
)

flags.mark_flags_as_required(["items", "pairs", "schema", "output_dir"])


def parse_flags(argv):
    """Parses our flags; everything else is returned for Beam's PipelineOptions."""
    return flags.FLAGS(argv, known_only=True)


def main(argv):
    logging.getLogger().setLevel(logging.INFO)
    beam_args = list(argv[1:])
    try:
        config = preprocess_lib.PreprocessConfig(
            items=ITEMS.value,
            pairs=PAIRS.value,
            schema=SCHEMA.value,
            output_dir=OUTPUT_DIR.value,
            eval_fraction=EVAL_FRACTION.value,
            validation_fraction=VALIDATION_FRACTION.value,
            train_fraction=TRAIN_FRACTION.value,
            max_error_fraction=MAX_ERROR_FRACTION.value,
            head_fraction=HEAD_FRACTION.value,
            max_vocab=MAX_VOCAB.value,
            min_count=MIN_COUNT.value,
            num_shards=NUM_SHARDS.value,
            overwrite=OVERWRITE.value,
            input_format=INPUT_FORMAT.value,
            csv_list_separator=CSV_LIST_SEPARATOR.value,
        )
        summary = preprocess_lib.run(config, beam_args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    c = summary["counts"]
    print(
        f"preprocess: {c['items']} items, {c['train_pairs']} train, "
        f"{c.get('validation_pairs', 0)} validation and {c['eval_pairs']} eval pairs, {c['error_records']} dead letters, in {summary['seconds']}s -> {OUTPUT_DIR.value}"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
