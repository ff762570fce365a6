"""What one demo slide contains: tissue pieces, lesions, artifacts, and the fields that draw them.

A :class:`SlideSpec` is a handful of numbers (ellipses, a fold line, pen arcs, dust specks and
noise keys). Every field below is a function of level-0 coordinates only, so the renderer, the
pyramid levels and the ground truth all agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wsireview.demo.difficulty import LesionStyle
from wsireview.demo.noise import fbm, pixel_centres

LESION = "lesion"
NORMAL = "normal"
PEN, DUST, FOLD = "pen", "dust", "fold"

# A lesion's field can be positive only this far from its centre (elliptical distance, 1 on its outline).
LESION_REACH = 1.6

# Ink optical densities (R, G, B absorbance) of the pen colours pathologists use.
INKS: dict[str, tuple[float, float, float]] = {
    "blue": (0.95, 0.55, 0.12),
    "green": (0.85, 0.30, 0.75),
    "black": (1.05, 1.00, 0.92),
}


@dataclass(frozen=True)
class Ellipse:
    cx: float
    cy: float
    rx: float
    ry: float
    angle: float

    def distance(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Normalised elliptical distance on the grid ``ys x xs`` (1 on the outline)."""
        c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        u = (dx * c + dy * s) / np.float32(self.rx)
        v = (dy * c - dx * s) / np.float32(self.ry)
        return np.sqrt(u * u + v * v)

    def bbox(self, scale: float = 1.0) -> tuple[float, float, float, float]:
        r = max(self.rx, self.ry) * scale
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)

    def scaled(self, factor: float) -> "Ellipse":
        return Ellipse(self.cx, self.cy, self.rx * factor, self.ry * factor, self.angle)


