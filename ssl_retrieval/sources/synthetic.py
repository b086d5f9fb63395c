"""A seeded long-tail catalogue with real structure, for tests and scale runs.

Every item belongs to a latent cluster (item i is in cluster i mod C). Its features are noisy
functions of the cluster, so they are correlated with each other (mutual information has
something to find) and with the pairs (the main task has something to learn):

  brand     categorical, the cluster's brand with prob. 0.85, else any brand;
  category  categorical, a coarse function of the cluster (clusters_per_category clusters each);
  tags      multi-hot, 1-4 tags from the cluster's pool of 8, plus a global tag with prob. 0.2;
  title     multi-hot, a word tied to each tag plus 1-2 generic words;
  price     dense, log-normal around a per-category level.

Pairs: the query is uniform over items; with prob. 1 - noise the candidate is from the query's
cluster, else from a uniformly chosen cluster; within a cluster, candidates follow a Zipf law
over the item's rank (i // C) with exponent `zipf_exponent`, so a few items per cluster take most
links. Self-links are moved to the next item of the cluster.

Generation streams in chunks; each chunk has its own RNG seeded by (seed, kind, chunk index), so
the output depends only on the arguments, not on chunking or shard count, and memory is
O(chunk + num_items / num_clusters).
"""

from __future__ import annotations

import numpy as np

from ssl_retrieval.sources import jsonl

FEATURES = [
    {"name": "item_id", "kind": "id"},
    {"name": "brand", "kind": "categorical"},
    {"name": "category", "kind": "categorical"},
    {"name": "tags", "kind": "multi_hot"},
    {"name": "title", "kind": "multi_hot"},
    {"name": "price", "kind": "dense", "transform": "log"},
]
TAGS_PER_CLUSTER = 8
CHUNK = 100_000


def item_name(index: int) -> str:
    return f"i{index:08d}"


def _rng(seed: int, kind: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, chunk])


def _item_lines(start: int, stop: int, num_clusters: int, clusters_per_category: int, seed: int):
    rng = _rng(seed, 0, start // CHUNK)
    n = stop - start
    idx = np.arange(start, stop)
    cluster = idx % num_clusters
    brand = np.where(rng.random(n) < 0.85, cluster, rng.integers(num_clusters, size=n))
    category = cluster // clusters_per_category
    num_tags = rng.integers(1, 5, size=n)
    tag_pick = rng.integers(TAGS_PER_CLUSTER, size=(n, 4))
    global_tag = np.where(rng.random(n) < 0.2, rng.integers(20, size=n), -1)
    generic = rng.integers(200, size=(n, 2))
    num_generic = rng.integers(1, 3, size=n)
    price = np.exp(rng.normal(2.0 + (category % 5), 0.6, size=n))
    lines = []
    for r in range(n):
        c = int(cluster[r])
        tags = dict.fromkeys(f"t{c}_{int(t)}" for t in tag_pick[r, : num_tags[r]])
        if global_tag[r] >= 0:
            tags[f"g{int(global_tag[r])}"] = None
        words = dict.fromkeys(f"w{tag}" for tag in tags)
        for g in generic[r, : num_generic[r]]:
            words[f"x{int(g)}"] = None
        tag_list = ",".join(f'"{t}"' for t in tags)
        word_list = ",".join(f'"{w}"' for w in words)
        lines.append(
            f'{{"item_id":"{item_name(int(idx[r]))}","brand":"b{int(brand[r])}",'
            f'"category":"c{int(category[r])}","tags":[{tag_list}],"title":[{word_list}],'
            f'"price":{float(price[r]):.2f}}}'
        )
    return lines


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _pair_lines(
    chunk: int, n: int, num_items: int, num_clusters: int, cdf: np.ndarray, noise: float, seed: int
):
    rng = _rng(seed, 1, chunk)
    query = rng.integers(num_items, size=n)
    cluster = np.where(
        rng.random(n) < noise, rng.integers(num_clusters, size=n), query % num_clusters
    )
    # Ranks beyond the cluster's last item wrap around (clusters differ in size by at most one).
    rank = np.searchsorted(cdf, rng.random(n), side="right")
    cand = cluster + num_clusters * rank
    cand = np.where(cand >= num_items, cluster, cand)
    self_link = cand == query
    cand = np.where(self_link, (cand + num_clusters) % num_items, cand)
    return jsonl.pair_lines(query, cand, item_name)


def build(
    output_dir: str,
    num_items: int = 10_000,
    num_pairs: int = 100_000,
    num_clusters: int | None = None,
    clusters_per_category: int = 10,
    zipf_exponent: float = 1.1,
    noise: float = 0.1,
    seed: int = 0,
    num_shards: int = 1,
    file_format: str = jsonl.JSONL,
    overwrite: bool = False,
) -> dict:
    """Writes a synthetic dataset (items, pairs, schema, README) into `output_dir`.

    Args:
      num_items, num_pairs: sizes (streams; 1M items and 10M pairs take minutes).
      num_clusters: latent clusters; default about sqrt(num_items), at least 2.
      clusters_per_category: clusters sharing one `category` value.
      zipf_exponent: candidate popularity skew within a cluster (> 0).
      noise: probability that a pair's candidate comes from a random cluster.
      seed: the output depends only on the arguments (byte-identical for the same ones).
      output_dir, num_shards, file_format, overwrite: as for every source (`jsonl.write_dataset`).

    Returns:
      The summary dict (also in `summary.json` and README.md).
    """
    jsonl.check_format(file_format)
    if num_items < 2:
        raise ValueError(f"--num_items must be >= 2, got {num_items}")
    if num_pairs < 1:
        raise ValueError(f"--num_pairs must be >= 1, got {num_pairs}")
    if zipf_exponent <= 0:
        raise ValueError(f"--zipf_exponent must be > 0, got {zipf_exponent}")
    if not 0 <= noise <= 1:
        raise ValueError(f"--noise must be in [0, 1], got {noise}")
    if num_clusters is None:
        num_clusters = max(2, int(round(num_items**0.5)))
    if not 1 <= num_clusters <= num_items // 2:
        raise ValueError(f"--num_clusters must be in [1, num_items / 2], got {num_clusters}")
    if clusters_per_category < 1:
        raise ValueError(f"--clusters_per_category must be >= 1, got {clusters_per_category}")
    cluster_size = -(-num_items // num_clusters)
    cdf = _zipf_cdf(cluster_size, zipf_exponent)

    def items():
        for _, start, stop in jsonl.chunks(num_items, CHUNK, "synthetic", "items"):
            yield _item_lines(start, stop, num_clusters, clusters_per_category, seed)

    def pairs():
        for chunk, start, stop in jsonl.chunks(num_pairs, CHUNK, "synthetic", "pairs"):
            yield _pair_lines(chunk, stop - start, num_items, num_clusters, cdf, noise, seed)

    summary = {
        "source": "synthetic",
        "items": num_items,
        "pairs": num_pairs,
        "num_clusters": num_clusters,
        "clusters_per_category": clusters_per_category,
        "zipf_exponent": zipf_exponent,
        "noise": noise,
        "seed": seed,
    }
    notes = (
        "Generated by `python -m ssl_retrieval.sources --source=synthetic`; see the "
        "docstring of ssl_retrieval/sources/synthetic.py for the generative model."
    )
    return jsonl.write_dataset(
        output_dir,
        FEATURES,
        items(),
        pairs(),
        lambda *_: ("Synthetic long-tail catalogue", summary, notes),
        file_format,
        num_shards,
        overwrite,
    )
