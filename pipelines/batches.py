"""Batches and buckets: how the job keeps Beam's per-element cost off its records.

A Beam runner pays a fixed cost for every element of every stage (a function call, coding at
stage boundaries, a shuffle entry), several microseconds even in the local runner. With one
element per record that fixed cost was most of the job (results/bench/preprocess.json: 100x the
time of parsing the same JSON in one process). So the job's elements are lists of records:

- readers yield **batches** of up to `BATCH_SIZE` raw records;
- items are grouped into **buckets** by a stable hash of their id (`bucket_of`): an element is
  `(bucket, [(item_id, item), ...])`, sorted by id. Pairs are routed to the bucket of their
  query, then of their candidate, so the join with item features is a GroupByKey of whole
  batches (`pairs.JoinPairs`);
- records to write are lists of `(key, bytes)`, routed to their output shard as lists.

What crosses a GroupByKey is a list **packed** into one bytes object (`pack`, `unpack`): the local
runner holds every value of a GroupByKey in the controller as a decoded Python object until the
grouping is read, and a decoded list of records is about 10x its encoding (3 KB an item: the
coder shares no strings), which made the controller the job's largest process at 1M items.

Everything stays a PCollection with GroupByKey and CombinePerKey between stages, so the job still
distributes over any runner: a bucket or a shard is the unit a worker holds in memory, and the
job sizes them from the input (`pipeline._shard_counts`).
"""

from __future__ import annotations

import collections
import gc
import itertools
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
import zstandard  # a dependency of Beam's: every worker has it

BATCH_SIZE = 4096
# Young-generation threshold of the garbage collector in a process that runs the job's stages.
# Python's default, 700 allocations, collects every few records of a batch, and the collections
# that reach the older generations walk the worker's whole heap of decoded records (decoding a
# bucket of items took 4x as long with them); the job makes no reference cycles worth
# collecting sooner. About 15% of the Debian job.
GC_THRESHOLD = 100_000


def collect_less() -> None:
    """Raises this process's young-generation threshold to `GC_THRESHOLD` (for good: a worker
    process lives for the job; `pipeline.run` restores its own)."""
    threshold = gc.get_threshold()
    if threshold[0] < GC_THRESHOLD:
        gc.set_threshold(GC_THRESHOLD, *threshold[1:])


class Calls(beam.DoFn):
    """A DoFn of `fn(element)` (what beam.FlatMap(fn) does) whose worker collects less
    (`collect_less`): for the first stages of a worker, which have no DoFn of their own."""

    def __init__(self, fn: Callable):
        self._fn = fn

    def setup(self):
        collect_less()

    def process(self, element):
        return self._fn(element)


def chunks(records: Iterable, size: int = BATCH_SIZE) -> Iterator[list]:
    """Consecutive lists of at most `size` records."""
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def bucket_of(key: str, num_buckets: int) -> int:
    """A stable bucket in [0, num_buckets) for an id (CRC-32: fast, and the same everywhere).

    Buckets only decide which records meet on one worker; no output depends on them.
    """
    return zlib.crc32(key.encode("utf-8")) % num_buckets


def route(records: Iterable, key: Callable, num_buckets: int) -> Iterator[tuple[int, list]]:
    """(bucket, records of that bucket) for each bucket that has records, in bucket order."""
    routed: dict[int, list] = {}
    for record in records:
        routed.setdefault(bucket_of(key(record), num_buckets), []).append(record)
    return iter(sorted(routed.items()))


def flatten(groups: Iterable[list]) -> list:
    """One list of the records of a GroupByKey's grouped lists."""
    return [record for group in groups for record in group]


def compress(data: bytes) -> bytes:
    """Zstandard level 1: about 6x on pickled items, and 3x as fast as zlib level 1 both ways
    (whose output was 15% larger)."""
    return zstandard.ZstdCompressor(level=1).compress(data)


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


def pack(records: list) -> bytes:
    """A list of records (Python values) as one bytes object, for a GroupByKey (see above),
    compressed (`compress`)."""
    return compress(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL))


def unpack(groups: Iterable[bytes]) -> list:
    """One list of the records of a GroupByKey's packed lists (`pack`)."""
    return [record for group in groups for record in pickle.loads(decompress(group))]


class MergeCounts(beam.CombineFn):
    """Lists of keys, or Counters, -> one Counter of them (Counter.update adds either): how a
    batch's counts become the job's."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, counts, batch):
        counts.update(batch)
        return counts

    def merge_accumulators(self, accumulators):
        merged = collections.Counter()
        for counts in accumulators:
            merged.update(counts)
        return merged

    def extract_output(self, counts):
        return counts


class CountIndices(beam.CombineFn):
    """Arrays of indices (little-endian uint32 bytes) -> how often each index occurs (an int64
    array as long as the largest index + 1): `MergeCounts` for item indices, with an array
    where a Counter of ids took about 100 bytes a distinct id."""

    def create_accumulator(self):
        return np.zeros(0, np.int64)

    def add_input(self, counts, batch):
        indices = np.frombuffer(batch, dtype="<u4")
        if len(indices):
            counts = _grown(counts, int(indices.max()) + 1)
            np.add.at(counts, indices, 1)
        return counts

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        merged = np.zeros(max((len(a) for a in accumulators), default=0), np.int64)
        for counts in accumulators:
            merged[: len(counts)] += counts
        return merged

    def extract_output(self, counts):
        return counts


def _grown(counts: np.ndarray, size: int) -> np.ndarray:
    if len(counts) >= size:
        return counts
    grown = np.zeros(max(size, 2 * len(counts)), np.int64)
    grown[: len(counts)] = counts
    return grown
