"""tf.Example bytes without TensorFlow: a small, deterministic protobuf encoder.

Beam workers write hundreds of thousands of Examples; importing TensorFlow in each worker costs
seconds and its map encoding order is not guaranteed. The tf.Example wire format is tiny
(tensorflow/core/example/{example,feature}.proto), so we encode it directly, with features in
sorted key order, which makes the bytes a pure function of the record. `tf.io.parse_example`
reads them (tests/test_pipeline.py, `test_tf_example_encoder_matches_tensorflow`).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _varint(value: int) -> bytes:
    # Fast paths for one and two bytes: encoding is the job's hottest loop (millions of fields).
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    return _encode_varint(value)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


_BYTES_FIELD_1 = b"\x0a"  # tag of field 1, wire type 2 (length-delimited)
_BYTES_FIELD_2 = b"\x12"  # tag of field 2, wire type 2


def bytes_value(value: str | bytes) -> bytes:
    """One value of a BytesList, as its field."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _BYTES_FIELD_1 + _varint(len(data)) + data


def bytes_list_feature(values: bytes) -> bytes:
    """Feature{bytes_list: BytesList} from its values' fields (`bytes_value`) joined."""
    return _BYTES_FIELD_1 + _varint(len(values)) + values


def bytes_feature(values: Sequence[str | bytes]) -> bytes:
    """Feature{bytes_list: BytesList{value: values}}."""
    return bytes_list_feature(b"".join([bytes_value(v) for v in values]))


def float_feature(values: Sequence[float]) -> bytes:
    """Feature{float_list: FloatList{value: values}} (packed)."""
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed) if values else b"")


@functools.lru_cache(maxsize=1 << 14)
def _key_field(key: str) -> bytes:
    return _field(1, key.encode("utf-8"))


def entries(features: Mapping[str, bytes] | Sequence[tuple[str, bytes]], prefix: str = "") -> bytes:
    """The encoded map entries of Features{feature: map}, in sorted key order, each key
    prefixed with `prefix`."""
    pairs = features.items() if isinstance(features, Mapping) else features
    return entries_under_prefixes(sorted(pairs), (prefix,))[0]


def entries_under_prefixes(
    features: Sequence[tuple[str, bytes]], prefixes: Sequence[str]
) -> list[bytes]:
    """`entries(features, prefix)` for each prefix, each value encoded once.

    `features` must be sorted by key; a common prefix keeps that order.
    """
    values = [(key, _BYTES_FIELD_2 + _varint(len(value)) + value) for key, value in features]
    out = []
    for prefix in prefixes:
        parts = []
        for key, value in values:
            body = _key_field(prefix + key) + value
            parts.append(_BYTES_FIELD_1 + _varint(len(body)) + body)
        out.append(b"".join(parts))
    return out


def feature_entries(key_fields: Sequence[bytes], feature: bytes) -> list[bytes]:
    """The map entry of one encoded Feature under each of `key_fields` (`_key_field` of each
    key): `entries({key: feature})` for each key, the value field encoded once."""
    value = _BYTES_FIELD_2 + _varint(len(feature)) + feature
    return [_BYTES_FIELD_1 + _varint(len(key) + len(value)) + key + value for key in key_fields]


def example_of_entries(encoded_entries: bytes) -> bytes:
    """Example{features: Features{...}} from map entries already encoded in key order."""
    return _field(1, encoded_entries)


def example(features: Mapping[str, bytes]) -> bytes:
    """Example{features: Features{feature: map}} from already encoded Feature messages."""
    return example_of_entries(entries(features))
