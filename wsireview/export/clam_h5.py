"""`clam-h5` format: ``OUT/patches/<slide>.h5`` as CLAM's patching step lays it out, with the
attributes TRIDENT reads, and the labels.

``coords`` (N x 2 int64, level-0 top-left x, y) carries TRIDENT's attributes (``patch_size``,
``patch_size_level0``, ``level0_magnification``, ``target_magnification``, ``overlap``,
``level0_width``, ``level0_height``, ``name``) and CLAM's (``patch_level``, ``downsample``,
``downsampled_level_dim``, ``level_dim``). ``target_magnification`` is the magnification of the
exported grid (10 at 1.0 µm/px, 20 at 0.5, 40 at 0.25) and ``patch_size`` the output side at it, so
a TRIDENT reader reads ``patch_size`` x ``level0_magnification`` / ``target_magnification`` =
``patch_size_level0`` level-0 pixels and resizes them to ``patch_size``: exactly the exported
square at the exported resolution. ``patch_level`` is the pyramid level the square is read from;
when the grid's resolution is that level's (a 20x grid on a 20x slide), a CLAM reader reading
``patch_size`` at ``patch_level`` reads the same square; otherwise it should read
``patch_size_level0`` at level 0 (one ``patch_size`` cannot mean both). The requested output side
and mpp are also in ``target_patch_size`` and ``target_mpp``. ``labels`` (N, int8) is aligned with
``coords``; its ``label_names`` attribute maps codes to names.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from wsireview.catalog import VERDICTS
from wsireview.export.plan import ExportPatch, ExportPlan, SlideInfo
from wsireview.slides import SlideFile, SlideError
from wsireview.slides.magnification import magnification_from_mpp

LABEL_NAMES = list(VERDICTS)


def best_level(downsamples: list[float], downsample: float) -> int:
    """OpenSlide's rule: the coarsest level no coarser than ``downsample`` (level 0 when <= 1)."""
    if downsample <= 1:
        return 0
    level = 0
    for i, d in enumerate(downsamples):
        if d <= downsample + 1e-9:
            level = i
    return level


def level_dimensions(info: SlideInfo) -> list[tuple[int, int]]:
    """The slide's level sizes from the file when it can be opened, else derived from the catalog."""
    if info.path is not None and info.path.exists():
        try:
            with SlideFile(info.path) as slide:
                return [(int(w), int(h)) for w, h in slide.level_dimensions]
        except SlideError:
            pass
    return [(math.ceil(info.width / d), math.ceil(info.height / d)) for d in info.level_downsamples]


def level0_magnification(info: SlideInfo) -> float:
    """Objective power (the nominal value TRIDENT also uses), else the mpp's magnification; NaN if unknown."""
    if info.objective_power:
        return float(info.objective_power)
    if info.mpp:
        return magnification_from_mpp(info.mpp)
    return float("nan")


def grid_magnification(info: SlideInfo, size0: int, out_px: int) -> float:
    """The magnification of a grid of ``out_px`` patches spanning ``size0`` level-0 pixels.

    Level 0's magnification scaled by the grid's downsample: 10 at 1.0 µm/px on a 20x (0.5 µm/px)
    slide. Scaling the same level-0 value keeps TRIDENT's ``patch_size`` x level-0 / target
    magnification equal to ``size0`` to the pixel.
    """
    return level0_magnification(info) * out_px / size0


def write_slide(path: Path, info: SlideInfo, patches: list[ExportPatch], dims: list[tuple[int, int]]) -> None:
    """One h5 of ``patches`` (all one size); ``dims`` are the slide's level sizes (:func:`level_dimensions`)."""
    size0 = patches[0].size0
    out_px = patches[0].out_px
    level = best_level(info.level_downsamples, size0 / out_px)
    level = min(level, len(dims) - 1)
    w0, h0 = dims[0] if dims else (info.width, info.height)
    wl, hl = dims[level]
    coords = np.array([[p.x, p.y] for p in patches], dtype=np.int64).reshape(-1, 2)
    codes = np.array([LABEL_NAMES.index(p.item.label) for p in patches], dtype=np.int8)
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("coords", data=coords)
        attrs = {
            # TRIDENT
            "patch_size": int(out_px),
            "patch_size_level0": int(size0),
            "level0_magnification": level0_magnification(info),
            "target_magnification": grid_magnification(info, size0, out_px),
            "overlap": 0,
            "level0_width": int(w0),
            "level0_height": int(h0),
            "name": info.stem,
            # CLAM
            "patch_level": int(level),
            "downsample": np.array([w0 / wl, h0 / hl], dtype=np.float64),
            "downsampled_level_dim": np.array([wl, hl], dtype=np.int64),
            "level_dim": np.array([wl, hl], dtype=np.int64),
            # this export's resolution
            "target_patch_size": int(out_px),
            "target_mpp": float(patches[0].mpp) if patches[0].mpp else float("nan"),
        }
        for key, value in attrs.items():
            dset.attrs[key] = value
        labels = h5.create_dataset("labels", data=codes)
        labels.attrs["label_names"] = LABEL_NAMES


def write(out_dir: Path, plan: ExportPlan, advance: Callable[[int], None]) -> list[Path]:
    folder = out_dir / "patches"
    folder.mkdir(exist_ok=True)
    files = []
    for slide_id, patches in plan.by_slide().items():
        info = plan.slides[slide_id]
        dims = level_dimensions(info)
        # One h5 holds one patch size: group by level-0 side (a catalog may hold several grids).
        sizes = sorted({(p.size0, p.out_px) for p in patches})
        for size0, out_px in sizes:
            group = [p for p in patches if (p.size0, p.out_px) == (size0, out_px)]
            suffix = "" if len(sizes) == 1 else f"_s{size0}"
            path = folder / f"{info.stem}{suffix}.h5"
            write_slide(path, info, group, dims)
            files.append(path)
            advance(len(group))
    return files
