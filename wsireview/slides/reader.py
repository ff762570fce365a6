"""Open a slide (OpenSlide, or a plain image as a one-level slide) and read it at a target resolution."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image, UnidentifiedImageError

from wsireview.errors import WsireviewError
from wsireview.slides.magnification import mpp_from_magnification

# A microscope's level 0 lies between about 0.05 and 20 µm per pixel. Values outside are file
# defaults (a plain TIFF at 72 dpi reads as 352.8 µm/px) and are not used to size patches.
PLAUSIBLE_MPP = (0.05, 20.0)

# A glass slide is 75 x 25 mm: no level 0 spans more than this many mm a side.
MAX_SLIDE_MM = 80
# How far a scanner's mpp strays from its objective's convention (10 µm / power) at most.
MPP_OBJECTIVE_FACTOR = 3.0
# Microscope objectives' powers: an objective power outside these is itself suspect.
OBJECTIVE_POWERS = frozenset({1.25, 2, 2.5, 4, 5, 10, 16, 20, 25, 40, 50, 60, 63, 80, 100})

# The patch grid ingest builds and export falls back to: 224 px squares at 0.5 µm/px (20x).
DEFAULT_PATCH_SIZE = 224
DEFAULT_TARGET_MPP = 0.5

# A thumbnail reads a pyramid level whole up to this many pixels (64 MB as RGBA), else region by
# region of this side, reduced as it goes.
WHOLE_LEVEL_PIXELS = 4096 * 4096
REGION_SIDE = 2048

# Plain images are decoded whole; guard against decompression bombs but allow big scans.
Image.MAX_IMAGE_PIXELS = 2_000_000_000


class SlideError(WsireviewError):
    """A slide that cannot be used, with a reason a person can act on."""


def explain_open_error(path: Path, error: BaseException) -> str:
    """Turn a reader's exception into a specific, human reason."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            return "empty file (0 bytes)"
        if truncation := truncated_tiff(path):
            return truncation
    except OSError:
        pass
    text = str(error).strip().replace(str(path), path.name)
    lowered = text.lower()
    if isinstance(error, Image.DecompressionBombError):
        return f"the header declares more pixels than any slide has: the file is damaged ({text})"
    if "short read" in lowered:
        return f"truncated file: {text}"
    if "invalid tiff" in lowered or "cannot get required tiff tag" in lowered or "cannot handle" in lowered:
        return f"damaged TIFF header: {text}"
    if "unsupported tiff compression" in lowered or "compression" in lowered:
        return f"unsupported compression ({text})"
    if isinstance(error, UnidentifiedImageError) or "unsupported or missing image file" in lowered:
        return "not a slide: neither OpenSlide nor the plain-image reader recognises this file"
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"cannot open: {type(error).__name__}: {text}"


