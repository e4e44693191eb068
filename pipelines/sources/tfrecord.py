"""TFRecord framing and `tf.train.Example` protobuf, read and written without TensorFlow.

Record framing: `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`.
Example: `features (1) -> Features { map<string, Feature> feature = 1 }` and
`Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3 } }`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import crc32c as _crc
import numpy as np

_MASK_DELTA = 0xA282EAD8


class RecordError(ValueError):
    """A TFRecord or Example is damaged. `field` says which part."""

    def __init__(self, message: str, field: str = "record"):
        super().__init__(message)
        self.field = field


def masked_crc(data: bytes) -> int:
    crc = _crc.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


def iter_records(stream: BinaryIO, verify: bool = True, first_index: int = 0) -> Iterator[bytes | RecordError]:
    """Yield the payload of each record in `stream`, one at a time (memory: one record).

    A record whose data fails its CRC is yielded as a `RecordError` in its place: the
    framing is intact, so the records after it are still read. Damaged framing (a bad
    length CRC, a truncated record) raises: nothing after it can be located. Messages
    number records from `first_index` (the stream's position in its file)."""
    index = first_index
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12:
            raise RecordError(f"record {index}: truncated header ({len(header)} of 12 bytes)", "length")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if verify and masked_crc(header[:8]) != length_crc:
            raise RecordError(f"record {index}: length CRC mismatch (corrupt framing)", "length_crc")
        data = stream.read(length)
        footer = stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise RecordError(f"record {index}: truncated data ({len(data)} of {length} bytes)", "data")
        if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
            yield RecordError(f"record {index}: data CRC mismatch", "data_crc")
        else:
            yield data
        index += 1


# --- protobuf wire format -------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise RecordError("truncated varint", "protobuf")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise RecordError("varint too long", "protobuf")


def _ld(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def _iter_fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    pos = 0
    n = len(buf)
    while pos < n:
        tag, pos = _read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > n:
                raise RecordError(f"field {field}: length {length} past end of message", "protobuf")
            yield field, wire, buf[pos : pos + length]
            pos += length
        elif wire == 0:
            value, pos = _read_varint(buf, pos)
            yield field, wire, value
        elif wire == 5:
            yield field, wire, buf[pos : pos + 4]
            pos += 4
        elif wire == 1:
            yield field, wire, buf[pos : pos + 8]
            pos += 8
        else:
            raise RecordError(f"unsupported wire type {wire}", "protobuf")


Feature = list[bytes] | np.ndarray


def encode_example(features: dict[str, Feature]) -> bytes:
    """Serialise a dict to `tf.train.Example` bytes.

    `list[bytes]` -> bytes_list; float arrays -> float_list (float32); integer or bool
    arrays -> int64_list. Keys are written sorted, so the bytes are deterministic.
    """
    entries = []
    for key in sorted(features):
        value = features[key]
        if isinstance(value, list | tuple):
            inner = b"".join(_ld(1, bytes(v)) for v in value)
            feat = _ld(1, inner)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                packed = arr.astype("<f4").tobytes()
                feat = _ld(2, _ld(1, packed) if packed else b"")
            elif arr.dtype.kind in "iub":
                packed = b"".join(_varint(int(v)) for v in arr.reshape(-1))
                feat = _ld(3, _ld(1, packed) if packed else b"")
            else:
                raise TypeError(f"feature {key!r}: unsupported dtype {arr.dtype}")
        entries.append(_ld(1, _ld(1, key.encode()) + _ld(2, feat)))
    return _ld(1, b"".join(entries))


def decode_example(data: bytes) -> dict[str, Feature]:
    """Parse `tf.train.Example` bytes into {key: list[bytes] | float32 array | int64 array}."""
    out: dict[str, Feature] = {}
    for field, wire, features in _iter_fields(memoryview(data)):
        if field == 1 and wire == 2:
            out.update(_features(features))
    return out


def _map_entries(buf: memoryview, what: str) -> Iterator[tuple[str, memoryview]]:
    """(key, value) of a protobuf `map<string, message>` field 1 (Features, FeatureLists)."""
    for f2, w2, entry in _iter_fields(buf):
        if f2 != 1 or w2 != 2:
            continue
        key, value = None, memoryview(b"")
        for f3, w3, v in _iter_fields(entry):
            if f3 == 1 and w3 == 2:
                key = bytes(v).decode("utf-8")
            elif f3 == 2 and w3 == 2:
                value = v
        if key is None:
            raise RecordError(f"{what} map entry without a key", "protobuf")
        yield key, value


def _features(buf: memoryview) -> dict[str, Feature]:
    """A `Features` message: {key: feature}."""
    return {key: _decode_feature(key, feat) for key, feat in _map_entries(buf, "feature")}


def _decode_feature(key: str, buf: memoryview) -> Feature:
    for kind, wire, payload in _iter_fields(buf):
        if wire != 2:
            raise RecordError(f"feature {key!r}: bad wire type", key)
        if kind == 1:
            return [bytes(v) for f, w, v in _iter_fields(payload) if f == 1]
        if kind == 2:
            chunks = []
            for f, w, v in _iter_fields(payload):
                if f == 1 and w == 2:
                    chunks.append(np.frombuffer(v, dtype="<f4"))
                elif f == 1 and w == 5:
                    chunks.append(np.frombuffer(v, dtype="<f4"))
            return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if kind == 3:
            values: list[int] = []
            for f, w, v in _iter_fields(payload):
                if f == 1 and w == 2:
                    pos = 0
                    while pos < len(v):
                        x, pos = _read_varint(v, pos)
                        values.append(x - (1 << 64) if x >= 1 << 63 else x)
                elif f == 1 and w == 0:
                    values.append(v - (1 << 64) if v >= 1 << 63 else v)
            return np.asarray(values, dtype=np.int64)
    return []


# --- SequenceExample and record offsets (RoboVQA) ----------------------------------------
# SequenceExample { Features context = 1; FeatureLists feature_lists = 2 }
# FeatureLists { map<string, FeatureList> feature_list = 1 }   FeatureList { repeated Feature feature = 1 }


def decode_sequence_example(data: bytes) -> tuple[dict[str, Feature], dict[str, list[Feature]]]:
    """Parse `tf.train.SequenceExample` bytes into (context features, feature lists): the
    context as `decode_example` gives it, each feature list as a list of features in order."""
    context: dict[str, Feature] = {}
    lists: dict[str, list[Feature]] = {}
    view = memoryview(data)
    for field, wire, payload in _iter_fields(view):
        if wire != 2:
            continue
        if field == 1:  # Features: the same message as Example's field 1 holds
            context.update(_features(payload))
        elif field == 2:
            for key, flist in _map_entries(payload, "feature list"):
                lists[key] = [_decode_feature(key, feat) for f4, w4, feat in _iter_fields(flist) if f4 == 1 and w4 == 2]
    return context, lists


def record_spans(stream: BinaryIO, first_offset: int = 0) -> Iterator[tuple[int, int]]:
    """(byte offset, data length) of each record from the stream's position, reading only the
    12-byte headers and seeking past the data: an index of a file without reading it whole."""
    offset = first_offset
    index = 0
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12:
            raise RecordError(f"record {index}: truncated header ({len(header)} of 12 bytes)", "length")
        (length,) = struct.unpack("<Q", header[:8])
        if masked_crc(header[:8]) != struct.unpack("<I", header[8:])[0]:
            raise RecordError(f"record {index}: length CRC mismatch (corrupt framing)", "length_crc")
        yield offset, length
        stream.seek(length + 4, 1)
        offset += 12 + length + 4
        index += 1
