"""Pairs joined with both items' features, split deterministically, encoded as tf.Examples.

The split is a pure function of the pair's ids: a stable 64-bit hash of (query_id, candidate_id)
decides eval (test) vs the rest, so duplicates of a pair land in the same split, re-runs and other
runners agree, and no pair leaks between splits. A second, differently salted hash carves the
validation split out of the rest (`validation_fraction` of it), before training down-sampling
(`train_fraction`, a third hash): the eval and validation splits are therefore the same pairs at
every training fraction, so tuning on validation and reporting on eval compare like with like.
"""

from __future__ import annotations

import hashlib

import apache_beam as beam

from pipelines import tf_example
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


def item_example(item: dict, features) -> bytes:
    return tf_example.example(item_features(item, features))


class JoinPairs(beam.PTransform):
    """pairs + (item_id, item) -> tagged outputs TRAIN, VALIDATION, EVAL: (key, Example bytes),
    "train_candidates" / "eval_candidates": candidate ids, ERRORS: dead letters.

    A pair naming an item that is not in the corpus is a dead letter (field query_id or
    candidate_id). Pairs removed by `train_fraction` are counted as "downsampled".
    """

    def __init__(
        self,
        schema,
        eval_fraction: float,
        train_fraction: float,
        validation_fraction: float = 0.0,
    ):
        super().__init__()
        self._features = schema.features
        self._eval_fraction = eval_fraction
        self._train_fraction = train_fraction
        self._validation_fraction = validation_fraction

    def expand(self, inputs):
        pairs, items = inputs["pairs"], inputs["items"]
        features = self._features
        eval_fraction, train_fraction = self._eval_fraction, self._train_fraction
        validation_fraction = self._validation_fraction
        query_key = schema_lib.RAW_QUERY_ID
        cand_key = schema_lib.RAW_CANDIDATE_ID

        def join(side):
            key_name = query_key if side == "query" else cand_key
            prefix = schema_lib.QUERY_PREFIX if side == "query" else schema_lib.CANDIDATE_PREFIX

            def attach(element):
                _, grouped = element
                found = list(grouped["item"])
                for pair in grouped["pair"]:
                    if not found:
                        yield beam.pvalue.TaggedOutput(
                            ERRORS,
                            dead_letter(
                                pair["file"],
                                pair["line"],
                                key_name,
                                f"unknown item {pair[key_name]!r}",
                                f"{pair[query_key]} -> {pair[cand_key]}",
                            ),
                        )
                        continue
                    pair = dict(pair)
                    pair.setdefault("features", {}).update(
                        item_features(found[0], features, prefix)
                    )
                    yield pair

            return attach

        by_query = pairs | "KeyByQuery" >> beam.Map(lambda p: (p[query_key], p))
        with_query = (
            {"pair": by_query, "item": items}
            | "JoinQuery" >> beam.CoGroupByKey()
            | "AttachQuery" >> beam.FlatMap(join("query")).with_outputs(ERRORS, main="pairs")
        )
        by_cand = with_query.pairs | "KeyByCandidate" >> beam.Map(lambda p: (p[cand_key], p))
        with_both = (
            {"pair": by_cand, "item": items}
            | "JoinCandidate" >> beam.CoGroupByKey()
            | "AttachCandidate"
            >> beam.FlatMap(join("candidate")).with_outputs(ERRORS, main="pairs")
        )

        def to_example(pair):
            q, c = pair[query_key], pair[cand_key]
            feats = dict(pair["features"])
            feats[schema_lib.WEIGHT_KEY] = tf_example.float_feature([pair[schema_lib.RAW_WEIGHT]])
            record = (pair_key(q, c), tf_example.example(feats))
            split = split_of(q, c, eval_fraction, validation_fraction)
            if split == EVAL:
                yield beam.pvalue.TaggedOutput(EVAL, record)
                yield beam.pvalue.TaggedOutput("eval_candidates", c)
            elif split == VALIDATION:
                yield beam.pvalue.TaggedOutput(VALIDATION, record)
            elif kept_for_training(q, c, train_fraction):
                yield beam.pvalue.TaggedOutput(TRAIN, record)
                yield beam.pvalue.TaggedOutput("train_candidates", c)
            else:
                yield beam.pvalue.TaggedOutput("downsampled", 1)

        split = with_both.pairs | "SplitAndEncode" >> beam.FlatMap(to_example).with_outputs(
            TRAIN, VALIDATION, EVAL, "train_candidates", "eval_candidates", "downsampled"
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
