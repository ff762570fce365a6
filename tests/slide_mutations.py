"""Damaged copies of real slide files, made at test time: header fields rewritten, tile tables
zeroed, files truncated, bits flipped. Offsets come from tifffile, so each change hits the field named."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import tifffile

_FORMATS = {1: "B", 3: "H", 4: "I", 16: "Q"}  # TIFF type code -> struct format


def _write_values(path: Path, offset: int, dtype: int, values: list[int], byteorder: str) -> None:
    fmt = byteorder + _FORMATS[dtype] * len(values)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, *values))


def _tag(path: Path, page: int, name: str):
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[page].tags[name]
        return tag.valueoffset, tag.dtype, tag.count, tif.byteorder


def set_size(src: Path, dst: Path, width: int, height: int, page: int = 0) -> Path:
    """A copy whose image ``page`` declares ``width`` x ``height`` px (tile tables unchanged)."""
    shutil.copyfile(src, dst)
    for name, value in (("ImageWidth", width), ("ImageLength", height)):
        offset, dtype, _, order = _tag(dst, page, name)
        if dtype == 3 and value > 0xFFFF:
            raise ValueError(f"{name} is a SHORT in {src.name}: {value} does not fit")
        _write_values(dst, offset, int(dtype), [value], order)
    return dst


def zero_tile_bytecounts(src: Path, dst: Path, page: int = 0) -> Path:
    """A copy whose image ``page`` says each of its tiles holds zero bytes."""
    shutil.copyfile(src, dst)
    offset, dtype, count, order = _tag(dst, page, "TileByteCounts")
    _write_values(dst, offset, int(dtype), [0] * count, order)
    return dst


def truncate(src: Path, dst: Path, keep: float) -> Path:
    """The first ``keep`` share of the file."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def flip_bits(src: Path, dst: Path, seed: int, flips: int = 1, header_bytes: int | None = None) -> Path:
    """A copy with ``flips`` random bits flipped, within the first ``header_bytes`` when given."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    limit = min(len(data), header_bytes or len(data))
    for _ in range(flips):
        position = rng.randrange(limit)
        data[position] ^= 1 << rng.randrange(8)
    dst.write_bytes(bytes(data))
    return dst


def ifd_field_offsets(path: Path) -> list[int]:
    """File offsets of every IFD entry's value in a TIFF: where header damage matters most."""
    offsets = []
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            for tag in page.tags.values():
                offsets.append(tag.valueoffset)
    return offsets


def flip_header_field(src: Path, dst: Path, seed: int) -> Path:
    """A copy with one bit flipped in one IFD value (sizes, offsets, counts, compression...)."""
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    offset = rng.choice(ifd_field_offsets(src)) + rng.randrange(4)
    data[min(offset, len(data) - 1)] ^= 1 << rng.randrange(8)
    dst.write_bytes(bytes(data))
    return dst