def truncated_tiff(path: Path) -> str | None:
    """Why a TIFF is cut short when its first image directory lies past the end of the file, else None."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(16)
    formats = {b"II*\0": "<I", b"MM\0*": ">I", b"II+\0": "<Q", b"MM\0+": ">Q"}
    fmt = formats.get(head[:4])
    if fmt is None or len(head) < 16:
        return None
    offset = struct.unpack(fmt, head[4:8] if fmt[1] == "I" else head[8:16])[0]
    if offset < size:
        return None
    return f"truncated file: its first image directory lies at offset {offset:,}, past its end ({size:,} bytes)"


def explain_read_error(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return f"corrupt tile data: pixels cannot be read ({text})"


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def sampled_file_hash(path: Path, samples: int = 64, chunk: int = 1 << 16) -> str:
    """A short hash of the file's size and ``samples`` chunks spread over all of it.

    Cheap on multi-GB files, and unlike OpenSlide's quickhash (which for a generic TIFF covers
    only the smallest level) it sees every part of the file, so damaged copies differ.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        step = max(chunk, size // samples)
        for offset in range(0, size, step):
            handle.seek(offset)
            digest.update(handle.read(chunk))
    return digest.hexdigest()[:16]


def same_content(stored: str | None, current: str) -> bool:
    """Whether a stored content hash names the same file as ``current``.

    A hash recorded before the sampled part was added (``quickhash1:X``) matches ``quickhash1:X+...``.
    """
    return stored is not None and (stored == current or current.startswith(stored + "+"))


def file_still_matches(stored: str | None, path: Path) -> bool | None:
    """Whether the file at ``path`` is still the one a stored content hash was taken of, judged
    from its bytes alone (no reader opened); None when the hash cannot tell without a reader."""
    if not stored:
        return None
    if stored.startswith("sha256:"):
        return file_hash(path) == stored
    if "+sample:" in stored:
        return stored.rsplit("+sample:", 1)[1] == sampled_file_hash(path)
    return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Resolution:
    """How patches are sized on one slide: the level-0 side of a patch and where that came from."""

    level0_size: int
    source: str  # "mpp", "objective-power" or "level0-pixels"
    note: str | None = None


def plausible_mpp(mpp: float | None) -> float | None:
    """The level-0 mpp when a microscope could have produced it, else None."""
    return mpp if mpp and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None


def patch_resolution(
    patch_size: int, target_mpp: float, mpp: float | None, objective_power: float | None,
    dimensions: tuple[int, int] | None = None,
) -> Resolution:
    """The level-0 side of a ``patch_size`` px patch at ``target_mpp``, from the slide's metadata.

    The one rule ingest and export share (see :func:`judge_mpp`): the mpp when it holds up, else
    the objective power (20x is 0.5 µm/px, the convention CLAM and TRIDENT use), else level-0 pixels.
    """
    level0, source, note = judge_mpp(mpp, objective_power, dimensions)
    if level0 is not None:
        return Resolution(max(1, round(patch_size * target_mpp / level0)), source, note)
    return Resolution(patch_size, "level0-pixels", note or "no mpp and no objective power in the file")


def level0_mpp(mpp: float | None, objective_power: float | None,
               dimensions: tuple[int, int] | None = None) -> tuple[float | None, str]:
    """The µm per level-0 pixel and where it came from: the file's mpp when it holds up ("mpp"),
    else the objective power ("objective-power"), else unknown (None, "level0-pixels"): sizes are
    then only in pixels. See :func:`judge_mpp`."""
    level0, source, _ = judge_mpp(mpp, objective_power, dimensions)
    return level0, source


def judge_mpp(mpp: float | None, objective_power: float | None,
              dimensions: tuple[int, int] | None = None) -> tuple[float | None, str, str | None]:
    """The level-0 µm/px to size things by, where it came from, and what was wrong with the file's mpp.

    A damaged header can hold a plausible but wrong mpp (2.5 for 0.25): every patch would then
    cover a tenth of the tissue it should. The mpp is checked against what else the file says:
    a level 0 that the mpp makes larger than a glass slide means the mpp is wrong; an mpp more
    than 3x away from its objective's convention (a 20x objective images at 0.24 to 0.55 µm/px on
    real scanners) gives way to the objective when that is a microscope objective's power
    (1.25x to 100x) that fits the slide on glass, and is kept, with the note, when the objective
    power itself cannot be right.
    """
    objective = objective_power if objective_power and objective_power > 0 else None
    note = None
    if mpp and not plausible_mpp(mpp):
        note = f"recorded mpp {mpp:.4g} µm/px is implausible for a microscope"
    elif mpp and dimensions is not None and _larger_than_glass(mpp, dimensions):
        note = (f"recorded mpp {mpp:.4g} µm/px makes level 0 {dimensions[0] * mpp / 1000:,.0f} x "
                f"{dimensions[1] * mpp / 1000:,.0f} mm, larger than a glass slide: the header is damaged")
    elif mpp and objective:
        expected = mpp_from_magnification(objective)
        if not 1 / MPP_OBJECTIVE_FACTOR <= mpp / expected <= MPP_OBJECTIVE_FACTOR:
            disagree = (f"recorded mpp {mpp:.4g} µm/px disagrees with the objective power {objective:g}x "
                        f"(about {expected:.2g} µm/px)")
            if objective not in OBJECTIVE_POWERS or _larger_than_glass(expected, dimensions):
                return mpp, "mpp", f"{disagree}, which cannot be right for this slide: the mpp is used; check the file"
            note = f"{disagree}: one of them is damaged; sizes follow the objective; check the file"
    if mpp and note is None:
        return mpp, "mpp", None
    if objective and not _larger_than_glass(mpp_from_magnification(objective), dimensions):
        return mpp_from_magnification(objective), "objective-power", note
    return None, "level0-pixels", note


def _larger_than_glass(mpp: float, dimensions: tuple[int, int] | None) -> bool:
    """Whether level 0 at ``mpp`` µm/px would span more than a glass slide."""
    return bool(dimensions) and max(dimensions or (0,)) * mpp / 1000 > MAX_SLIDE_MM


class SlideFile:
    """One whole-slide image: its metadata, a thumbnail, and patches read at a target resolution."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._osr = openslide.open_slide(str(self.path))
        except Exception as error:  # OpenSlide, PIL and OS errors all end here with a reason
            raise SlideError(explain_open_error(self.path, error)) from error
        props = self._osr.properties
        self.is_plain_image = isinstance(self._osr, openslide.ImageSlide)
        self.plain_format: str | None = None  # PNG, JPEG, TIFF, ... for a plain image
        self._plain_mode: str | None = None
        if self.is_plain_image:
            with Image.open(self.path) as header:  # the header only: nothing is decoded
                self.plain_format, self._plain_mode = header.format, header.mode
        self.vendor: str = "image" if self.is_plain_image else props.get(openslide.PROPERTY_NAME_VENDOR, "unknown")
        self.dimensions: tuple[int, int] = self._osr.dimensions
        self.level_count: int = self._osr.level_count
        self.level_dimensions = self._osr.level_dimensions
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in self._osr.level_downsamples)
        self.mpp_x = _float(props.get(openslide.PROPERTY_NAME_MPP_X))
        self.mpp_y = _float(props.get(openslide.PROPERTY_NAME_MPP_Y))
        self.objective_power = _float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
        self.quickhash = props.get(openslide.PROPERTY_NAME_QUICKHASH1)
        # µm per level-0 pixel (None: sizes only in pixels), and whether the file or the objective said so.
        self.level0_mpp, self.mpp_source = level0_mpp(self.mpp_x, self.objective_power, self.dimensions)

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    def content_hash(self) -> str:
        """OpenSlide's quickhash plus a sampled hash of the file where there is one (fast on huge
        files), else a hash of the whole file."""
        if not self.quickhash:
            return file_hash(self.path)
        return f"quickhash1:{self.quickhash}+sample:{sampled_file_hash(self.path)}"

    # -- resolution -----------------------------------------------------------------------------
    def resolution(self, patch_size: int, target_mpp: float) -> Resolution:
        """The level-0 size of a ``patch_size`` px patch at ``target_mpp``, and how it was derived."""
        return patch_resolution(patch_size, target_mpp, self.mpp_x, self.objective_power, self.dimensions)

    def plain_decoded_bytes(self) -> int:
        """The memory a plain image takes decoded (its reader holds it whole): PIL keeps 1 byte a
        pixel for grey and palette images, 2 for 16-bit grey, 4 for everything else (RGB included)."""
        mode = self._plain_mode or "RGB"
        per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
        return self.dimensions[0] * self.dimensions[1] * per_pixel

    # -- pixels ---------------------------------------------------------------------------------
    def thumbnail(self, max_side: int = 1024) -> Image.Image:
        """An RGB thumbnail, long side up to ``max_side``, read from the best pyramid level.

        A small level is read whole; a big one (a single-level slide, or a sparse pyramid) is read
        in regions, each reduced as it is read, so memory stays bounded whatever the level's size.
        """
        width, height = self.dimensions
        downsample = max(width, height) / max_side
        level = self._osr.get_best_level_for_downsample(downsample) if downsample > 1 else 0
        level_width, level_height = self.level_dimensions[level]
        try:
            if self.is_plain_image:
                return self._plain_thumbnail(max_side)
            if level_width * level_height <= WHOLE_LEVEL_PIXELS:
                return self._osr.get_thumbnail((max_side, max_side)).convert("RGB")
            return self._thumbnail_by_regions(level, max_side)
        except SlideError:
            raise
        except Exception as error:
            raise SlideError(explain_read_error(error)) from error

    def _plain_thumbnail(self, max_side: int) -> Image.Image:
        """A plain image reduced as it is decoded: a JPEG at 1/2 to 1/8 scale by its decoder
        (``draft``: a 20,000 px JPEG is decoded 2,500 px wide), others decoded once and reduced in
        place, without the whole-image copies OpenSlide's plain-image thumbnail makes."""
        with Image.open(self.path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=None)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return flat
            return image.convert("RGB")

    def _thumbnail_by_regions(self, level: int, max_side: int) -> Image.Image:
        level_width, level_height = self.level_dimensions[level]
        level_ds = self.level_downsamples[level]
        factor = max(1, int(max(level_width, level_height) / max_side))  # whole level px per reduced px
        step = factor * max(1, REGION_SIDE // factor)  # region side: a multiple of the factor
        if step * step > 4 * REGION_SIDE * REGION_SIDE:
            raise SlideError(f"no pyramid level small enough for a thumbnail: the smallest is "
                             f"{level_width} x {level_height} px")
        reduced = Image.new("RGB", (-(-level_width // factor), -(-level_height // factor)), (255, 255, 255))
        for y in range(0, level_height, step):
            for x in range(0, level_width, step):
                size = (min(step, level_width - x), min(step, level_height - y))
                region = self._osr.read_region((round(x * level_ds), round(y * level_ds)), level, size)
                rgb = Image.new("RGB", region.size, (255, 255, 255))
                rgb.paste(region, mask=region.getchannel("A"))
                reduced.paste(rgb.reduce(factor) if factor > 1 else rgb, (x // factor, y // factor))
        reduced.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return reduced

    def read_region(self, x: int, y: int, size0: int, out_px: int) -> Image.Image:
        """The square at level-0 ``(x, y)`` of side ``size0``, as an ``out_px`` RGB image."""
        return self.read_field(x, y, size0, size0, out_px, out_px)

    def read_field(self, x: int, y: int, w0: int, h0: int, out_w: int, out_h: int) -> Image.Image:
        """The rectangle at level-0 ``(x, y)`` of ``w0 x h0`` level-0 pixels, as an ``out_w x out_h`` RGB image.

        Reads from the coarsest pyramid level that is still at least as fine as needed
        (OpenSlide's best level for the downsample), then resizes; pixels outside the slide and
        transparent ones come back white.
        """
        downsample = min(w0 / out_w, h0 / out_h)
        level = self._osr.get_best_level_for_downsample(downsample) if downsample > 1 else 0
        level_ds = self.level_downsamples[level]
        size = (max(1, round(w0 / level_ds)), max(1, round(h0 / level_ds)))
        try:
            region = self._osr.read_region((int(x), int(y)), level, size)
        except Exception as error:
            raise SlideError(explain_read_error(error)) from error
        rgb = Image.new("RGB", region.size, (255, 255, 255))
        rgb.paste(region, mask=region.getchannel("A"))
        if rgb.size != (out_w, out_h):
            shrink = size[0] > out_w or size[1] > out_h
            rgb = rgb.resize((out_w, out_h), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC)
        return rgb

    def read_array(self, x: int, y: int, size0: int, out_px: int) -> np.ndarray:
        return np.asarray(self.read_region(x, y, size0, out_px))

    def close(self) -> None:
        self._osr.close()

    def __enter__(self) -> "SlideFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_slide(path: str | Path) -> SlideFile:
    return SlideFile(path)
