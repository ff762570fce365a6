"""What ingest asks of a slide file, as jobs a worker process runs (see :mod:`wsireview.slides.isolated`).

Each job opens the file itself and returns plain values, so it can run in another process:
``identify`` (is it a slide, and which content), ``examine`` (thumbnail, tissue mask, patch grid,
pixels read back) and ``verify`` (do known patches still read, for a moved or copied file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsireview.slides.integrity import check_declared_size, check_grid_size, sample_indices, verify_patches
from wsireview.slides.reader import SlideFile
from wsireview.slides.tiling import patch_grid
from wsireview.slides.tissue import tissue_mask

THUMBNAIL_SIDE = 1024


@dataclass(frozen=True)
class GridOptions:
    """How a slide is cut into patches: side in pixels at a target resolution, and the tissue share kept."""

    patch_size: int
    target_mpp: float
    min_tissue: float


@dataclass
class Identity:
    content_hash: str


@dataclass
class Examined:
    """Everything computed from a readable slide file, before it touches the catalog."""

    meta: dict
    thumbnail: Image.Image
    mask: np.ndarray
    patches: list[tuple[int, int, float]]
    warning: str | None
    verified: int  # tissue patches read back


def identify(path: Path) -> Identity:
    """Open the file, check its declared size against its bytes, and hash its content."""
    with SlideFile(path) as slide:
        check_declared_size(slide)
        return Identity(slide.content_hash())


def examine(path: Path, options: GridOptions) -> Examined:
    """Thumbnail, tissue mask and patch grid of a slide, with a sample of its patches read back."""
    with SlideFile(path) as slide:
        check_declared_size(slide)
        resolution = slide.resolution(options.patch_size, options.target_mpp)
        check_grid_size(slide.dimensions, resolution.level0_size)
        thumb = slide.thumbnail(THUMBNAIL_SIDE)
        mask = tissue_mask(np.asarray(thumb))
        patches = patch_grid(mask, slide.dimensions, resolution.level0_size, options.min_tissue)
        sample = [patches[i][:2] for i in sample_indices(len(patches))]
        verified = verify_patches(slide, sample, resolution.level0_size, options.patch_size)
        warning = _warning(slide, resolution, mask, patches, options)
        meta = dict(
            vendor=slide.vendor,
            width=slide.dimensions[0],
            height=slide.dimensions[1],
            level_count=slide.level_count,
            level_downsamples=list(slide.level_downsamples),
            mpp_x=slide.mpp_x,
            mpp_y=slide.mpp_y,
            objective_power=slide.objective_power,
            resolution_source=resolution.source,
            target_mpp=options.target_mpp,
            patch_size_px=options.patch_size,
            patch_size_level0=resolution.level0_size,
            min_tissue=options.min_tissue,
            tissue_fraction=float(mask.mean()),
        )
    return Examined(meta, thumb, mask, patches, warning, verified)


def verify(path: Path, positions: list[tuple[int, int]], size0: int, out_px: int) -> int:
    """Read known tissue patches of a slide back (a moved or copied file must still hold them)."""
    with SlideFile(path) as slide:
        check_declared_size(slide)
        return verify_patches(slide, positions, size0, out_px)


def _warning(slide: SlideFile, resolution, mask: np.ndarray, patches: list, options: GridOptions) -> str | None:
    warnings = []
    if resolution.source != "mpp":
        warnings.append(f"patch size from {resolution.source}" + (f": {resolution.note}" if resolution.note else ""))
    elif resolution.note:
        warnings.append(resolution.note)
    if not mask.any():
        warnings.append("no tissue detected")
    elif min(slide.dimensions) < resolution.level0_size:
        warnings.append(
            f"slide ({slide.dimensions[0]} x {slide.dimensions[1]} px) is smaller than one patch "
            f"({resolution.level0_size} px at level 0)"
        )
    elif not patches:
        where = (f"{resolution.level0_size} px patch of level-0 pixels" if resolution.source == "level0-pixels"
                 else f"{options.patch_size} px patch at {options.target_mpp} µm/px")
        warnings.append(f"no {where} is {options.min_tissue:.0%} tissue")
    return "; ".join(warnings) or None
