"""Deterministic damage to real photos: bit flips, truncation, header damage, inserted bytes,
and lying dimensions. Case ``i`` of seed ``s`` is always the same bytes, so a failing case can
be replayed by its number."""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MUTATIONS = ("bit_flips", "truncate", "header_damage", "insert_bytes", "huge_dimensions",
             "zero_fill")


@dataclass(frozen=True)
class FuzzCase:
    index: int
    source: Path
    mutation: str
    data: bytes

    @property
    def suffix(self) -> str:
        return self.source.suffix.lower()


def source_photos(faces_dir: Path) -> list[Path]:
    """Small real JPEGs and PNGs (fast to process, so thousands of cases fit in minutes)."""
    lfw = sorted((faces_dir / "identities").glob("*/*_000[12].jpg"))
    others = [faces_dir / "identities/alex_lacamoire/alex-lacamoire.png",
              faces_dir / "group_photos/2008_001322.jpg", faces_dir / "non_faces/eagle.jpg"]
    return lfw + [p for p in others if p.is_file()]


def make_case(sources: list[Path], seed: int, index: int) -> FuzzCase:
    rng = random.Random(seed * 1_000_003 + index)
    source = sources[rng.randrange(len(sources))]
    data = bytearray(source.read_bytes())
    mutation = MUTATIONS[rng.randrange(len(MUTATIONS))]
    if mutation == "bit_flips":
        for _ in range(rng.randint(1, 40)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    elif mutation == "truncate":
        data = data[: rng.randrange(1, len(data))]
    elif mutation == "header_damage":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(min(len(data), 200))] = rng.randrange(256)
    elif mutation == "insert_bytes":
        position = rng.randrange(len(data))
        data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif mutation == "huge_dimensions":
        data = _lie_about_size(data, rng)
    elif mutation == "zero_fill":
        start = rng.randrange(len(data))
        length = rng.randint(1, 4096)
        data[start : start + length] = bytes(min(length, len(data) - start))
    return FuzzCase(index, source, mutation, bytes(data))


def _lie_about_size(data: bytearray, rng: random.Random) -> bytearray:
    """Claim an enormous (or zero) width and height in the header, keeping the data."""
    width, height = rng.choice([(65535, 65535), (30000, 30000), (0, 480), (1, 1_000_000)])
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        # IHDR: length(4) 'IHDR'(4) width(4) height(4) ... then CRC over type + data.
        data[16:24] = struct.pack(">II", min(width, 2**31 - 1), min(height, 2**31 - 1))
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
        return data
    # JPEG: the first SOF0/SOF2 marker holds height then width.
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
            return data
    return data
