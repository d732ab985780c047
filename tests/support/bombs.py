"""Pictures that are small on disk and huge once decoded: 1-bit PNGs of any size, written row by row, and animated
PNGs of many such frames."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid black 1-bit PNG of width x height: a few KB for 8192x8192, whatever its decoded size."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte "none", then the packed pixels
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(height)]
    data = b"".join(chunks) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def animated_png_bomb(path: Path, side: int, frames: int) -> Path:
    """An animated PNG of `frames` black 1-bit frames of side x side, its text chunk ("parameters": "hello") after
    them: 600 frames of 4096² are 1 MB on disk and 10 G pixels to inflate for whoever decodes every frame."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    data = zlib.compress(row * side, 9)
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)),
        _chunk(b"acTL", struct.pack(">II", frames, 0)),  # frames, played forever
    ]
    sequence = 0
    for frame in range(frames):
        # Each frame's control chunk (its number, size, place, delay 1/1 s, no disposal or blending), then its data.
        parts.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, side, side, 0, 0, 1, 1, 0, 0)))
        sequence += 1
        if frame == 0:
            parts.append(_chunk(b"IDAT", data))
        else:
            parts.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    parts += [_chunk(b"tEXt", b"parameters\0hello"), _chunk(b"IEND", b"")]
    path.write_bytes(b"".join(parts))
    return path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
