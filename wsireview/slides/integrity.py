"""Is a slide file what its header says? Declared sizes against the file, and pixels read back.

A damaged header can declare a slide millions of pixels wide, and damaged tile tables can make
every tissue patch read as blank glass; OpenSlide opens such files without complaint. These
checks fail them with the reason before they reach the catalog as "ready".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsireview.slides.reader import SlideFile, SlideError

# Larger than any scanner makes (a 250 mm field at 0.25 µm/px is 1,000,000 px).
MAX_SIDE = 1_000_000
# Tiles are 240 to 1024 px in practice; a reader allocates a whole tile, so a damaged tile size
# of 262,144 px would ask for hundreds of GB.
MAX_TILE_SIDE = 16_384
# A patch grid larger than this is refused before it is computed (its arrays would need GBs).
MAX_GRID_CELLS = 4_000_000
# Patches read back before a slide is ready: the square root of the grid, within these bounds.
MIN_SAMPLE, MAX_SAMPLE = 16, 256
# A read patch this uniform (standard deviation of its pixel values) holds no image: missing tile data.
BLANK_STD = 2.0
# A patch whose pixels are this bright and grey (every channel above GLASS_MIN) in this share is glass.
GLASS_MIN, GLASS_SHARE = 215, 0.95

TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def check_declared_size(path: Path, dimensions: tuple[int, int]) -> None:
    """Raise :class:`SlideError` when the declared size cannot be real or is not backed by the file."""
    width, height = dimensions
    if width <= 0 or height <= 0:
        raise SlideError(f"the header declares an empty slide ({width} x {height} px): the file is damaged")
    if max(width, height) > MAX_SIDE:
        raise SlideError(f"the header declares {width:,} x {height:,} px, larger than any scanner makes "
                         f"(over {MAX_SIDE:,} px a side): the file is damaged")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic in TIFF_MAGIC:
        problem = tiff_structure_problem(path)
        if problem:
            raise SlideError(problem)


def tiff_structure_problem(path: Path) -> str | None:
    """Why a TIFF's levels cannot hold the pixels they declare (tile tables that do not match the
    declared size, tiles past the end of the file, levels without data), or None."""
    import tifffile

    size = path.stat().st_size
    complaints = _Complaints()
    logger = logging.getLogger("tifffile")
    logger.addHandler(complaints)
    propagate, logger.propagate = logger.propagate, False
    try:
        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                problem = _page_problem(index, page, size)
                if problem:
                    return problem
    except Exception as error:  # tifffile refuses what OpenSlide accepted: report the structure problem
        return f"damaged TIFF structure: {str(error).strip() or type(error).__name__}"
    finally:
        logger.removeHandler(complaints)
        logger.propagate = propagate
    broken_chain = next((m for m in complaints.messages if "invalid page offset" in m), None)
    if broken_chain:
        offset = broken_chain.rsplit(" ", 1)[-1]
        return (f"truncated or damaged file: its chain of images points to offset {offset}, "
                f"{'past its end' if offset.isdigit() and int(offset) >= size else 'outside the file'} ({size:,} bytes)")
    return None


class _Complaints(logging.Handler):
    """Collects what tifffile logs about a file (it logs, rather than raises, on a broken chain)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _page_problem(index: int, page, file_size: int) -> str | None:
    if not hasattr(page, "dataoffsets"):
        return None
    width, height = page.imagewidth, page.imagelength
    offsets, counts = page.dataoffsets, page.databytecounts
    if page.is_tiled and max(page.tilewidth, page.tilelength) > MAX_TILE_SIDE:
        return (f"image {index} declares tiles of {page.tilewidth:,} x {page.tilelength:,} px, larger than any "
                f"scanner writes (over {MAX_TILE_SIDE:,} px a side): the header is damaged")
    if page.is_tiled:
        expected = math.ceil(width / page.tilewidth) * math.ceil(height / page.tilelength) * max(1, page.tiledepth)
        unit = "tiles"
    else:
        rows = page.rowsperstrip or height
        expected = math.ceil(height / min(rows, height)) if height else 0
        unit = "strips"
    if page.planarconfig == 2:
        expected *= page.samplesperpixel
    if len(offsets) < expected:
        return (f"image {index} declares {width:,} x {height:,} px ({expected:,} {unit}) but holds {len(offsets):,} "
                f"{unit}: the header is damaged")
    past_end = sum(1 for o, c in zip(offsets, counts) if c and o + c > file_size)
    if past_end:
        return (f"truncated file: {past_end:,} of {len(offsets):,} {unit} of image {index} lie past its end "
                f"({file_size:,} bytes)")
    empty = sum(1 for c in counts[:expected] if c == 0)
    if expected and empty * 2 > expected:
        return f"image {index}: {empty:,} of {expected:,} {unit} hold no data (zero byte counts): the file is damaged"
    return None


def check_grid_size(dimensions: tuple[int, int], patch_size0: int) -> None:
    """Refuse a grid too large to compute: a damaged header, or a patch size far too small."""
    cells = (dimensions[0] // max(1, patch_size0)) * (dimensions[1] // max(1, patch_size0))
    if cells > MAX_GRID_CELLS:
        raise SlideError(f"{dimensions[0]:,} x {dimensions[1]:,} px in {patch_size0} px patches is {cells:,} grid "
                         f"cells, over the limit of {MAX_GRID_CELLS:,}: choose a larger --patch-size")


def sample_indices(count: int) -> list[int]:
    """Which of ``count`` patches (in grid order) to read back: spread evenly over the grid,
    the square root of the count, at least 16 (or all), at most 256."""
    if count <= 0:
        return []
    n = min(count, max(MIN_SAMPLE, min(MAX_SAMPLE, math.ceil(math.sqrt(count)))))
    return sorted({int(i) for i in np.linspace(0, count - 1, n).round()})


def verify_patches(slide: SlideFile, positions: Sequence[tuple[int, int]], size0: int, out_px: int) -> int:
    """Read the tissue patches at ``positions`` back; raise :class:`SlideError` when any cannot be
    read or when most of them are blank (tile data missing). Returns how many were read."""
    failed, blank, first_error = 0, 0, None
    for x, y in positions:
        try:
            pixels = slide.read_array(x, y, size0, min(out_px, size0))
        except SlideError as error:
            failed += 1
            first_error = first_error or str(error)
            continue
        if is_blank(pixels):
            blank += 1
    total = len(positions)
    if failed:
        raise SlideError(f"{failed} of {total} sampled tissue patches cannot be read: {first_error}")
    if total and blank * 2 > total:
        raise SlideError(f"{blank} of {total} sampled tissue patches are blank glass where the thumbnail shows tissue: "
                         "the full-resolution tile data is missing or damaged")
    return total


def is_blank(pixels: np.ndarray) -> bool:
    """Whether a read patch holds no image (one flat colour) or only glass (bright and grey)."""
    rgb = pixels[..., :3]
    return float(rgb.std()) < BLANK_STD or float((rgb.min(axis=-1) > GLASS_MIN).mean()) >= GLASS_SHARE
