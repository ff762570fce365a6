"""Plan one demo slide from (seed, index, size): where tissue, lesions and artifacts go.

Planning looks at a coarse rendering of the tissue field so lesions sit well inside tissue and
pen marks and dust stay on bare glass; the numbers it picks are all a slide needs to be drawn.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy import ndimage

from wsireview.demo.difficulty import CRUSHED, DEFAULT_DIFFICULTY, INFLAMMATORY, Difficulty, difficulty
from wsireview.demo.noise import pixel_centres
from wsireview.demo.spec import DUST, FOLD, INKS, LESION, LESION_REACH, NORMAL, PEN, Ellipse, Fold, Mimic, PenArc, SlideSpec, Speck

# Which artifacts slide ``index`` carries; any 6 consecutive slides show every kind.
ARTIFACT_CYCLE: tuple[tuple[str, ...], ...] = ((), (PEN,), (DUST,), (FOLD,), (PEN, DUST), (DUST, FOLD))

# Lesion share of the tissue a lesion slide aims for and the smallest lesion are set per difficulty
# (difficulty.py); the ground truth is measured, not assumed.


def slide_label(seed: int, index: int) -> str:
    """Lesion and normal slides alternate, so any two consecutive slides hold one of each."""
    return LESION if (index + seed) % 2 == 0 else NORMAL


def slide_artifacts(index: int) -> tuple[str, ...]:
    return ARTIFACT_CYCLE[index % len(ARTIFACT_CYCLE)]


def plan_slide(seed: int, index: int, width: int, height: int, level: str = DEFAULT_DIFFICULTY) -> SlideSpec:
    """The full description of slide ``index`` of the cohort with ``seed`` at difficulty ``level``.

    Mimics draw from their own random stream, after everything else: an easy slide is exactly
    what it was before difficulties existed, and a harder one shares its tissue layout.
    """
    diff = difficulty(level)
    rng = np.random.default_rng([seed, index, 3])
    keys = tuple(int(k) for k in rng.integers(1, 2**31 - 1, size=8))
    side = min(width, height)
    outline_cells = tuple(c for c in (side / 4 * 0.4**k for k in range(8)) if c >= 40.0)
    spec = SlideSpec(
        width=width, height=height, seed=seed, index=index, label=slide_label(seed, index), keys=keys,
        pieces=_pieces(rng, width, height), outline_cells=outline_cells, outline_amp=0.45,
        artifacts=slide_artifacts(index), difficulty=diff.name, lesion_style=diff.lesion,
    )
    grid = _CoarseGrid(width, height)
    spec = _fit_coverage(spec, grid, target=float(rng.uniform(0.5, 0.62)))
    tissue = spec.tissue_field(grid.xs, grid.ys) > 0
    depth = _depth(tissue, grid.step)
    if spec.label == LESION:
        spec = _add_lesions(spec, rng, grid, tissue, depth, diff)
    if FOLD in spec.artifacts:
        spec = _add_fold(spec, rng, grid, depth)
    glass = ~ndimage.binary_dilation(tissue, iterations=3)
    if PEN in spec.artifacts:
        spec, glass = _add_pens(spec, rng, grid, glass)
    if DUST in spec.artifacts:
        spec = _add_dust(spec, rng, grid, glass)
    if diff.has_mimics:
        spec = _add_mimics(spec, np.random.default_rng([seed, index, 5]), grid, depth, diff)
    return spec


class _CoarseGrid:
    """Pixel centres of a coarse (<= ~640 px a side) view of the slide, for planning."""

    def __init__(self, width: int, height: int):
        self.step = max(4, math.ceil(max(width, height) / 640))
        self.xs = pixel_centres(0, math.ceil(width / self.step), self.step)
        self.ys = pixel_centres(0, math.ceil(height / self.step), self.step)

    def pick(self, rng: np.random.Generator, allowed: np.ndarray) -> tuple[float, float] | None:
        rows, cols = np.nonzero(allowed)
        if rows.size == 0:
            return None
        k = int(rng.integers(rows.size))
        return float(self.xs[cols[k]]), float(self.ys[rows[k]])


def _pieces(rng: np.random.Generator, w: int, h: int) -> tuple[Ellipse, ...]:
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    layouts = {
        1: [((0.5, 0.5), (0.40, 0.40))],
        2: [((0.29, 0.5), (0.23, 0.38)), ((0.72, 0.5), (0.22, 0.36))],
        3: [((0.27, 0.32), (0.20, 0.26)), ((0.73, 0.36), (0.20, 0.27)), ((0.47, 0.74), (0.24, 0.22))],
    }
    pieces = []
    for (fx, fy), (frx, fry) in layouts[n]:
        jitter = rng.uniform(-0.04, 0.04, size=2)
        scale = rng.uniform(0.9, 1.1, size=2)
        pieces.append(Ellipse(
            cx=(fx + jitter[0]) * w, cy=(fy + jitter[1]) * h, rx=frx * w * scale[0], ry=fry * h * scale[1],
            angle=float(rng.uniform(-0.35, 0.35)),
        ))
    return tuple(pieces)


def _fit_coverage(spec: SlideSpec, grid: _CoarseGrid, target: float) -> SlideSpec:
    """Scale the pieces until tissue covers about ``target`` of the slide."""
    for _ in range(3):
        coverage = float((spec.tissue_field(grid.xs, grid.ys) > 0).mean())
        factor = math.sqrt(target / max(coverage, 1e-3))
        if abs(factor - 1.0) < 0.02:
            break
        spec = replace(spec, pieces=tuple(p.scaled(factor) for p in spec.pieces))
    return spec


def _depth(mask: np.ndarray, step: int) -> np.ndarray:
    """Distance (level-0 px) from each pixel of ``mask`` to the nearest pixel outside it or the slide's edge."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] * step


