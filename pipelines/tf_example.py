"""tf.Example bytes without TensorFlow: a small, deterministic protobuf encoder.

Beam workers write hundreds of thousands of Examples; importing TensorFlow in each worker costs
seconds and its map encoding order is not guaranteed. The tf.Example wire format is tiny
(tensorflow/core/example/{example,feature}.proto), so we encode it directly, with features in
sorted key order, which makes the bytes a pure function of the record. `tf.io.parse_example`
reads them (tested in tests/test_pipeline_tf_example.py).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def bytes_feature(values: Sequence[str | bytes]) -> bytes:
    """Feature{bytes_list: BytesList{value: values}}."""
    items = b"".join(_field(1, v.encode("utf-8") if isinstance(v, str) else v) for v in values)
    return _field(1, items)


def float_feature(values: Sequence[float]) -> bytes:
    """Feature{float_list: FloatList{value: values}} (packed)."""
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed) if values else b"")


def example(features: Mapping[str, bytes]) -> bytes:
    """Example{features: Features{feature: map}} from already encoded Feature messages."""
    entries = b"".join(
        _field(1, _field(1, key.encode("utf-8")) + _field(2, value))
        for key, value in sorted(features.items())
    )
    return _field(1, entries)
