"""Pairs joined with both items' features, split deterministically, encoded as tf.Examples.

The split is a pure function of the pair's ids: a stable 64-bit hash of (query_id, candidate_id)
decides eval (test) vs the rest, so duplicates of a pair land in the same split, re-runs and other
runners agree, and no pair leaks between splits. A second, differently salted hash carves the
validation split out of the rest (`validation_fraction` of it), before training down-sampling
(`train_fraction`, a third hash): the eval and validation splits are therefore the same pairs at
every training fraction, so tuning on validation and reporting on eval compare like with like.
"""

from __future__ import annotations

import functools
import hashlib
import logging

import apache_beam as beam

from pipelines import batches, tf_example
from pipelines.raw_io import ERRORS, dead_letter
from ssl_retrieval import schema as schema_lib

TRAIN = "train"
EVAL = "eval"
VALIDATION = "validation"


def unit_hash(text: str, salt: str = "") -> float:
    """A stable hash of `text` in [0, 1) (blake2b; never Python's randomised hash())."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=salt.encode()[:16])
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def pair_key(query_id: str, candidate_id: str) -> str:
    return f"{query_id}\x1f{candidate_id}"


def split_of(
    query_id: str, candidate_id: str, eval_fraction: float, validation_fraction: float = 0.0
) -> str:
    """EVAL, VALIDATION or TRAIN for a pair (before training down-sampling)."""
    key = pair_key(query_id, candidate_id)
    if unit_hash(key, "split") < eval_fraction:
        return EVAL
    if validation_fraction > 0 and unit_hash(key, "validation") < validation_fraction:
        return VALIDATION
    return TRAIN


def kept_for_training(query_id: str, candidate_id: str, train_fraction: float) -> bool:
    if train_fraction >= 1.0:
        return True
    return unit_hash(pair_key(query_id, candidate_id), "train_fraction") < train_fraction


def item_features(item: dict, features, prefix: str = "") -> dict[str, bytes]:
    """Encoded tf.train.Feature messages of one item (docs: ssl_retrieval/schema.py)."""
    out = {}
    for f in features:
        value = item.get(f.name)
        if f.kind == schema_lib.DENSE:
            # Missing dense values are absent keys: tf.io.FixedLenFeature rejects an empty list
            # but fills an absent key with its default.
            if value is not None:
                out[prefix + f.name] = tf_example.float_feature([value])
        else:
            values = [] if value is None else ([value] if isinstance(value, str) else value)
            out[prefix + f.name] = tf_example.bytes_feature(values)
    return out


def encode_item(item: dict, features) -> tuple[bytes, bytes, bytes]:
    """(its corpus Example, its map entries as a query, as a candidate), features encoded once.

    The three sort their keys the same way (one prefix on every key), so each is the item's
    sorted features under another key prefix.
    """
    encoded = sorted(item_features(item, features).items())
    plain, query, candidate = tf_example.entries_under_prefixes(
        encoded, ("", schema_lib.QUERY_PREFIX, schema_lib.CANDIDATE_PREFIX)
    )
    return tf_example.example_of_entries(plain), query, candidate


class EncodeItems(beam.PTransform):
    """Buckets of (item_id, item) -> buckets of (item_id, example, query entries, candidate
    entries) (`encode_item`): the input of JoinPairs and of the corpus files."""

    def __init__(self, schema):
        super().__init__()
        self._features = schema.features

    def expand(self, items):
        features = self._features

        def encode(element):
            bucket, members = element
            return bucket, [(item_id, *encode_item(item, features)) for item_id, item in members]

        return items | "Encode" >> beam.Map(encode)


def pair_example(candidate_entries: bytes, query_entries: bytes, weight: float) -> bytes:
    """A pair's Example from its items' encoded map entries (`tf_example.entries`).

    The same bytes as `tf_example.example` of all the features: its keys are sorted, and
    "candidate_*" < "query_*" < "weight".
    """
    return tf_example.example_of_entries(candidate_entries + query_entries + _weight_entry(weight))


@functools.lru_cache(maxsize=1024)
def _weight_entry(weight: float) -> bytes:
    return tf_example.entries({schema_lib.WEIGHT_KEY: tf_example.float_feature([weight])})


SPLIT_OUTPUTS = (TRAIN, VALIDATION, EVAL, "train_candidates", "eval_candidates", "downsampled")


def _split_batch(batch, fractions, record):
    """The tagged outputs of a batch of joined pairs (tuples starting query, candidate).

    `fractions`: (eval, validation, train) fractions; `record(pair)` -> (key, value).
    """
    eval_fraction, validation_fraction, train_fraction = fractions
    out = {name: [] for name in (TRAIN, VALIDATION, EVAL)}
    train_candidates, eval_candidates, downsampled = [], [], 0
    for pair in batch:
        q, c = pair[0], pair[1]
        split = split_of(q, c, eval_fraction, validation_fraction)
        if split == TRAIN and not kept_for_training(q, c, train_fraction):
            downsampled += 1
            continue
        out[split].append(record(pair))
        if split == EVAL:
            eval_candidates.append(c)
        elif split == TRAIN:
            train_candidates.append(c)
    for name, records in out.items():
        if records:
            yield beam.pvalue.TaggedOutput(name, records)
    if train_candidates:
        yield beam.pvalue.TaggedOutput("train_candidates", train_candidates)
    if eval_candidates:
        yield beam.pvalue.TaggedOutput("eval_candidates", eval_candidates)
    yield beam.pvalue.TaggedOutput("downsampled", downsampled)


def _unknown_item(path: str, line: int, field: str, query: str, candidate: str) -> dict:
    """The dead letter of a pair whose `field` (query_id or candidate_id) is not in the corpus."""
    item_id = query if field == schema_lib.RAW_QUERY_ID else candidate
    return dead_letter(path, line, field, f"unknown item {item_id!r}", f"{query} -> {candidate}")


def encode_pair(pair: tuple, entries) -> bytes:
    """The Example of a (query, candidate, weight) pair from `entries` (id -> (query entries,
    candidate entries)), the side input of LookupPairs."""
    query, candidate, weight = pair
    return pair_example(entries[candidate][1], entries[query][0], weight)


class LookupPairs(beam.PTransform):
    """Batches of pairs + every item's encoded entries as a side input -> the split pairs.

    The join without a shuffle, for catalogues whose encoded items fit in a worker's memory
    (under 1 KB an item; `pipeline.SIDE_INPUT_JOIN_BYTES`): each batch looks its items up
    where it is. Outputs as JoinPairs', except that TRAIN, VALIDATION and EVAL hold
    (key, (query, candidate, weight)): the writer encodes them (`encode_pair`) while it writes
    a shard, so the job never holds every Example at once. The same dead letters as JoinPairs.

    Args:
      entries: side input (item id -> (query entries, candidate entries)).
    """

    def __init__(
        self,
        entries,
        eval_fraction: float,
        train_fraction: float,
        validation_fraction: float = 0.0,
    ):
        super().__init__()
        self._entries = entries
        self._fractions = (eval_fraction, validation_fraction, train_fraction)

    def expand(self, pairs):
        fractions = self._fractions
        query_key, cand_key = schema_lib.RAW_QUERY_ID, schema_lib.RAW_CANDIDATE_ID

        def lookup(batch, entries):
            known = []
            for pair in batch:
                query, candidate = pair[query_key], pair[cand_key]
                missing = next((k for k in (query_key, cand_key) if pair[k] not in entries), None)
                if missing is not None:
                    error = _unknown_item(pair["file"], pair["line"], missing, query, candidate)
                    yield beam.pvalue.TaggedOutput(ERRORS, error)
                else:
                    known.append((query, candidate, pair[schema_lib.RAW_WEIGHT]))
            yield from _split_batch(known, fractions, lambda p: (pair_key(p[0], p[1]), p))

        split = pairs | "LookupAndSplit" >> beam.FlatMap(lookup, self._entries).with_outputs(
            ERRORS, *SPLIT_OUTPUTS
        )
        return {name: split[name] for name in (*SPLIT_OUTPUTS, ERRORS)}


class JoinPairs(beam.PTransform):
    """Batches of pairs + buckets of items -> the split, encoded pairs.

    Inputs: "pairs", lists of pair dicts (`raw_io.ParsePairs`); "items", encoded item buckets
    (`EncodeItems` of `raw_io.ParseItems`' `num_buckets` buckets). Each pair goes to the bucket
    of its query, meets that bucket's items (a GroupByKey of whole lists), takes the query's
    encoded features, then does the same with its candidate.

    Outputs: TRAIN, VALIDATION, EVAL: lists of (key, Example bytes); "train_candidates" /
    "eval_candidates": lists of candidate ids; "downsampled": the number of pairs removed by
    `train_fraction`, per bucket; ERRORS: dead letters. A pair naming an item that is not in the
    corpus is a dead letter (field query_id or candidate_id).
    """

    def __init__(
        self,
        eval_fraction: float,
        train_fraction: float,
        validation_fraction: float = 0.0,
        num_buckets: int = 1,
    ):
        super().__init__()
        self._eval_fraction = eval_fraction
        self._train_fraction = train_fraction
        self._validation_fraction = validation_fraction
        self._num_buckets = num_buckets

    def expand(self, inputs):
        pairs, items = inputs["pairs"], inputs["items"]
        num_buckets = self._num_buckets
        eval_fraction, train_fraction = self._eval_fraction, self._train_fraction
        validation_fraction = self._validation_fraction
        query_key = schema_lib.RAW_QUERY_ID
        cand_key = schema_lib.RAW_CANDIDATE_ID

        # In the join a pair is a tuple (query, candidate, weight, file, line, query entries,
        # candidate entries), which is cheaper to move between stages than a dict.
        def as_tuples(batch):
            return [
                (p[query_key], p[cand_key], p[schema_lib.RAW_WEIGHT], p["file"], p["line"])
                for p in batch
            ]

        def attach(side):
            """Joins one side: the pairs of a bucket get that side's encoded features."""
            index, name = (0, query_key) if side == "query" else (1, cand_key)

            def join(element):
                _, grouped = element
                entries_of = {
                    item_id: (query, cand)
                    for item_id, query, cand in batches.flatten(grouped["items"])
                }
                joined = []
                for pair in batches.flatten(grouped["pairs"]):
                    entries = entries_of.get(pair[index])
                    if entries is None:
                        error = _unknown_item(pair[3], pair[4], name, pair[0], pair[1])
                        yield beam.pvalue.TaggedOutput(ERRORS, error)
                        continue
                    joined.append((*pair, entries[index]))
                logging.info("preprocess: joined %d pairs with their %s", len(joined), side)
                if joined:
                    yield joined

            return join

        def by_bucket(index):
            return lambda batch: batches.route(batch, lambda pair: pair[index], num_buckets)

        # The join needs the entries only, not the corpus Example.
        items = items | "EntriesOnly" >> beam.Map(
            lambda bucket: (bucket[0], [(i, query, cand) for i, _, query, cand in bucket[1]])
        )
        with_query = (
            {
                "pairs": pairs
                | "AsTuples" >> beam.Map(as_tuples)
                | "RouteByQuery" >> beam.FlatMap(by_bucket(0)),
                "items": items,
            }
            | "GroupQueryBucket" >> beam.CoGroupByKey()
            | "AttachQuery" >> beam.FlatMap(attach("query")).with_outputs(ERRORS, main="pairs")
        )
        with_both = (
            {
                "pairs": with_query.pairs | "RouteByCandidate" >> beam.FlatMap(by_bucket(1)),
                "items": items,
            }
            | "GroupCandidateBucket" >> beam.CoGroupByKey()
            | "AttachCandidate"
            >> beam.FlatMap(attach("candidate")).with_outputs(ERRORS, main="pairs")
        )

        fractions = (eval_fraction, validation_fraction, train_fraction)

        def split_and_encode(batch):
            # pair: (query, candidate, weight, file, line, query entries, candidate entries)
            return _split_batch(
                batch,
                fractions,
                lambda p: (pair_key(p[0], p[1]), pair_example(p[6], p[5], p[2])),
            )

        split = with_both.pairs | "SplitAndEncode" >> beam.FlatMap(split_and_encode).with_outputs(
            *SPLIT_OUTPUTS
        )
        errors = (with_query[ERRORS], with_both[ERRORS]) | "MergeJoinErrors" >> beam.Flatten()
        return {
            TRAIN: split[TRAIN],
            VALIDATION: split[VALIDATION],
            EVAL: split[EVAL],
            "train_candidates": split.train_candidates,
            "eval_candidates": split.eval_candidates,
            "downsampled": split.downsampled,
            ERRORS: errors,
        }
