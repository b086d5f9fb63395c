"""Deterministic sharded writers: the same records give the same files, byte for byte.

A record goes to the shard chosen by a stable hash of its key; each shard's records are sorted
before writing, so neither bundle order nor the runner changes the output. Records the trainer
streams (pairs, items) are sorted by a hash of their key (`order="hashed"`): any stretch of a
file is then a uniform random sample of it, so a bounded shuffle buffer reading the files gives
uniform batches however large the data (records sorted by key would put `python3-*` next to
`python3-*`). Dead letters keep key order (`order="key"`), for people reading them.
Each shard is written by one worker, which sorts it in memory: choose enough shards that one
fits (the preprocess job picks about 64 MB of records per shard).
"""

from __future__ import annotations

import hashlib
import logging
import struct

import apache_beam as beam
from apache_beam.io import tfrecordio
from apache_beam.io.filesystems import FileSystems

from pipelines import batches


def shard_of(key: str, num_shards: int) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"shard")
    return int.from_bytes(digest.digest(), "big") % num_shards


def order_key(key: str) -> bytes:
    """Where a record goes in `order="hashed"` files: a stable hash of its key."""
    return order_hash(key.encode("utf-8")).to_bytes(8, "big")


def order_hash(key: bytes) -> int:
    """`order_key` of an encoded key, as a number."""
    hasher = _ORDER_HASHER.copy()  # a third cheaper than a new salted hasher
    hasher.update(key)
    return int.from_bytes(hasher.digest(), "big")


_ORDER_HASHER = hashlib.blake2b(digest_size=8, person=b"order")


def shard_path(directory: str, prefix: str, index: int, num_shards: int, suffix: str) -> str:
    return FileSystems.join(directory, f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}")


def write_records(
    directory: str, prefix: str, index: int, num_shards: int, values, tfrecord: bool = True
) -> str:
    """Writes one shard file of `values` (bytes, in order) and returns its path."""
    path = shard_path(directory, prefix, index, num_shards, ".tfrecord" if tfrecord else ".jsonl")
    frame = framed_tfrecords if tfrecord else lambda chunk: b"".join(v + b"\n" for v in chunk)
    with FileSystems.create(path) as f:
        # A write per chunk of records, not per record: a file write costs more than framing.
        for chunk in batches.chunks(values, 1024):
            f.write(frame(chunk))
    return path


def _crc32c_function():
    tfrecordio._default_crc32c_fn(b"")  # Beam picks its implementation on the first call
    return tfrecordio._default_crc32c_fn.fn


_CRC32C = _crc32c_function()
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
# length -> its 8 bytes and their masked CRC: a record's length repeats, its CRC need not be
# computed again (bounded: cleared when full).
_LENGTH_HEADERS: dict[int, bytes] = {}


def _masked_crc(value: bytes) -> int:
    """`_TFRecordUtil._masked_crc32c` (Beam's TFRecord checksum), without its call layers."""
    crc = _CRC32C(value)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _length_header(size: int) -> bytes:
    header = _LENGTH_HEADERS.get(size)
    if header is None:
        if len(_LENGTH_HEADERS) >= 1 << 16:
            _LENGTH_HEADERS.clear()
        length = _LENGTH.pack(size)
        header = _LENGTH_HEADERS[size] = length + _CRC.pack(_masked_crc(length))
    return header


def framed_tfrecords(values) -> bytes:
    """`values` framed as TFRecords, one after the other (what `_TFRecordUtil.write_record`
    writes for each): the job's hottest loop after encoding, so it is one pass with no call
    per record but the checksum's."""
    parts = []
    append, header, crc, pack = parts.append, _length_header, _CRC32C, _CRC.pack
    for value in values:
        append(header(len(value)))
        append(value)
        c = crc(value)
        append(pack((((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF))
    return b"".join(parts)


class WriteSortedShards(beam.PTransform):
    """Lists of (key, bytes) -> `<directory>/<prefix>-SSSSS-of-NNNNN<suffix>` files; returns the
    number of records written to each shard (one element per shard).

    Args:
      directory: output directory (any Beam filesystem).
      prefix: file name prefix, e.g. "train".
      num_shards: number of files; every shard file is written, empty ones included, so that
        the `-of-NNNNN` names are complete.
      tfrecord: frame records as TFRecords (else newline-terminated lines).
      order: "hashed" (records in the order of a hash of their key: a random, reproducible
        permutation) or "key" (sorted by key).
    """

    def __init__(
        self,
        directory: str,
        prefix: str,
        num_shards: int,
        tfrecord: bool = True,
        order: str = "hashed",
    ):
        super().__init__()
        if order not in ("hashed", "key"):
            raise ValueError(f"order must be 'hashed' or 'key', got {order!r}")
        self._directory = directory
        self._prefix = prefix
        self._num_shards = num_shards
        self._tfrecord = tfrecord
        self._order = order

    def expand(self, records):
        directory, prefix, num_shards = self._directory, self._prefix, self._num_shards
        tfrecord = self._tfrecord
        hashed = self._order == "hashed"

        def write(element):
            index, groups = element
            shard_records = batches.unpack(groups)
            if hashed:
                ordered = sorted(shard_records, key=lambda kv: (order_key(kv[0]), kv))
            else:
                ordered = sorted(shard_records)
            values = (value for _, value in ordered)
            path = write_records(directory, prefix, index, num_shards, values, tfrecord)
            # Progress of a long job: one line per shard written (forwarded by worker processes).
            logging.info("preprocess: wrote %s (%d records)", path, len(ordered))
            yield len(ordered)

        def to_shards(batch):
            routed: dict[int, list] = {}
            for record in batch:
                routed.setdefault(shard_of(record[0], num_shards), []).append(record)
            return [(shard, batches.pack(shard_records)) for shard, shard_records in routed.items()]

        # Empty shards still get a (zero-record) file.
        empty = records.pipeline | "AllShards" >> beam.Create(
            [(i, batches.pack([])) for i in range(num_shards)]
        )
        routed = records | "RouteToShards" >> beam.FlatMap(to_shards)
        return (
            (routed, empty)
            | "WithEmptyShards" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.FlatMap(write)
        )
