r"""Writes a built-in dataset in the raw input format (items, pairs, schema, README).

  python -m ssl_retrieval.sources --source=debian --output_dir=runs/debian/raw
  python -m ssl_retrieval.sources --source=synthetic --num_items=1000000 \
      --num_pairs=10000000 --num_shards=8 --output_dir=runs/synth/raw
  python -m ssl_retrieval.sources --source=linked --num_items=100000 --num_pairs=320000 \
      --output_dir=runs/linked/raw [--both_directions]
  python -m ssl_retrieval.sources --source=movielens --variant=1m-ratings --output_dir=runs/ml/raw
  python -m ssl_retrieval.sources --source=debian --format=parquet --output_dir=runs/debian/pq
"""

from absl import app

from ssl_retrieval import cli
from ssl_retrieval.sources import builtin

# One flag per SourceConfig field: names, defaults, help and enums are the dataclass's.
FLAGS = cli.define_flags(builtin.SourceConfig, required=("source", "output_dir"))


def _write() -> str:
    config = cli.from_flags(builtin.SourceConfig, FLAGS)
    summary = builtin.build(config)
    counts = f"{summary['items']} items, {summary['pairs']} pairs"
    return f"{config.source}: {counts} -> {config.output_dir}"


main = cli.main(_write)

if __name__ == "__main__":
    app.run(main)
