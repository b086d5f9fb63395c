"""A seeded catalogue of linked items: flat popularity, symmetric links, short-text features.

The second shape of catalogue the recipe must serve, beside the hub-dominated dependency graph
of Debian and the `synthetic` source: pages of a wiki, products of a store's "related items", apps
that are installed together. Links join items about the same thing, not a few hubs, and what
items are about shows in their words. A feature kNN is strong on such data and a recipe tuned on
a power-law graph alone can fail on it.

Every item has a latent topic (topics of about `topic_size` items, drawn at random) and every
topic belongs to a group of `topics_per_group` topics. Features:

  group     categorical, the topic's group with prob. 0.9, else any group;
  kind      categorical, 12 values, tied to the group with prob. 0.5, else any;
  title     multi-hot, 3-6 words: each from the topic's 12 words with prob. `topic_words`,
            else a common word (Zipf over 5,000);
  keywords  multi-hot, 1-3 tokens: the group's 30 keywords (prob. 0.6), the topic's 4 (0.3),
            or any of 300 global ones.

Links: one end is drawn by activity (log-normal with sigma `activity_sigma`, so popularity is
flat: the 50 most linked of 118k items hold about 2% of the links), the other from the
same topic with prob. `topic_links`, from the same group with prob. `group_links`, else from
anywhere, by the same activity. A link is written once with a random orientation, so the graph
is symmetric in law: `query_id` and `candidate_id` mean nothing apart. Self-links are redrawn
from anywhere. With `both_directions` every link is written twice, as drawn and reversed (two
pairs, one after the other), as many real link tables hold them: the data that shows the
reverse-link leak of a split by pair (`pipelines.preprocess --split_by`).

The output depends only on the arguments (numpy RNGs seeded by (seed, purpose)); items are
generated in memory (a few arrays of num_items), links in chunks.
"""

from __future__ import annotations

import numpy as np

from ssl_retrieval.sources import jsonl

FEATURES = [
    {"name": "item_id", "kind": "id"},
    {"name": "group", "kind": "categorical"},
    {"name": "kind", "kind": "categorical"},
    {"name": "title", "kind": "multi_hot"},
    {"name": "keywords", "kind": "multi_hot"},
]
NUM_KINDS = 12
WORDS_PER_TOPIC = 12
COMMON_WORDS = 5_000
KEYWORDS_PER_GROUP = 30
KEYWORDS_PER_TOPIC = 4
GLOBAL_KEYWORDS = 300
CHUNK = 100_000


def item_name(index: int) -> str:
    return f"p{index:08d}"


def _rng(seed: int, purpose: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, chunk])


def _common_word_cdf() -> np.ndarray:
    weights = np.arange(1, COMMON_WORDS + 1, dtype=np.float64) ** -1.0
    return np.cumsum(weights) / weights.sum()


