r"""Preprocesses raw items and pairs into the data directory the trainer reads.

  python -m pipelines.preprocess --items='runs/debian/raw/items*.jsonl' \
      --pairs='runs/debian/raw/pairs*.jsonl' --schema=runs/debian/raw/schema.json \
      --output_dir=runs/debian/data [--train_fraction=0.1] [--split_by=link] \
      [Beam pipeline options] [-v 1]

Items and pairs may be JSON Lines, Parquet or CSV with a header (by file extension, or
--input_format), or BigQuery tables (--input_format=bigquery --items=PROJECT:DATASET.TABLE);
see pipelines/readers.py for the columns each format needs.

Flags not listed below must be Apache Beam pipeline options, which pass through to Beam
untouched, e.g. `--runner=DataflowRunner --project=... --region=... --temp_location=gs://...`,
`--runner=FlinkRunner --flink_master=...`, or for the local DirectRunner
`--direct_running_mode=multi_processing --direct_num_workers=2`. Any other flag (a typo such as
`--trian_fraction=0.1`) stops the run before it starts, naming the closest flag.

The job logs its own progress; Beam's logs show from WARNING, or all of them with `-v 1`.
"""

from absl import app, flags

from pipelines import pipeline
from ssl_retrieval import cli

# One flag per PreprocessConfig field: names, defaults, help and enums are the dataclass's.
FLAGS = cli.define_flags(
    pipeline.PreprocessConfig, required=("items", "pairs", "schema", "output_dir")
)


def parse_flags(argv):
    """Parses our flags; everything else is returned for Beam's PipelineOptions."""
    return flags.FLAGS(argv, known_only=True)


def _preprocess(beam_args: list[str]) -> str:
    config = cli.from_flags(pipeline.PreprocessConfig, FLAGS)
    summary = pipeline.run(config, beam_args)
    c = summary["counts"]
    return (
        f"preprocess: {c['items']} items, {c['train_pairs']} train, "
        f"{c.get('validation_pairs', 0)} validation and {c['eval_pairs']} eval pairs, "
        f"{c['error_records']} dead letters, in {summary['seconds']}s -> {config.output_dir}"
    )


main = cli.main(_preprocess, extra_args=True)

if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
