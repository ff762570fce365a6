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

# Bytes a plain image may take decoded when the process has no memory limit (``--workers 0``).
PLAIN_DECODE_DEFAULT = 2 * 1024**3
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
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Bounds on how far a file's bytes can stretch, from how each format encodes (generous: meant to
# catch damaged headers, never a real image). Deflate (PNG) compresses at most 1032:1. A Huffman-coded
# JPEG spends at least one bit on every 8 x 8 block of every component: 512 px a byte at most for grey.
# Any other format (sparse ones leave background out): a bound far above any slide's.
DEFLATE_MAX_RATIO = 1032
JPEG_MAX_PIXELS_PER_BYTE = 1024
GENERIC_MAX_PIXELS_PER_BYTE = 4096
# Headers, tables and small images: bytes a file may lack before the bounds above apply.
SLACK_BYTES = 1 << 16
# DICOM transfer syntaxes whose pixel data is stored uncompressed.
DICOM_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def check_declared_size(slide: SlideFile) -> None:
    """Raise :class:`SlideError` when the declared size cannot be real or is not backed by the file,
    or when a plain image would have to be decoded whole into more memory than a reader may use."""
    width, height = slide.dimensions
    if width <= 0 or height <= 0:
        raise SlideError(f"the header declares an empty slide ({width} x {height} px): the file is damaged")
    if max(width, height) > MAX_SIDE:
        raise SlideError(f"the header declares {width:,} x {height:,} px, larger than any scanner makes "
                         f"(over {MAX_SIDE:,} px a side): the file is damaged")
    problem = declared_size_problem(slide.path, slide.dimensions)
    if problem:
        raise SlideError(problem)
    if slide.is_plain_image:
        check_plain_decode(slide)


def declared_size_problem(path: Path, dimensions: tuple[int, int]) -> str | None:
    """Why the file's bytes cannot hold the pixels its header declares, by format, or None."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head[:4] in TIFF_MAGIC:
        return tiff_structure_problem(path)
    size = path.stat().st_size
    if head.startswith(PNG_MAGIC):
        return png_problem(head, size)
    if head.startswith(JPEG_MAGIC):
        return _ratio_problem("JPEG", dimensions, size, JPEG_MAX_PIXELS_PER_BYTE)
    if head[128:132] == b"DICM":
        return dicom_problem(path, size)
    return _ratio_problem("slide", dimensions, slide_bytes(path), GENERIC_MAX_PIXELS_PER_BYTE)


def _ratio_problem(kind: str, dimensions: tuple[int, int], size: int, pixels_per_byte: int) -> str | None:
    pixels = dimensions[0] * dimensions[1]
    if pixels <= pixels_per_byte * (size + SLACK_BYTES):
        return None
    return (f"the header declares {dimensions[0]:,} x {dimensions[1]:,} px but the {kind} holds {size:,} bytes, "
            f"fewer than any encoding of that many pixels needs (over {pixels_per_byte:,} px a byte): "
            "the header is damaged or the file truncated")


def png_problem(head: bytes, size: int) -> str | None:
    """A PNG whose rows, as its header declares them, deflate could not have packed into ``size`` bytes."""
    if head[12:16] != b"IHDR":
        return "damaged PNG: its first chunk is not the image header"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, colour = head[24], head[25]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 4)
    raw = height * (1 + -(-width * channels * depth // 8))
    if raw <= DEFLATE_MAX_RATIO * (size + SLACK_BYTES):
        return None
    return (f"the header declares {width:,} x {height:,} px ({raw:,} bytes of rows) but the PNG holds {size:,} "
            f"bytes, more than deflate can pack in them ({DEFLATE_MAX_RATIO}:1 at most): the header is damaged "
            "or the file truncated")


def dicom_problem(path: Path, size: int) -> str | None:
    """A DICOM instance whose frames cannot tile its declared pixel matrix, or whose bytes cannot
    hold its frames (uncompressed: exactly; compressed: the JPEG bound)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:
        return f"damaged DICOM header: {str(error).strip() or type(error).__name__}"
    width = int(ds.get("TotalPixelMatrixColumns") or ds.get("Columns") or 0)
    height = int(ds.get("TotalPixelMatrixRows") or ds.get("Rows") or 0)
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(ds.get("NumberOfFrames") or 1)
    if not (rows and cols and width and height):
        return None  # not a tiled image (a label, a report): OpenSlide decides
    if str(ds.get("DimensionOrganizationType", "")).upper() == "TILED_FULL":
        planes = int(ds.get("TotalPixelMatrixFocalPlanes") or 1) * int(ds.get("NumberOfOpticalPaths") or 1)
        needed = -(-width // cols) * -(-height // rows) * max(1, planes)
        if frames < needed:
            return (f"the header declares {width:,} x {height:,} px in {cols} x {rows} px tiles ({needed:,} tiles) "
                    f"but holds {frames:,} frames: the header is damaged")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax in DICOM_NATIVE:
        needed_bytes = frames * rows * cols * int(ds.get("SamplesPerPixel") or 1) * max(1, int(ds.get("BitsAllocated") or 8)) // 8
        if needed_bytes > size:
            return (f"truncated file: its {frames:,} frames of {cols} x {rows} px need {needed_bytes:,} bytes "
                    f"uncompressed but it holds {size:,}")
        return None
    return _ratio_problem("DICOM file", (frames * cols, rows), size, JPEG_MAX_PIXELS_PER_BYTE)


def slide_bytes(path: Path) -> int:
    """The bytes a slide's pixels may lie in: its file, plus the data folder beside it (MIRAX keeps
    its tiles in a folder named like the file; Hamamatsu VMS lists JPEG files in its folder)."""
    total = path.stat().st_size
    folder = path.with_suffix("")
    if path.suffix.lower() in (".vms", ".vmu"):
        total += sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file() and p != path)
    elif folder.is_dir():
        total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total


def check_plain_decode(slide: SlideFile) -> None:
    """Refuse a plain image (PNG, JPEG, flat TIFF) whose pixels would not fit in memory decoded whole:
    its reader holds the whole image to read any part of it."""
    needed = slide.plain_decoded_bytes()
    budget = plain_decode_budget()
    if needed > budget:
        raise SlideError(
            f"a plain {slide.plain_format or 'image'} of {slide.dimensions[0]:,} x {slide.dimensions[1]:,} px is "
            f"decoded whole to read any part of it ({needed / 1024**3:.3g} GB), more than the {budget / 1024**3:.3g} GB "
            "a reader may use: convert it to a tiled pyramidal TIFF (e.g. `vips tiffsave IN OUT.tif --tile "
            "--pyramid --compression jpeg`) and add that")


def plain_decode_budget() -> int:
    """Bytes a plain image may take decoded: half the process's address-space limit (the isolated
    reader's --max-memory), the rest left for the reader's own work; without a limit, DEFAULT."""
    import resource

    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY or limit <= 0:
        return PLAIN_DECODE_DEFAULT
    return limit // 2


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
