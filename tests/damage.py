"""Helpers that damage generated RLDS files in the ways real downloads get damaged."""

from __future__ import annotations

from pathlib import Path

from pipelines.sources.tfrecord import decode_example, encode_example, frame_record, iter_records


def tfrecords(root: Path) -> list[Path]:
    return sorted((root / "droid" / "1.0.1").glob("droid-train.tfrecord-*"))


def record_spans(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each framed record."""
    import struct

    raw = path.read_bytes()
    spans, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack("<Q", raw[pos : pos + 8])
        spans.append((pos, pos + 16 + n))
        pos += 16 + n
    return spans


def rewrite_record(path: Path, index: int, edit) -> None:
    """Re-encode record `index` after `edit(features)` (framing and CRCs stay valid)."""
    with open(path, "rb") as fh:
        records = [r for r in iter_records(fh) if isinstance(r, bytes)]
    feats = decode_example(records[index])
    edit(feats)
    records[index] = encode_example(feats)
    path.write_bytes(b"".join(frame_record(r) for r in records))


def flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
