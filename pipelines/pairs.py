"""Pairs joined with both items' features, split deterministically, encoded as tf.Examples.

The split is a pure function of the pair's ids: a stable 64-bit hash of (query_id, candidate_id)
decides eval (test) vs the rest, so duplicates of a pair land in the same split, re-runs and other
runners agree, and no pair leaks between splits. A second, differently salted hash carves the
validation split out of the rest (`validation_fraction` of it), before training down-sampling
(`train_fraction`, a third hash): the eval and validation splits are therefore the same pairs at
every training fraction, so tuning on validation and reporting on eval compare like with like.

With `split_by="link"` the three hashes are of the unordered pair (`split_key`): a pair and its
reverse (b, a) fall in the same split and are kept or dropped together. The default, "pair",
splits them independently: on data whose links come in both directions most eval pairs then
have their reverse in training, which a model (or the query's own training links) can recall
without generalising. Every split pair also leaves a `LINK_RECORD`, from which
`stats.CountReverseLinks` counts the eval and validation pairs whose reverse is in training.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator

import apache_beam as beam
import numpy as np

from pipelines import batches, tf_example, writers
from pipelines.raw_io import ERRORS, dead_letter
from ssl_retrieval import schema as schema_lib

TRAIN = "train"
EVAL = "eval"
VALIDATION = "validation"
PAIR = "pair"
LINK = "link"
SPLIT_BY = (PAIR, LINK)
# A split pair as its link: the unordered pair as 64 bits (item indices, or a hash of the ids),
# and `code` = 2 * split (TRAIN 0, VALIDATION 1, EVAL 2) + 1 if it is the link's reverse
# direction (query after candidate).
LINK_RECORD = np.dtype([("link", "<u8"), ("code", "u1")])
LINK_SPLITS = (TRAIN, VALIDATION, EVAL)


def unit_hash(text: str, salt: str = "") -> float:
    """A stable hash of `text` in [0, 1) (blake2b; never Python's randomised hash())."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=salt.encode()[:16])
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def pair_key(query_id: str, candidate_id: str) -> str:
    return f"{query_id}\x1f{candidate_id}"


def split_key(query_id: str, candidate_id: str, split_by: str = PAIR) -> str:
    """What the split's hashes hash: the pair's key, or with `split_by=LINK` the key of the
    unordered pair (its ids in code-point order), which a pair and its reverse share."""
    if split_by == LINK and candidate_id < query_id:
        return pair_key(candidate_id, query_id)
    return pair_key(query_id, candidate_id)


def split_of(
    query_id: str,
    candidate_id: str,
    eval_fraction: float,
    validation_fraction: float = 0.0,
    split_by: str = PAIR,
) -> str:
    """EVAL, VALIDATION or TRAIN for a pair (before training down-sampling)."""
    key = split_key(query_id, candidate_id, split_by)
    if unit_hash(key, "split") < eval_fraction:
        return EVAL
    if validation_fraction > 0 and unit_hash(key, "validation") < validation_fraction:
        return VALIDATION
    return TRAIN


def kept_for_training(
    query_id: str, candidate_id: str, train_fraction: float, split_by: str = PAIR
) -> bool:
    if train_fraction >= 1.0:
        return True
    return unit_hash(split_key(query_id, candidate_id, split_by), "train_fraction") < train_fraction


def link_records(split_pairs: dict, index_of=None) -> bytes:
    """`LINK_RECORD`s (as bytes) of split pairs, {TRAIN, VALIDATION, EVAL: [(query, candidate,
    ...)]}: item indices when `index_of` is None, else ids, whose link is then a 64-bit hash of
    the unordered pair (two links share one with odds of about n^2 / 2^65)."""
    links, codes = [], []
    for number, split in enumerate(LINK_SPLITS):
        for pair in split_pairs.get(split, ()):
            q, c = pair[0], pair[1]
            low, high, reverse = (c, q, 1) if c < q else (q, c, 0)
            links.append((low << 32) | high if index_of is None else index_of(low, high))
            codes.append(2 * number + reverse)
    records = np.empty(len(links), dtype=LINK_RECORD)
    records["link"], records["code"] = links, codes
    return records.tobytes()


def link_hash(low: str, high: str) -> int:
    """The 64-bit link of two ids in code-point order (`link_records` of ids)."""
    digest = hashlib.blake2b(pair_key(low, high).encode("utf-8"), digest_size=8, person=b"link")
    return int.from_bytes(digest.digest(), "big")


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


class ItemEncoder:
    """`encode_item` for a stream of items, with what repeats computed once: each feature's key
    under the three prefixes, the entries of each categorical and multi-hot value, and the
    field of each string in them (values repeat across a catalogue; the caches are bounded)."""

    MAX_CACHED = 1 << 16
    SLICE = 64

    def __init__(self, features):
        prefixes = ("", schema_lib.QUERY_PREFIX, schema_lib.CANDIDATE_PREFIX)
        cached = (schema_lib.CATEGORICAL, schema_lib.MULTI_HOT)
        # In key order: the three entry lists are then sorted as `encode_item` sorts them.
        self._plan = [
            (
                f.name,
                f.kind == schema_lib.DENSE,
                [tf_example._key_field(prefix + f.name) for prefix in prefixes],
                {} if f.kind in cached else None,
            )
            for f in sorted(features, key=lambda f: f.name)
        ]
        self._pieces: dict[str, bytes] = {}

    def __call__(self, item: dict) -> tuple[bytes, bytes, bytes]:
        return self.encode([item])[0]

    def encode(self, items: list[dict]) -> list[tuple[bytes, bytes, bytes]]:
        """`encode_item` of each item, a feature (a column) at a time: the loops are
        comprehensions and the joins of an item's entries happen in C (`zip`, `map`)."""
        # In slices: the columns of a whole bucket would outlive the young generation, and the
        # collector's passes over the worker's heap then cost more than the encoding itself.
        encoded = []
        for start in range(0, len(items), self.SLICE):
            encoded.extend(self._encode(items[start : start + self.SLICE]))
        return encoded

    def _encode(self, items: list[dict]) -> list[tuple[bytes, bytes, bytes]]:
        plain, query, candidate = [], [], []
        for name, dense, keys, cache in self._plan:
            values = [item.get(name) for item in items]
            if dense:
                column = [
                    _NO_ENTRIES
                    if v is None
                    else tf_example.feature_entries(keys, tf_example.float_feature([v]))
                    for v in values
                ]
            elif cache is None:
                column = [tf_example.feature_entries(keys, _bytes_feature(v)) for v in values]
                # (ids: unique, not worth a cache)
            else:
                get = cache.get
                hashable = [v if v is None or type(v) is str else tuple(v) for v in values]
                column = [get(v) or self._missed(cache, keys, v) for v in hashable]
            for entries, column_entries in zip(
                (plain, query, candidate), zip(*column, strict=True), strict=True
            ):
                entries.append(column_entries)
        examples = map(tf_example.example_of_entries, map(b"".join, zip(*plain, strict=True)))
        return list(
            zip(
                examples,
                map(b"".join, zip(*query, strict=True)),
                map(b"".join, zip(*candidate, strict=True)),
                strict=True,
            )
        )

    def _missed(self, cache: dict, keys, value) -> tuple[bytes, bytes, bytes]:
        if len(cache) >= self.MAX_CACHED:
            cache.clear()
        entries = cache[value] = tuple(tf_example.feature_entries(keys, self._feature(value)))
        return entries

    def _feature(self, value) -> bytes:
        """`_bytes_feature(value)`, each string's BytesList field taken from a cache (the
        words of a multi-hot feature repeat more than their lists)."""
        if value is None:
            return _bytes_feature(None)
        pieces, get = self._pieces, self._pieces.get
        if len(pieces) >= self.MAX_CACHED:
            pieces.clear()
        values = (value,) if type(value) is str else value
        return tf_example.bytes_list_feature(
            b"".join([get(v) or pieces.setdefault(v, tf_example.bytes_value(v)) for v in values])
        )


_NO_ENTRIES = (b"", b"", b"")  # a missing dense value is an absent key (`item_features`)


def _bytes_feature(value) -> bytes:
    """The Feature of a sparse value: None, one string, or a list or tuple of strings."""
    return tf_example.bytes_feature(
        () if value is None else ((value,) if isinstance(value, str) else value)
    )


class _EncodeBucket(beam.DoFn):
    def __init__(self, features):
        self._features = features
        self._encode = None

    def setup(self):
        batches.collect_less()
        self._encode = ItemEncoder(self._features)

    def process(self, element):
        bucket, members = element
        encoded = self._encode.encode([item for _, item in members])
        yield (
            bucket,
            [(member[0], *entries) for member, entries in zip(members, encoded, strict=True)],
        )


class EncodeItems(beam.PTransform):
    """Buckets of (item_id, item) -> buckets of (item_id, example, query entries, candidate
    entries) (`encode_item`, by an `ItemEncoder`): the input of JoinPairs and of the corpus
    files."""

    def __init__(self, schema):
        super().__init__()
        self._features = schema.features

    def expand(self, items):
        return items | "Encode" >> beam.ParDo(_EncodeBucket(self._features))


def pair_example(candidate_entries: bytes, query_entries: bytes, weight: float) -> bytes:
    """A pair's Example from its items' encoded map entries (`tf_example.entries`).

    The same bytes as `tf_example.example` of all the features: its keys are sorted, and
    "candidate_*" < "query_*" < "weight".
    """
    return tf_example.example_of_entries(candidate_entries + query_entries + _weight_entry(weight))


@functools.lru_cache(maxsize=1024)
def _weight_entry(weight: float) -> bytes:
    return tf_example.entries({schema_lib.WEIGHT_KEY: tf_example.float_feature([weight])})


SPLIT_OUTPUTS = (
    TRAIN,
    VALIDATION,
    EVAL,
    "train_candidates",
    "eval_candidates",
    "downsampled",
    "links",
)


def _split_records(batch, fractions, split_by: str = PAIR):
    """A batch of joined pairs (tuples starting query, candidate) split: ({TRAIN, VALIDATION,
    EVAL: pairs}, train candidates, eval candidates, number down-sampled away).

    `fractions`: (eval, validation, train) fractions.
    """
    eval_fraction, validation_fraction, train_fraction = fractions
    out = {name: [] for name in (TRAIN, VALIDATION, EVAL)}
    train_candidates, eval_candidates, downsampled = [], [], 0
    for pair in batch:
        q, c = pair[0], pair[1]
        split = split_of(q, c, eval_fraction, validation_fraction, split_by)
        if split == TRAIN and not kept_for_training(q, c, train_fraction, split_by):
            downsampled += 1
            continue
        out[split].append(pair)
        if split == EVAL:
            eval_candidates.append(c)
        elif split == TRAIN:
            train_candidates.append(c)
    return out, train_candidates, eval_candidates, downsampled


def _tagged_stats(train_candidates, eval_candidates, downsampled):
    if train_candidates:
        yield beam.pvalue.TaggedOutput("train_candidates", train_candidates)
    if eval_candidates:
        yield beam.pvalue.TaggedOutput("eval_candidates", eval_candidates)
    yield beam.pvalue.TaggedOutput("downsampled", downsampled)


def _split_batch(batch, fractions, record, split_by: str = PAIR):
    """The tagged outputs of a batch of joined pairs (tuples starting query, candidate).

    `fractions`: (eval, validation, train) fractions; `record(pair)` -> (key, value).
    """
    out, *stats = _split_records(batch, fractions, split_by)
    for name, split_pairs in out.items():
        if split_pairs:
            yield beam.pvalue.TaggedOutput(name, [record(pair) for pair in split_pairs])
    yield from _tagged_stats(*stats)
    yield beam.pvalue.TaggedOutput("links", link_records(out, index_of=link_hash))


def _unknown_item(path: str, line: int, field: str, query: str, candidate: str) -> dict:
    """The dead letter of a pair whose `field` (query_id or candidate_id) is not in the corpus."""
    item_id = query if field == schema_lib.RAW_QUERY_ID else candidate
    return dead_letter(path, line, field, f"unknown item {item_id!r}", f"{query} -> {candidate}")


# --------------------------------------------------------------- the side-input join
#
# The side inputs are the catalogue in compact form, one element per item bucket: its ids as one
# blob, and its encoded entries as two blobs with offset arrays. An item's index is its place in
# the buckets taken in bucket order (each bucket sorted by id), the same on every worker and for
# both side inputs. Between the lookup and the writer a pair is one fixed-size record of item
# indices (`PAIR_RECORD`), and a batch of them one bytes object: at 10M pairs the runner holds
# 24 bytes a pair where it held a list of tuples of Python strings (about 15x that).

PAIR_RECORD = np.dtype(
    [("order", "<u8"), ("query", "<u4"), ("candidate", "<u4"), ("weight", "<f8")]
)


def catalogue_ids(bucket) -> tuple[int, bytes]:
    """An encoded bucket (`EncodeItems`) -> (bucket, its ids joined by newlines).

    Ids never hold a newline (`raw_io.text_problem` dead-letters them), nor are they empty.
    """
    number, members = bucket
    return number, "\n".join(member[0] for member in members).encode("utf-8")


def _blob(parts: list[bytes]) -> tuple[bytes, bytes]:
    """(offsets as little-endian int64 bytes, the parts joined and compressed): part i is
    blob[o[i]:o[i + 1]] of the decompressed blob."""
    offsets = np.zeros(len(parts) + 1, dtype="<i8")
    np.cumsum([len(part) for part in parts], out=offsets[1:])
    # Compressed (about 4x: the feature names repeat) for the runner, which keeps a side input
    # in memory, and sends it to each worker, in one piece.
    return offsets.tobytes(), batches.compress(b"".join(parts))


def catalogue_entries(bucket) -> tuple[int, bytes, bytes, bytes, bytes]:
    """An encoded bucket -> (bucket, query offsets, query entries, candidate offsets,
    candidate entries): each item's map entries as a query and as a candidate (`_blob`)."""
    number, members = bucket
    queries = _blob([member[2] for member in members])
    candidates = _blob([member[3] for member in members])
    return (number, *queries, *candidates)


def ids_in_order(ids_side) -> list[list[str]]:
    """The ids of each bucket, buckets in order, from the `catalogue_ids` elements."""
    return [
        blob.decode("utf-8").split("\n") if blob else []
        for _, blob in sorted(ids_side, key=lambda element: element[0])
    ]


def id_index(ids_side) -> dict[str, int]:
    """Item id -> index, from the `catalogue_ids` elements (in any order)."""
    index: dict[str, int] = {}
    for ids in ids_in_order(ids_side):
        index.update(zip(ids, range(len(index), len(index) + len(ids)), strict=True))
    return index


class CatalogueEntries:
    """Index -> an item's encoded entries, from the `catalogue_entries` elements (in any order):
    one blob per bucket, no object per item."""

    def __init__(self, entries_side):
        ordered = sorted(entries_side, key=lambda element: element[0])
        self._query_blobs = [batches.decompress(element[2]) for element in ordered]
        self._candidate_blobs = [batches.decompress(element[4]) for element in ordered]
        query_offsets = [np.frombuffer(element[1], dtype="<i8") for element in ordered]
        sizes = [len(offsets) - 1 for offsets in query_offsets]
        # Index of each bucket's first item; bucket b's offsets start at starts[b] + b in the
        # concatenated offset arrays (each has one more entry than its bucket has items).
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._query_offsets = np.concatenate(query_offsets or [np.zeros(0, "<i8")])
        self._candidate_offsets = np.concatenate(
            [np.frombuffer(element[3], dtype="<i8") for element in ordered] or [np.zeros(0, "<i8")]
        )

    def _where(self, indices: np.ndarray, offsets: np.ndarray):
        bucket = np.searchsorted(self._starts, indices, side="right") - 1
        at = indices.astype(np.int64) + bucket
        return bucket.tolist(), offsets[at].tolist(), offsets[at + 1].tolist()

    def examples(self, records: np.ndarray) -> Iterator[bytes]:
        """The Example of each `PAIR_RECORD`: its candidate's entries, its query's, its weight
        (`pair_example`)."""
        cand = self._where(records["candidate"], self._candidate_offsets)
        query = self._where(records["query"], self._query_offsets)
        cand_blobs, query_blobs = self._candidate_blobs, self._query_blobs
        weight_entry, varint = _weight_entry, tf_example._varint
        # `pair_example` inlined: this runs once per pair.
        for cb, cs, ce, qb, qs, qe, weight in zip(
            *cand, *query, records["weight"].tolist(), strict=True
        ):
            body = cand_blobs[cb][cs:ce] + query_blobs[qb][qs:qe] + weight_entry(weight)
            yield b"\x0a" + varint(len(body)) + body


class _PerBundleDoFn(beam.DoFn):
    """A DoFn that uses a structure built from a side input once per bundle (`built`).

    The SDK hands a DoFn the same side-input object for a whole bundle; building the structure
    per element would cost a pass over the catalogue per batch. Dropped at the bundle's end, so
    a worker does not keep it after its stage.
    """

    def __init__(self, build):
        self._build = build
        self._source = self._value = None

    def setup(self):
        batches.collect_less()

    def built(self, side):
        if side is not self._source:
            self._source, self._value = side, self._build(side)
        return self._value

    def finish_bundle(self):
        self._source = self._value = None


class _LookupAndRoute(_PerBundleDoFn):
    def __init__(self, fractions, shards, split_by=PAIR):
        super().__init__(id_index)
        self._fractions = fractions
        self._shards = shards
        self._split_by = split_by

    def process(self, batch, ids):
        index = self.built(ids)
        get = index.get
        query_key, cand_key = schema_lib.RAW_QUERY_ID, schema_lib.RAW_CANDIDATE_ID
        known = []
        for pair in batch:
            query, candidate = pair[query_key], pair[cand_key]
            q, c = get(query), get(candidate)
            if q is None or c is None:
                missing = query_key if q is None else cand_key
                yield beam.pvalue.TaggedOutput(
                    ERRORS, _unknown_item(pair["file"], pair["line"], missing, query, candidate)
                )
            else:
                known.append((query, candidate, pair[schema_lib.RAW_WEIGHT], q, c))
        routed, train_candidates, eval_candidates, downsampled = _split_and_route(
            known, self._fractions, self._shards, self._split_by
        )
        indices = {}  # split -> [(query index, candidate index)], for the links
        for split in (TRAIN, VALIDATION, EVAL):
            for shard, rows in sorted(routed[split].items()):
                records = np.array(rows, dtype=PAIR_RECORD)
                indices.setdefault(split, []).extend(
                    zip(records["query"].tolist(), records["candidate"].tolist(), strict=True)
                )
                yield (split, shard), records.tobytes()
        yield beam.pvalue.TaggedOutput("links", link_records(indices))
        # Candidates as item indices (ComputeSliceStats with ids): see batches.CountIndices.
        yield from _tagged_stats(
            np.array(train_candidates, dtype="<u4").tobytes(),
            np.array(eval_candidates, dtype="<u4").tobytes(),
            downsampled,
        )


def _split_and_route(known, fractions, shards, split_by=PAIR):
    """`_split_records` and `writers.shard_of` / `writers.order_key` of looked-up pairs
    (query, candidate, weight, query index, candidate index) in one pass, each pair's key
    encoded once: ({split: {shard: [(order, q, c, weight)]}}, train candidate indices, eval
    candidate indices, number down-sampled away). The same hashes (`unit_hash`), inlined: this
    runs once per pair. With `split_by=LINK` the split's hashes take `split_key`; the shard and
    the order in it stay the pair's."""
    eval_fraction, validation_fraction, train_fraction = fractions
    from_bytes, scale = int.from_bytes, 2.0**64
    # Copies of salted hashers: a third cheaper than building one with its salt per hash.
    split_hash, validation_hash, train_hash, shard_hash = (
        hashlib.blake2b(digest_size=8, person=salt).copy
        for salt in (b"split", b"validation", b"train_fraction", b"shard")
    )

    def number(new_hasher, key: bytes) -> int:
        hasher = new_hasher()
        hasher.update(key)
        return from_bytes(hasher.digest(), "big")

    order_hash = writers.order_hash
    routed = {split: {} for split in (TRAIN, VALIDATION, EVAL)}
    num_shards = {split: shards[split] for split in routed}
    train_candidates, eval_candidates, downsampled = [], [], 0
    by_link = split_by == LINK
    for query, candidate, weight, q, c in known:
        key = f"{query}\x1f{candidate}".encode()  # pair_key
        # split_key
        hashed = f"{candidate}\x1f{query}".encode() if by_link and candidate < query else key
        if number(split_hash, hashed) / scale < eval_fraction:
            split = EVAL
            eval_candidates.append(c)
        elif validation_fraction > 0 and number(validation_hash, hashed) / scale < (
            validation_fraction
        ):
            split = VALIDATION
        else:
            if train_fraction < 1.0 and not number(train_hash, hashed) / scale < train_fraction:
                downsampled += 1
                continue
            split = TRAIN
            train_candidates.append(c)
        shard = number(shard_hash, key) % num_shards[split]
        routed[split].setdefault(shard, []).append((order_hash(key), q, c, weight))
    return routed, train_candidates, eval_candidates, downsampled


class LookupPairs(beam.PTransform):
    """Batches of pairs + the catalogue's ids as a side input -> the split pairs, routed to
    their output shards.

    The join without a shuffle, for catalogues whose encoded items fit in a worker's memory
    (under 1 KB an item; `pipeline.SIDE_INPUT_JOIN_BYTES`): each batch looks its items up
    where it is. Outputs as JoinPairs', except that the three splits are one output, "pairs":
    ((split, shard), `PAIR_RECORD`s as bytes) for `shards[split]` shards (`writers.shard_of`
    the pair key), which `WritePairShards` turns into Examples as it writes each shard, so the
    job never holds every Example at once; "train_candidates" / "eval_candidates" hold
    item indices (little-endian uint32 bytes), not ids; the "links" are of item indices, not of
    hashes of ids. The same dead letters as JoinPairs.

    Args:
      ids: side input (AsList) of `catalogue_ids` elements.
      shards: split -> number of shards.
    """

    def __init__(
        self,
        ids,
        eval_fraction: float,
        train_fraction: float,
        validation_fraction: float = 0.0,
        shards: dict | None = None,
        split_by: str = PAIR,
    ):
        super().__init__()
        self._ids = ids
        self._fractions = (eval_fraction, validation_fraction, train_fraction)
        self._shards = dict(shards or {TRAIN: 1, VALIDATION: 1, EVAL: 1})
        self._split_by = split_by

    def expand(self, pairs):
        split = pairs | "LookupAndSplit" >> beam.ParDo(
            _LookupAndRoute(self._fractions, self._shards, self._split_by), self._ids
        ).with_outputs(ERRORS, *SPLIT_OUTPUTS[3:], main="pairs")
        return {name: split[name] for name in ("pairs", *SPLIT_OUTPUTS[3:], ERRORS)}


class _WritePairShard(_PerBundleDoFn):
    def __init__(self, directory, shards):
        super().__init__(CatalogueEntries)
        self._directory = directory
        self._shards = shards

    def process(self, element, ids, entries):
        (split, shard), chunks = element
        records = np.frombuffer(b"".join(chunks), dtype=PAIR_RECORD)
        # The order of WriteSortedShards: by order hash, then pair key, then Example bytes. A
        # pair's Examples differ only in the weight's float32 bytes (little-endian, compared
        # as bytes: read big-endian they compare as numbers). Equal hashes are the same pair
        # unless two keys collide in 64 bits; then the keys decide, as there.
        weight_bytes = np.frombuffer(records["weight"].astype("<f4").tobytes(), dtype=">u4")
        by_order = np.lexsort((weight_bytes, records["order"]))
        records, weight_bytes = records[by_order], weight_bytes[by_order]
        order, q, c = records["order"], records["query"], records["candidate"]
        same_hash = order[1:] == order[:-1]
        if np.any(same_hash & ((q[1:] != q[:-1]) | (c[1:] != c[:-1]))):
            names = [item for bucket in ids_in_order(ids) for item in bucket]
            keys = [
                pair_key(names[a], names[b]) for a, b in zip(q.tolist(), c.tolist(), strict=True)
            ]
            records = records[
                sorted(range(len(records)), key=lambda i: (order[i], keys[i], weight_bytes[i]))
            ]
        path = writers.write_records(
            self._directory,
            split,
            shard,
            self._shards[split],
            self.built(entries).examples(records),
        )
        logging.info("preprocess: wrote %s (%d records)", path, len(records))
        yield f"{split}_pairs", len(records)


class WritePairShards(beam.PTransform):
    """LookupPairs' "pairs" -> `<directory>/<split>-SSSSS-of-NNNNN.tfrecord` for every split and
    shard (empty ones included), the bytes `writers.WriteSortedShards` writes for the same
    Examples; returns ("<split>_pairs", records) per shard.

    One GroupByKey and one stage for the three splits: the entries side input (the largest
    thing a worker holds) is read once per bundle of this stage only.

    Args:
      shards: split -> number of shards.
      ids, entries: side inputs (AsList) of `catalogue_ids` and `catalogue_entries` elements.
    """

    def __init__(self, directory: str, shards: dict, ids, entries):
        super().__init__()
        self._directory = directory
        self._shards = dict(shards)
        self._ids = ids
        self._entries = entries

    def expand(self, pairs):
        every_shard = [
            ((split, shard), b"") for split, n in self._shards.items() for shard in range(n)
        ]
        empty = pairs.pipeline | "AllShards" >> beam.Create(every_shard)
        return (
            (pairs, empty)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard"
            >> beam.ParDo(_WritePairShard(self._directory, self._shards), self._ids, self._entries)
        )


class JoinPairs(beam.PTransform):
    """Batches of pairs + buckets of items -> the split, encoded pairs.

    Inputs: "pairs", lists of pair dicts (`raw_io.ParsePairs`); "items", encoded item buckets
    (`EncodeItems` of `raw_io.ParseItems`' `num_buckets` buckets). Each pair goes to the bucket
    of its query, meets that bucket's items (a GroupByKey of whole lists), takes the query's
    encoded features, then does the same with its candidate.

    Outputs: TRAIN, VALIDATION, EVAL: lists of (key, Example bytes); "train_candidates" /
    "eval_candidates": lists of candidate ids; "downsampled": the number of pairs removed by
    `train_fraction`, per bucket; "links": `LINK_RECORD`s of the split pairs as bytes, per
    batch (`stats.CountReverseLinks`); ERRORS: dead letters. A pair naming an item that is not
    in the corpus is a dead letter (field query_id or candidate_id).
    """

    def __init__(
        self,
        eval_fraction: float,
        train_fraction: float,
        validation_fraction: float = 0.0,
        num_buckets: int = 1,
        split_by: str = PAIR,
    ):
        super().__init__()
        self._fractions = (eval_fraction, validation_fraction, train_fraction)
        self._num_buckets = num_buckets
        self._split_by = split_by

    def expand(self, inputs):
        pairs, items = inputs["pairs"], inputs["items"]
        num_buckets = self._num_buckets
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

        fractions, split_by = self._fractions, self._split_by

        def split_and_encode(batch):
            # pair: (query, candidate, weight, file, line, query entries, candidate entries)
            return _split_batch(
                batch,
                fractions,
                lambda p: (pair_key(p[0], p[1]), pair_example(p[6], p[5], p[2])),
                split_by,
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
            "links": split.links,
            ERRORS: errors,
        }
