"""Write a pyramidal, tiled, JPEG-compressed TIFF from a stream of level-0 tiles.

Level 0 goes to the file tile by tile as it is rendered. Each coarser level (4x smaller) is
averaged from the stream on the fly, keeping only one strip of tiles per level in memory; its
finished tiles wait as compressed JPEG until level 0 is written. So a 40,000 x 30,000 slide never
holds a level in memory. OpenSlide reads the result as a generic tiled TIFF, with the mpp from
the TIFF resolution tags (pixels per centimetre).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import imagecodecs
import numpy as np
import tifffile

TILE = 512
DOWNSAMPLE = 4
SMALLEST_LEVEL = 512  # stop adding levels once a level's long side is at most this
MIN_LEVELS = 3
JPEG_QUALITY = 85
HOLD_QUALITY = 95  # quality of the pyramid tiles held until level 0 is written


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """(width, height) of each pyramid level, level 0 first, each 4x smaller than the last.

    At least 3 levels (what a reader of real slides expects), down to a long side <= 512.
    """
    sizes = [(width, height)]
    while max(sizes[-1]) > SMALLEST_LEVEL or (len(sizes) < MIN_LEVELS and min(sizes[-1]) >= 4 * DOWNSAMPLE):
        w, h = sizes[-1]
        sizes.append((max(1, w // DOWNSAMPLE), max(1, h // DOWNSAMPLE)))
    return sizes


def tile_grid(width: int, height: int) -> list[tuple[int, int]]:
    """Level-0 tile origins in the order the TIFF stores them (row-major)."""
    return [(x, y) for y in range(0, height, TILE) for x in range(0, width, TILE)]


class _Level:
    """One pyramid level built from the tiles of the level above, one strip at a time."""

    def __init__(self, width: int, height: int, parent: tuple[int, int]):
        self.width, self.height = width, height
        self.cols = -(-width // TILE)
        self.rows = -(-height // TILE)
        self.parent_cols = -(-parent[0] // TILE)
        self.parent_rows = -(-parent[1] // TILE)
        self.tiles: list[bytes | bytearray] = []
        self.strip = np.full((TILE, self.cols * TILE, 3), 255, dtype=np.uint8)
        self.child: _Level | None = None

    def add(self, index: int, tile: np.ndarray) -> None:
        """Take tile ``index`` (row-major) of the parent level."""
        row, col = divmod(index, self.parent_cols)
        part = TILE // DOWNSAMPLE
        small = _box_mean(tile)
        y = (row % DOWNSAMPLE) * part
        x = col * part
        if x < self.strip.shape[1]:
            self.strip[y:y + part, x:x + part] = small.astype(np.uint8)[:, : self.strip.shape[1] - x]
        if col == self.parent_cols - 1 and (row % DOWNSAMPLE == DOWNSAMPLE - 1 or row == self.parent_rows - 1):
            self._flush()

    def _flush(self) -> None:
        if len(self.tiles) >= self.rows * self.cols:
            return
        for c in range(self.cols):
            tile = self.strip[:, c * TILE:(c + 1) * TILE]
            if self.child is not None:
                self.child.add(len(self.tiles), tile)
            self.tiles.append(imagecodecs.jpeg8_encode(tile, level=HOLD_QUALITY))
        self.strip[:] = 255

    def decoded(self) -> Iterator[np.ndarray]:
        for data in self.tiles:
            yield imagecodecs.jpeg8_decode(data)


def _box_mean(tile: np.ndarray) -> np.ndarray:
    """Mean of each DOWNSAMPLE x DOWNSAMPLE block (rounded), by strided adds: faster than reduce."""
    wide = tile.astype(np.uint16)
    rows = cast(np.ndarray, sum(wide[k::DOWNSAMPLE] for k in range(DOWNSAMPLE)))  # sum() starts from 0
    total = cast(np.ndarray, sum(rows[:, k::DOWNSAMPLE] for k in range(DOWNSAMPLE)))
    return (total + DOWNSAMPLE**2 // 2) // DOWNSAMPLE**2


def write_pyramid_tiff(
    path: Path, width: int, height: int, tiles: Iterable[np.ndarray], mpp: float = 0.5, description: str = ""
) -> list[tuple[int, int]]:
    """Write level-0 ``tiles`` (TILE x TILE RGB, row-major, edges may overhang) and the levels below.

    Returns the level sizes written.
    """
    sizes = level_sizes(width, height)
    levels = [_Level(w, h, sizes[i]) for i, (w, h) in enumerate(sizes[1:])]
    for parent, child in zip(levels, levels[1:]):
        parent.child = child
    first = levels[0] if levels else None

    def level0() -> Iterator[np.ndarray]:
        for index, tile in enumerate(tiles):
            if tile.shape != (TILE, TILE, 3):
                raise ValueError(f"tile {index} has shape {tile.shape}, expected {(TILE, TILE, 3)}")
            if first is not None:
                first.add(index, tile)
            yield tile

    pixels_per_cm = 1e4 / mpp
    options: dict[str, Any] = dict(
        tile=(TILE, TILE), photometric="rgb", compression="jpeg", compressionargs={"level": JPEG_QUALITY},
        resolution=(pixels_per_cm, pixels_per_cm), resolutionunit="CENTIMETER", metadata=None,
    )
    with tifffile.TiffWriter(path, bigtiff=width * height > 200_000_000) as tif:
        tif.write(level0(), shape=(height, width, 3), dtype=np.uint8, description=description, **options)
        for level in levels:
            tif.write(level.decoded(), shape=(level.height, level.width, 3), dtype=np.uint8, subfiletype=1, **options)
    return sizes