def _item_records(topic, group_of_topic, num_groups, topic_words, seed, start, stop):
    rng = _rng(seed, 1, start // CHUNK)
    n = stop - start
    z = topic[start:stop]
    true_group = group_of_topic[z]
    group = np.where(rng.random(n) < 0.9, true_group, rng.integers(num_groups, size=n))
    kind = np.where(rng.random(n) < 0.5, true_group % NUM_KINDS, rng.integers(NUM_KINDS, size=n))
    num_words = rng.integers(3, 7, size=n)
    from_topic = rng.random((n, 6)) < topic_words
    topic_word = rng.integers(WORDS_PER_TOPIC, size=(n, 6))
    common_word = np.searchsorted(_common_word_cdf(), rng.random((n, 6)), side="right")
    num_keywords = rng.integers(1, 4, size=n)
    keyword_source = rng.random((n, 3))
    group_keyword = rng.integers(KEYWORDS_PER_GROUP, size=(n, 3))
    topic_keyword = rng.integers(KEYWORDS_PER_TOPIC, size=(n, 3))
    global_keyword = rng.integers(GLOBAL_KEYWORDS, size=(n, 3))
    records = []
    for r in range(n):
        t, g = int(z[r]), int(true_group[r])
        words = dict.fromkeys(
            f"t{t}w{int(topic_word[r, j])}" if from_topic[r, j] else f"c{int(common_word[r, j])}"
            for j in range(num_words[r])
        )
        keywords = {}
        for j in range(num_keywords[r]):
            u = keyword_source[r, j]
            if u < 0.6:
                keywords[f"g{g}k{int(group_keyword[r, j])}"] = None
            elif u < 0.9:
                keywords[f"t{t}k{int(topic_keyword[r, j])}"] = None
            else:
                keywords[f"k{int(global_keyword[r, j])}"] = None
        records.append(
            {
                "item_id": item_name(start + r),
                "group": f"g{int(group[r])}",
                "kind": f"kind{int(kind[r])}",
                "title": list(words),
                "keywords": list(keywords),
            }
        )
    return records


class _ActivitySampler:
    """Draws items by activity, from everywhere or from within given topics or groups."""

    def __init__(self, activity: np.ndarray, topic: np.ndarray, group_of_topic: np.ndarray):
        self.order = np.lexsort((np.arange(len(topic)), topic))  # items sorted by topic
        self.cumulative = np.concatenate([[0.0], np.cumsum(activity[self.order])])
        num_topics = len(group_of_topic)
        topic_sizes = np.bincount(topic, minlength=num_topics)
        self.topic_start = np.concatenate([[0], np.cumsum(topic_sizes)])
        # Topics are numbered group by group (group_of_topic is non-decreasing), so a group's
        # items are a contiguous run of the topic order too.
        num_groups = int(group_of_topic.max()) + 1
        first_topic = np.searchsorted(group_of_topic, np.arange(num_groups + 1))
        self.group_start = self.topic_start[first_topic]

    def _draw(self, rng, start, stop):
        low, high = self.cumulative[start], self.cumulative[stop]
        u = low + rng.random(len(low)) * (high - low)
        position = np.searchsorted(self.cumulative, u, side="right") - 1
        return self.order[np.clip(position, start, stop - 1)]

    def anywhere(self, rng, n):
        return self._draw(rng, np.zeros(n, np.int64), np.full(n, len(self.order)))

    def in_topic(self, rng, topics):
        return self._draw(rng, self.topic_start[topics], self.topic_start[topics + 1])

    def in_group(self, rng, groups):
        return self._draw(rng, self.group_start[groups], self.group_start[groups + 1])


def _link_records(
    sampler, topic, group_of_topic, topic_links, group_links, seed, chunk, n, both_directions=False
):
    rng = _rng(seed, 2, chunk)
    a = sampler.anywhere(rng, n)
    u = rng.random(n)
    b = sampler.anywhere(rng, n)
    same_topic = u < topic_links
    same_group = ~same_topic & (u < topic_links + group_links)
    b[same_topic] = sampler.in_topic(rng, topic[a[same_topic]])
    b[same_group] = sampler.in_group(rng, group_of_topic[topic[a[same_group]]])
    self_link = a == b
    while self_link.any():
        b[self_link] = sampler.anywhere(rng, int(self_link.sum()))
        self_link = a == b
    flip = rng.random(n) < 0.5
    query, candidate = np.where(flip, b, a), np.where(flip, a, b)
    if both_directions:  # each link, then its reverse
        query, candidate = (
            np.stack([query, candidate], axis=1).ravel(),
            np.stack([candidate, query], axis=1).ravel(),
        )
    return jsonl.pair_lines(query, candidate, item_name)


def build(
    output_dir: str,
    num_items: int = 100_000,
    num_pairs: int = 320_000,
    topic_size: int = 40,
    topics_per_group: int = 25,
    topic_links: float = 0.6,
    group_links: float = 0.25,
    topic_words: float = 0.5,
    activity_sigma: float = 1.4,
    seed: int = 0,
    both_directions: bool = False,
    num_shards: int = 1,
    file_format: str = jsonl.JSONL,
    overwrite: bool = False,
) -> dict:
    """Writes a linked catalogue (items, pairs, schema, README) into `output_dir`.

    Args:
      num_items, num_pairs: sizes; num_pairs links (twice as many pairs with both_directions).
      topic_size: mean items per latent topic (links and title words follow topics).
      topics_per_group: topics sharing a `group` value and its keywords.
      topic_links, group_links: probabilities that a link's other end is from the same topic,
        from the same group (else from anywhere); their sum must be at most 1.
      topic_words: probability that a title word is one of the topic's words.
      activity_sigma: spread of the log-normal item activity (0 = uniform popularity).
      seed: the output depends only on the arguments.
      both_directions: each link as two pairs, (a, b) then (b, a); the same links as without.
      output_dir, num_shards, file_format, overwrite: as for every source (`jsonl.write_dataset`).

    Returns:
      The summary dict (also in `summary.json` and README.md).
    """
    jsonl.check_format(file_format)
    if num_items < 2 or num_pairs < 1:
        raise ValueError(
            f"need --num_items >= 2 and --num_pairs >= 1, got {num_items}, {num_pairs}"
        )
    if not 2 <= topic_size <= num_items:
        raise ValueError(f"topic_size must be in [2, num_items], got {topic_size}")
    if topics_per_group < 1:
        raise ValueError(f"topics_per_group must be >= 1, got {topics_per_group}")
    if min(topic_links, group_links) < 0 or topic_links + group_links > 1:
        raise ValueError(
            f"topic_links and group_links must be >= 0 with a sum <= 1, got {topic_links}, "
            f"{group_links}"
        )
    if not 0 <= topic_words <= 1 or activity_sigma < 0:
        raise ValueError("topic_words must be in [0, 1] and activity_sigma >= 0")
    num_topics = max(1, num_items // topic_size)
    group_of_topic = np.arange(num_topics) // topics_per_group
    num_groups = int(group_of_topic[-1]) + 1
    rng = _rng(seed, 0)
    topic = rng.integers(num_topics, size=num_items)
    activity = rng.lognormal(0.0, activity_sigma, size=num_items)
    sampler = _ActivitySampler(activity, topic, group_of_topic)

    def items():
        for _, start, stop in jsonl.chunks(num_items, CHUNK, "linked", "items"):
            yield from _item_records(
                topic, group_of_topic, num_groups, topic_words, seed, start, stop
            )

    draw = (sampler, topic, group_of_topic, topic_links, group_links, seed)

    def links():
        for chunk, start, stop in jsonl.chunks(num_pairs, CHUNK, "linked", "links"):
            yield _link_records(*draw, chunk, stop - start, both_directions)

    summary = {
        "source": "linked",
        "items": num_items,
        "pairs": 2 * num_pairs if both_directions else num_pairs,
        "topics": num_topics,
        "groups": num_groups,
        "topic_links": topic_links,
        "group_links": group_links,
        "topic_words": topic_words,
        "activity_sigma": activity_sigma,
        "seed": seed,
    }
    if both_directions:  # (only then: the summary of a one-way build stays as it was)
        summary.update(links=num_pairs, both_directions=True)
    title = "Linked catalogue (synthetic): flat popularity, symmetric links, short-text features"
    notes = (
        "Generated by `python -m ssl_retrieval.sources --source=linked`; see the docstring "
        "of ssl_retrieval/sources/linked.py for the generative model."
    )
    return jsonl.write_dataset(
        output_dir,
        FEATURES,
        items(),
        links(),
        lambda *_: (title, summary, notes),
        file_format,
        num_shards,
        overwrite,
    )