def _add_lesions(spec: SlideSpec, rng: np.random.Generator, grid: _CoarseGrid, tissue: np.ndarray,
                 depth: np.ndarray, diff: Difficulty) -> SlideSpec:
    """Place lesions deep inside tissue (``depth``: level-0 px to the tissue's edge)."""
    tissue_area = float(tissue.sum()) * grid.step**2
    share = float(rng.uniform(*diff.lesion_share))
    n = int(rng.integers(*diff.lesion_regions))
    while n > 1 and share * tissue_area / n < math.pi * (diff.min_lesion_diameter / 2) ** 2:
        n -= 1
    radius = math.sqrt(share * tissue_area / n / math.pi)
    lesions: list[Ellipse] = []
    taken = np.zeros_like(tissue)
    for _ in range(n):
        elong = float(rng.uniform(1.0, 1.5))
        allowed = (depth > 1.8 * radius * elong + 2 * grid.step) & ~taken
        point = grid.pick(rng, allowed)
        if point is None:
            break
        les = Ellipse(point[0], point[1], radius * math.sqrt(elong), radius / math.sqrt(elong), float(rng.uniform(0, math.pi)))
        lesions.append(les)
        yy, xx = np.meshgrid(grid.ys, grid.xs, indexing="ij")
        taken |= np.hypot(xx - les.cx, yy - les.cy) < 4 * radius
    spec = replace(spec, lesions=tuple(lesions), lesion_cells=(radius * 0.7, radius * 0.3))
    # The noise changes the area: measure it and rescale once so the share hits the target.
    for _ in range(2):
        area = lesion_area(spec)
        if area <= 0:
            break
        factor = math.sqrt(share * tissue_area / area)
        spec = replace(spec, lesions=tuple(les.scaled(factor) for les in spec.lesions))
    return spec


def lesion_area(spec: SlideSpec, step: float = 2.0) -> float:
    """Level-0 area of the lesions, measured on the fields at ``step`` px."""
    total = 0.0
    for les in spec.lesions:
        _, _, field = spec.own_lesion_field(les, step)
        total += float((field > 0).sum()) * step * step
    return total