@dataclass(frozen=True)
class Fold:
    """A strip where the section folded over itself: a wavy band across the tissue."""

    cx: float
    cy: float
    angle: float
    half_width: float
    half_length: float
    wave_amp: float
    wavelength: float
    phase: float

    def alpha(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        along = dx * c + dy * s
        across = dy * c - dx * s - np.float32(self.wave_amp) * np.sin(along * np.float32(2 * np.pi / self.wavelength) + np.float32(self.phase))
        width = np.clip((self.half_width - np.abs(across)) / 3.0, 0.0, 1.0)
        ends = np.clip((self.half_length - np.abs(along)) / (0.5 * self.half_width), 0.0, 1.0)
        return (width * ends).astype(np.float32)

    def bbox(self) -> tuple[float, float, float, float]:
        r = self.half_length + self.half_width + self.wave_amp
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


@dataclass(frozen=True)
class PenArc:
    """A pen stroke: an arc of a wobbly circle drawn on the glass."""

    cx: float
    cy: float
    radius: float
    start: float
    sweep: float
    half_width: float
    ink: str

    def alpha(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        r = np.sqrt(dx * dx + dy * dy)
        theta = np.mod(np.arctan2(dy, dx) - np.float32(self.start), np.float32(2 * np.pi))
        wobble = np.float32(0.04 * self.radius) * np.sin(theta * 3.0 + np.float32(self.start))
        band = np.clip((self.half_width - np.abs(r - self.radius - wobble)) / 2.0, 0.0, 1.0)
        inside = np.clip((np.float32(self.sweep) - theta) * self.radius / 4.0, 0.0, 1.0)
        return (band * inside).astype(np.float32)

    def bbox(self) -> tuple[float, float, float, float]:
        r = self.radius * 1.05 + self.half_width + 2
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


@dataclass(frozen=True)
class Speck:
    """A dust particle on the glass: a small dark grey irregular blob."""

    cx: float
    cy: float
    radius: float
    angle: float
    elongation: float
    density: float

    def alpha(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        shape = Ellipse(self.cx, self.cy, self.radius, self.radius * self.elongation, self.angle)
        d = shape.distance(xs, ys)
        dx = (xs - self.cx).astype(np.float32)[None, :]
        dy = (ys - self.cy).astype(np.float32)[:, None]
        theta = np.arctan2(dy, dx)
        d = d / (1.0 + 0.2 * np.cos(3 * theta + np.float32(self.angle)))
        return np.clip((1.0 - d) * np.float32(self.radius) / 1.5, 0.0, 1.0).astype(np.float32)

    def bbox(self) -> tuple[float, float, float, float]:
        r = self.radius * 1.3 + 2
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


@dataclass(frozen=True)
class Mimic:
    """Something that looks suspicious and is not lesion: an inflammatory cell cluster or crushed tissue.

    ``angle`` is the direction crushed nuclei are smeared along.
    """

    kind: str
    shape: Ellipse
    angle: float
    key: int

    def field(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Positive inside the mimic, with a ragged outline (1 - elliptical distance, plus noise)."""
        r = min(self.shape.rx, self.shape.ry)
        return 1.0 - self.shape.distance(xs, ys) + np.float32(0.3) * fbm(xs, ys, (r * 0.7, r * 0.3), self.key)

    def bbox(self) -> tuple[float, float, float, float]:
        return self.shape.bbox(LESION_REACH)


@dataclass(frozen=True)
class SlideSpec:
    width: int
    height: int
    seed: int
    index: int
    label: str
    keys: tuple[int, ...]
    pieces: tuple[Ellipse, ...]
    outline_cells: tuple[float, ...]
    outline_amp: float
    lesions: tuple[Ellipse, ...] = ()
    lesion_cells: tuple[float, ...] = ()
    fold: Fold | None = None
    pens: tuple[PenArc, ...] = ()
    specks: tuple[Speck, ...] = ()
    artifacts: tuple[str, ...] = field(default=())
    difficulty: str = "easy"
    lesion_style: LesionStyle = field(default_factory=LesionStyle)
    mimics: tuple[Mimic, ...] = ()
    inflamed_threshold: float = math.inf  # inflamed stroma where its noise exceeds this (inf: none)

    @property
    def size(self) -> int:
        return min(self.width, self.height)

    @property
    def edge_scale(self) -> float:
        """Field units per level-0 px at a tissue outline, to draw a ~2 px soft edge."""
        return float(np.mean([min(p.rx, p.ry) for p in self.pieces]))

    # -- fields -------------------------------------------------------------------------------
    def tissue_field(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Positive inside tissue: the union of the pieces, with a ragged, noisy outline."""
        shape = np.full((ys.size, xs.size), -np.inf, dtype=np.float32)
        for piece in self.pieces:
            np.maximum(shape, 1.0 - piece.distance(xs, ys), out=shape)
        return shape + np.float32(self.outline_amp) * fbm(xs, ys, self.outline_cells, self.keys[0])

    def lesion_field(self, xs: np.ndarray, ys: np.ndarray, tissue: np.ndarray) -> np.ndarray | None:
        """Positive inside a lesion (always inside tissue), or None where no lesion is near."""
        near = [les for les in self.lesions if _overlaps(les.bbox(LESION_REACH), xs, ys)]
        if not near:
            return None
        shape = np.full((ys.size, xs.size), -np.inf, dtype=np.float32)
        for les in near:
            np.maximum(shape, 1.0 - les.distance(xs, ys), out=shape)
        shape += np.float32(0.35) * fbm(xs, ys, self.lesion_cells, self.keys[1])
        return np.minimum(shape, tissue)

    def own_lesion_field(self, les: Ellipse, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xs, ys, field)``: the lesion field sampled every ``step`` level-0 px around ``les``.

        The field is -1 outside ``les``'s own region, so each lesion is measured on its own
        (lesions are planned far apart).
        """
        x0, y0, x1, y1 = les.bbox(LESION_REACH)
        xs = pixel_centres(x0, math.ceil((x1 - x0) / step), step)
        ys = pixel_centres(y0, math.ceil((y1 - y0) / step), step)
        field = self.lesion_field(xs, ys, self.tissue_field(xs, ys))
        assert field is not None  # the grid covers ``les`` itself
        return xs, ys, np.where(les.distance(xs, ys) < LESION_REACH, field, -1.0)

    def inflamed_field(self, xs: np.ndarray, ys: np.ndarray, tissue: np.ndarray) -> np.ndarray | None:
        """Positive where the stroma is inflamed (always inside tissue), or None on a slide without."""
        if not math.isfinite(self.inflamed_threshold):
            return None
        return np.minimum(self.inflamed_noise(xs, ys) - np.float32(self.inflamed_threshold), tissue)

    def inflamed_noise(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return fbm(xs, ys, (520.0, 200.0), self.keys[1] + 4241)

    def mimics_near(self, xs: np.ndarray, ys: np.ndarray) -> list[Mimic]:
        """The mimics whose field may be positive on the grid ``ys x xs``."""
        return [m for m in self.mimics if _overlaps(m.bbox(), xs, ys)]

    def own_mimic_field(self, mimic: Mimic, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xs, ys, field)``: one mimic's field sampled every ``step`` level-0 px (as :meth:`own_lesion_field`)."""
        x0, y0, x1, y1 = mimic.bbox()
        xs = pixel_centres(x0, math.ceil((x1 - x0) / step), step)
        ys = pixel_centres(y0, math.ceil((y1 - y0) / step), step)
        field = np.minimum(mimic.field(xs, ys), self.tissue_field(xs, ys))
        return xs, ys, np.where(mimic.shape.distance(xs, ys) < LESION_REACH, field, -1.0)

    def fold_alpha(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray | None:
        if self.fold is None or not _overlaps(self.fold.bbox(), xs, ys):
            return None
        out = np.zeros((ys.size, xs.size), dtype=np.float32)
        sy, sx = _window(self.fold.bbox(), xs, ys)
        out[sy, sx] = self.fold.alpha(xs[sx], ys[sy])
        return out

    def pen_od(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray | None:
        """Optical density (h, w, 3) of the pen ink, or None where there is none."""
        od = None
        for pen in self.pens:
            if not _overlaps(pen.bbox(), xs, ys):
                continue
            if od is None:
                od = np.zeros((ys.size, xs.size, 3), dtype=np.float32)
            sy, sx = _window(pen.bbox(), xs, ys)
            streak = 0.85 + 0.15 * fbm(xs[sx], ys[sy], (40.0, 9.0), self.keys[2])
            a = pen.alpha(xs[sx], ys[sy]) * streak
            od[sy, sx] += a[:, :, None] * np.asarray(INKS[pen.ink], dtype=np.float32)
        return od

    def dust_alpha(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray | None:
        """Optical density of dust (grey, the same in every channel), or None."""
        od = None
        for speck in self.specks:
            if not _overlaps(speck.bbox(), xs, ys):
                continue
            if od is None:
                od = np.zeros((ys.size, xs.size), dtype=np.float32)
            sy, sx = _window(speck.bbox(), xs, ys)
            np.maximum(od[sy, sx], speck.alpha(xs[sx], ys[sy]) * np.float32(speck.density), out=od[sy, sx])
        return od

    def artifact_mask(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Where pen or dust covers the glass (what tissue detection must not call tissue)."""
        mask = np.zeros((ys.size, xs.size), dtype=bool)
        pen = self.pen_od(xs, ys)
        if pen is not None:
            mask |= pen.max(axis=2) > 0.25
        dust = self.dust_alpha(xs, ys)
        if dust is not None:
            mask |= dust > 0.2
        return mask

    def tissue_mask(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Ground-truth tissue: tissue (folds included) that no artifact covers."""
        return (self.tissue_field(xs, ys) > 0) & ~self.artifact_mask(xs, ys)


def _overlaps(bbox: tuple[float, float, float, float], xs: np.ndarray, ys: np.ndarray) -> bool:
    x0, y0, x1, y1 = bbox
    return not (x1 < xs[0] or x0 > xs[-1] or y1 < ys[0] or y0 > ys[-1])


def _window(bbox: tuple[float, float, float, float], xs: np.ndarray, ys: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the grid ``ys x xs`` that cover ``bbox`` (sorted coordinates)."""
    x0, y0, x1, y1 = bbox
    cols = slice(int(np.searchsorted(xs, x0)), int(np.searchsorted(xs, x1, side="right")))
    rows = slice(int(np.searchsorted(ys, y0)), int(np.searchsorted(ys, y1, side="right")))
    return rows, cols
