r"""Writes a built-in dataset in the raw input format (items, pairs, schema, README).

  python -m ssl_retrieval.sources --source=debian --output_dir=runs/debian/raw
  python -m ssl_retrieval.sources --source=synthetic --num_items=1000000 \
      --num_pairs=10000000 --num_shards=8 --output_dir=runs/synth/raw
  python -m ssl_retrieval.sources --source=linked --num_items=100000 --num_pairs=320000 \
      --output_dir=runs/linked/raw [--both_directions]
  python -m ssl_retrieval.sources --source=movielens --variant=1m-ratings --output_dir=runs/ml/raw
  python -m ssl_retrieval.sources --source=debian --format=parquet --output_dir=runs/debian/pq
"""

from absl import app, flags

from ssl_retrieval import cli
from ssl_retrieval.sources import SOURCES

SOURCE = flags.DEFINE_enum("source", None, SOURCES, "Which built-in dataset to write.")
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to create; must not exist with content unless --overwrite."
)
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing --output_dir (removed only once the new one is done)."
)
NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 1, "Shards per file kind (items-00000-of-0000N.jsonl when > 1)."
)
FORMAT = flags.DEFINE_enum(
    "format",
    "jsonl",
    ["jsonl", "parquet", "csv"],
    "File format of items and pairs: JSON Lines, Parquet, or CSV with a header (multi_hot values "
    "joined by '|'). pipelines.preprocess reads all three.",
)
# debian
PACKAGES_FILE = flags.DEFINE_list(
    "packages_file",
    None,
    "debian: Packages index file(s), plain or .gz/.xz/.bz2/.lz4, comma separated. "
    "Default: every /var/lib/apt/lists/*_Packages* on this machine.",
)
STRICT = flags.DEFINE_bool(
    "strict",
    False,
    "debian: fail on the first malformed stanza instead of skipping and counting it.",
)
# movielens
VARIANT = flags.DEFINE_string(
    "variant", "1m-ratings", "movielens: TFDS config, e.g. 100k-ratings, 1m-ratings, 25m-ratings."
)
TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None, "movielens: TFDS data directory (default: TFDS's own)."
)
# synthetic
NUM_ITEMS = flags.DEFINE_integer("num_items", 10_000, "synthetic, linked: number of items.")
NUM_PAIRS = flags.DEFINE_integer(
    "num_pairs", 100_000, "synthetic, linked: number of pairs (links for linked)."
)
NUM_CLUSTERS = flags.DEFINE_integer(
    "num_clusters", None, "synthetic: latent item clusters (default about sqrt(num_items))."
)
ZIPF_EXPONENT = flags.DEFINE_float(
    "zipf_exponent", 1.1, "synthetic: Zipf exponent of candidate popularity within a cluster."
)
NOISE = flags.DEFINE_float(
    "noise", 0.1, "synthetic: probability that a pair's candidate is from a random cluster."
)
SEED = flags.DEFINE_integer(
    "seed", 0, "synthetic, linked: random seed; same arguments, same bytes."
)
# linked (sources/linked.py)
TOPIC_SIZE = flags.DEFINE_integer("topic_size", 40, "linked: mean items per latent topic.")
TOPIC_LINKS = flags.DEFINE_float(
    "topic_links", 0.6, "linked: probability that a link's other end is from the same topic."
)
GROUP_LINKS = flags.DEFINE_float(
    "group_links", 0.25, "linked: probability that it is from the same group (another topic)."
)
TOPIC_WORDS = flags.DEFINE_float(
    "topic_words", 0.5, "linked: probability that a title word is one of the topic's words."
)
ACTIVITY_SIGMA = flags.DEFINE_float(
    "activity_sigma", 1.4, "linked: sigma of the log-normal item activity (0 = uniform)."
)
BOTH_DIRECTIONS = flags.DEFINE_bool(
    "both_directions",
    False,
    "linked: write every link in both directions, (a, b) then (b, a): --num_pairs links make "
    "twice as many pairs. Preprocess such data with --split_by=link.",
)

flags.mark_flags_as_required(["source", "output_dir"])
SYNTHETIC_FLAGS = {
    "num_items": NUM_ITEMS,
    "num_pairs": NUM_PAIRS,
    "num_clusters": NUM_CLUSTERS,
    "zipf_exponent": ZIPF_EXPONENT,
    "noise": NOISE,
    "seed": SEED,
}


def _write() -> str:
    common = dict(num_shards=NUM_SHARDS.value, file_format=FORMAT.value, overwrite=OVERWRITE.value)
    if SOURCE.value == "debian":
        from ssl_retrieval.sources import debian

        summary = debian.build(
            OUTPUT_DIR.value, packages_files=PACKAGES_FILE.value, strict=STRICT.value, **common
        )
    elif SOURCE.value == "movielens":
        from ssl_retrieval.sources import movielens

        summary = movielens.build(
            OUTPUT_DIR.value, variant=VARIANT.value, tfds_data_dir=TFDS_DATA_DIR.value, **common
        )
    elif SOURCE.value == "linked":
        from ssl_retrieval.sources import linked

        summary = linked.build(
            OUTPUT_DIR.value,
            num_items=NUM_ITEMS.value,
            num_pairs=NUM_PAIRS.value,
            topic_size=TOPIC_SIZE.value,
            topic_links=TOPIC_LINKS.value,
            group_links=GROUP_LINKS.value,
            topic_words=TOPIC_WORDS.value,
            activity_sigma=ACTIVITY_SIGMA.value,
            seed=SEED.value,
            both_directions=BOTH_DIRECTIONS.value,
            **common,
        )
    else:
        from ssl_retrieval.sources import synthetic

        options = {name: holder.value for name, holder in SYNTHETIC_FLAGS.items()}
        summary = synthetic.build(OUTPUT_DIR.value, **options, **common)
    return (
        f"{SOURCE.value}: {summary['items']} items, {summary['pairs']} pairs -> {OUTPUT_DIR.value}"
    )


main = cli.main(_write)

if __name__ == "__main__":
    app.run(main)