def _add_mimics(spec: SlideSpec, rng: np.random.Generator, grid: _CoarseGrid, depth: np.ndarray,
                diff: Difficulty) -> SlideSpec:
    """Scatter inflammatory clusters and crushed tissue over the tissue, clear of the lesions and each other."""
    yy, xx = np.meshgrid(grid.ys, grid.xs, indexing="ij")
    occupied = [(les.cx, les.cy, LESION_REACH * max(les.rx, les.ry)) for les in spec.lesions]
    mimics: list[Mimic] = []
    inflammatory = diff.inflammatory_on_lesion_slides if spec.label == LESION else diff.inflammatory_on_normal_slides
    kinds = [INFLAMMATORY] * int(rng.integers(*inflammatory)) + [CRUSHED] * int(rng.integers(*diff.crushed))
    for kind in rng.permutation(kinds):
        radius = float(rng.uniform(*diff.mimic_diameter)) / 2
        elong = float(rng.uniform(1.0, 2.2))
        reach = LESION_REACH * radius * math.sqrt(elong)
        allowed = depth > 1.3 * radius * elong + 2 * grid.step
        for cx, cy, r in occupied:  # a patch's width apart: no patch holds both
            allowed &= np.hypot(xx - cx, yy - cy) > r + reach + 224
        point = grid.pick(rng, allowed)
        if point is None:
            continue
        shape = Ellipse(point[0], point[1], radius * math.sqrt(elong), radius / math.sqrt(elong), float(rng.uniform(0, math.pi)))
        mimics.append(Mimic(str(kind), shape, angle=float(rng.uniform(0, math.pi)), key=int(rng.integers(1, 2**31 - 1))))
        occupied.append((shape.cx, shape.cy, reach))
    share = diff.inflamed_stroma_on_lesion_slides if spec.label == LESION else diff.inflamed_stroma_on_normal_slides
    if share > 0:
        inside = spec.tissue_field(grid.xs, grid.ys) > 0
        noise = spec.inflamed_noise(grid.xs, grid.ys)[inside]
        spec = replace(spec, inflamed_threshold=float(np.quantile(noise, 1.0 - share)))
    return replace(spec, mimics=tuple(mimics))


def _add_fold(spec: SlideSpec, rng: np.random.Generator, grid: _CoarseGrid, depth: np.ndarray) -> SlideSpec:
    """Lay a fold across thick tissue (``depth``: level-0 px to the tissue's edge), clear of the lesions."""
    side = spec.size
    lesion_zone = np.zeros(depth.shape, dtype=bool)
    for les in spec.lesions:
        lesion_zone |= les.distance(grid.xs, grid.ys) < 2.0
    for _ in range(30):
        point = grid.pick(rng, depth > 0.08 * side)
        if point is None:
            break
        half_width = float(rng.uniform(0.010, 0.016)) * side
        fold = Fold(
            cx=point[0], cy=point[1], angle=float(rng.uniform(0, math.pi)), half_width=half_width,
            half_length=float(rng.uniform(0.18, 0.32)) * side, wave_amp=half_width * float(rng.uniform(0.5, 1.5)),
            wavelength=float(rng.uniform(0.2, 0.4)) * side, phase=float(rng.uniform(0, 2 * math.pi)),
        )
        if not ((fold.alpha(grid.xs, grid.ys) > 0) & lesion_zone).any():
            return replace(spec, fold=fold)
    return spec


def _add_pens(spec: SlideSpec, rng: np.random.Generator, grid: _CoarseGrid,
              glass: np.ndarray) -> tuple[SlideSpec, np.ndarray]:
    side = spec.size
    inks = list(INKS)
    pens: list[PenArc] = []
    glass = glass.copy()
    for k in range(int(rng.integers(1, 3))):
        depth = _depth(glass, grid.step)
        half_width = float(rng.uniform(0.006, 0.010)) * side
        best = float(depth.max())
        point = grid.pick(rng, depth >= 0.85 * best)
        if point is None:
            break
        radius = float(rng.uniform(0.45, 0.7)) * best - half_width
        if radius < 3 * half_width:
            break
        pen = PenArc(
            cx=point[0], cy=point[1], radius=radius, start=float(rng.uniform(0, 2 * math.pi)),
            sweep=float(rng.uniform(2.5, 5.5)), half_width=half_width, ink=inks[(spec.index + k) % len(inks)],
        )
        pens.append(pen)
        yy, xx = np.meshgrid(grid.ys, grid.xs, indexing="ij")
        glass &= np.hypot(xx - pen.cx, yy - pen.cy) > pen.radius * 1.1 + 2 * half_width
    return replace(spec, pens=tuple(pens)), glass


def _add_dust(spec: SlideSpec, rng: np.random.Generator, grid: _CoarseGrid, glass: np.ndarray) -> SlideSpec:
    depth = _depth(glass, grid.step)
    specks: list[Speck] = []
    for _ in range(int(rng.integers(12, 30))):
        radius = float(rng.choice([rng.uniform(5, 14), rng.uniform(14, 32)], p=[0.7, 0.3]))
        point = grid.pick(rng, depth > 1.5 * radius + grid.step)
        if point is None:
            continue
        specks.append(Speck(
            cx=point[0], cy=point[1], radius=radius, angle=float(rng.uniform(0, math.pi)),
            elongation=float(rng.uniform(0.5, 1.0)), density=float(rng.uniform(0.6, 1.3)),
        ))
    return replace(spec, specks=tuple(specks))
