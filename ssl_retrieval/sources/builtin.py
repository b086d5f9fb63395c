"""The built-in sources by name: their options, one dataclass, and `build(config)`.

`python -m ssl_retrieval.sources` defines its flags from `SourceConfig` and calls `build`; each
source's module (debian.py, movielens.py, synthetic.py, linked.py) is imported only when it is
the one asked for (movielens imports TFDS).
"""

from __future__ import annotations

import dataclasses

from ssl_retrieval.cli import option

SOURCES = ("debian", "movielens", "synthetic", "linked")

# The options each source reads beyond the common ones (output_dir, num_shards, format,
# overwrite), named as SourceConfig fields and as the arguments of the source's `build`.
OPTIONS = {
    "debian": ("packages_file", "strict"),
    "movielens": ("variant", "tfds_data_dir"),
    "synthetic": ("num_items", "num_pairs", "num_clusters", "zipf_exponent", "noise", "seed"),
    "linked": (
        "num_items",
        "num_pairs",
        "topic_size",
        "topic_links",
        "group_links",
        "topic_words",
        "activity_sigma",
        "seed",
        "both_directions",
    ),
}
# The SourceConfig fields whose `build` argument is named otherwise.
_ARGUMENTS = {"packages_file": "packages_files", "format": "file_format"}


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """What to write: the flags of `python -m ssl_retrieval.sources` (the prefix of a help text
    says which sources read the option)."""

    source: str = option(help="Which built-in dataset to write.", enum=SOURCES)
    output_dir: str = option(
        help="Directory to create; must not exist with content unless --overwrite."
    )
    overwrite: bool = option(
        False, "Replace an existing --output_dir (removed only once the new one is done)."
    )
    num_shards: int = option(1, "Shards per file kind (items-00000-of-0000N.jsonl when > 1).")
    format: str = option(
        "jsonl",
        "File format of items and pairs: JSON Lines, Parquet, or CSV with a header (multi_hot "
        "values joined by '|'). pipelines.preprocess reads all three.",
        enum=("jsonl", "parquet", "csv"),
    )
    packages_file: tuple[str, ...] | None = option(
        None,
        "debian: Packages index file(s), plain or .gz/.xz/.bz2/.lz4, comma separated. "
        "Default: every /var/lib/apt/lists/*_Packages* on this machine.",
    )
    strict: bool = option(
        False, "debian: fail on the first malformed stanza instead of skipping and counting it."
    )
    variant: str = option(
        "1m-ratings", "movielens: TFDS config, e.g. 100k-ratings, 1m-ratings, 25m-ratings."
    )
    tfds_data_dir: str | None = option(
        None, "movielens: TFDS data directory (default: TFDS's own)."
    )
    num_items: int = option(10_000, "synthetic, linked: number of items.")
    num_pairs: int = option(100_000, "synthetic, linked: number of pairs (links for linked).")
    num_clusters: int | None = option(
        None, "synthetic: latent item clusters (default about sqrt(num_items))."
    )
    zipf_exponent: float = option(
        1.1, "synthetic: Zipf exponent of candidate popularity within a cluster."
    )
    noise: float = option(
        0.1, "synthetic: probability that a pair's candidate is from a random cluster."
    )
    seed: int = option(0, "synthetic, linked: random seed; same arguments, same bytes.")
    topic_size: int = option(40, "linked: mean items per latent topic.")
    topic_links: float = option(
        0.6, "linked: probability that a link's other end is from the same topic."
    )
    group_links: float = option(
        0.25, "linked: probability that it is from the same group (another topic)."
    )
    topic_words: float = option(
        0.5, "linked: probability that a title word is one of the topic's words."
    )
    activity_sigma: float = option(
        1.4, "linked: sigma of the log-normal item activity (0 = uniform)."
    )
    both_directions: bool = option(
        False,
        "linked: write every link in both directions, (a, b) then (b, a): --num_pairs links "
        "make twice as many pairs. Preprocess such data with --split_by=link.",
    )


def build(config: SourceConfig) -> dict:
    """Writes the source `config.source` into `config.output_dir`; returns its summary
    (`items`, `pairs`, ...).

    Raises:
      ValueError: an unknown source, or what the source refuses (naming the file or option).
    """
    if config.source not in OPTIONS:
        raise ValueError(f"--source must be one of {', '.join(SOURCES)}, got {config.source!r}")
    arguments = {
        _ARGUMENTS.get(name, name): getattr(config, name)
        for name in (*OPTIONS[config.source], "num_shards", "format", "overwrite")
    }
    if config.source == "debian":
        from ssl_retrieval.sources import debian as source  # noqa: PLC0415
    elif config.source == "movielens":
        from ssl_retrieval.sources import movielens as source  # noqa: PLC0415  (imports TFDS)
    elif config.source == "linked":
        from ssl_retrieval.sources import linked as source  # noqa: PLC0415
    else:
        from ssl_retrieval.sources import synthetic as source  # noqa: PLC0415
    return source.build(config.output_dir, **arguments)
