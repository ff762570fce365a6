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


def set_tag(src: Path, dst: Path, name: str, value: int, page: int = 0) -> Path:
    """A copy whose image ``page`` has tag ``name`` (a single number) set to ``value``."""
    shutil.copyfile(src, dst)
    offset, dtype, _, order = _tag(dst, page, name)
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


def tile_table(path: Path, page: int = 0) -> tuple[list[int], list[int]]:
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        return list(p.dataoffsets), list(p.databytecounts)


def scramble_tiles(src: Path, dst: Path, tiles: list[int], page: int = 0, seed: int = 0) -> Path:
    """A copy whose ``tiles`` of image ``page`` hold random bytes after their first 16 (JPEG garbage)."""
    shutil.copyfile(src, dst)
    offsets, counts = tile_table(src, page)
    rng = random.Random(seed)
    with open(dst, "r+b") as handle:
        for index in tiles:
            handle.seek(offsets[index] + 16)
            handle.write(bytes(rng.randrange(256) for _ in range(max(0, counts[index] - 16))))
    return dst


def zero_some_bytecounts(src: Path, dst: Path, tiles: list[int], page: int = 0) -> Path:
    """A copy where the listed tiles of image ``page`` say they hold zero bytes (read back as blank)."""
    shutil.copyfile(src, dst)
    offset, dtype, count, order = _tag(dst, page, "TileByteCounts")
    size = struct.calcsize(_FORMATS[int(dtype)])
    for index in tiles:
        _write_values(dst, offset + index * size, int(dtype), [0], order)
    return dst


def redirect_tiles(src: Path, dst: Path, tiles: list[int], to: int, page: int = 0) -> Path:
    """A copy whose listed tiles of image ``page`` point at tile ``to``'s data (a damaged tile table
    that still reads: each of them shows what tile ``to`` shows)."""
    shutil.copyfile(src, dst)
    offsets, counts = tile_table(src, page)
    for name, values in (("TileOffsets", offsets), ("TileByteCounts", counts)):
        offset, dtype, _, order = _tag(dst, page, name)
        size = struct.calcsize(_FORMATS[int(dtype)])
        for index in tiles:
            _write_values(dst, offset + index * size, int(dtype), [values[to]], order)
    return dst


def small_pyramid(rgb, path: Path, tile: int = 256, mpp: float = 0.5) -> Path:
    """``rgb`` as a 2-level tiled JPEG TIFF (a generic-tiff to OpenSlide, sizes stored as LONG)."""
    import numpy as np

    resolution = (10_000 / mpp, 10_000 / mpp)  # pixels per cm
    with tifffile.TiffWriter(path) as tif:
        for level, image in enumerate((rgb, np.ascontiguousarray(rgb[::2, ::2]))):
            tif.write(image, tile=(tile, tile), compression="jpeg", photometric="rgb",
                      subfiletype=1 if level else 0, resolution=(resolution[0] / 2**level, resolution[1] / 2**level),
                      resolutionunit="CENTIMETER")
    return path


def large_single_level(tissue, path: Path, side: int, tile: int = 256, mpp: float = 0.5) -> Path:
    """A ``side`` x ``side`` single-level tiled JPEG TIFF: glass, with ``tissue`` (RGB, a multiple
    of ``tile`` a side) repeated over a band across the middle. Written tile by tile, never whole."""
    import numpy as np

    glass = np.full((tile, tile, 3), 242, dtype=np.uint8)
    th, tw = tissue.shape[0] // tile, tissue.shape[1] // tile
    n = -(-side // tile)

    def tiles():
        for row in range(n):
            for col in range(n):
                if n // 3 <= row < 2 * n // 3:
                    r, c = row % th, col % tw
                    yield np.ascontiguousarray(tissue[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile])
                else:
                    yield glass

    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        tif.write(tiles(), shape=(side, side, 3), dtype="uint8", tile=(tile, tile), compression="jpeg",
                  photometric="rgb", resolution=(10_000 / mpp, 10_000 / mpp), resolutionunit="CENTIMETER")
    return path
