"""What part of a slide the triage screen shows, at which magnification (pure arithmetic, no Textual).

A view is a centre in level-0 pixels and a downsample: level-0 pixels per shown pixel. Zooming
steps along a ladder of downsamples that runs from the context view (8 times the patch's field) to
the slide's full resolution (1 level-0 pixel per shown pixel), through the patch fitted to the box
("home", where `0` returns) and every power of two between. Magnifications are stated the way a
microscope's are: 20x is 0.5 µm per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from wsireview.slides.magnification import magnification_from_mpp

CONTEXT_FACTOR = 8  # the context view shows 8 x 8 patch fields around the one under review
HOME_FILL = 0.9  # at home the patch takes 90% of the box's short side: its outline stays in view
PAN_SHARE = 0.25  # an arrow key moves the view by a quarter of the field
SCALE_BAR_STEPS = (1, 2, 5)  # scale bars are 1, 2 or 5 times a power of ten (µm or px)


@dataclass(frozen=True)
class Viewport:
    """The field shown: centre (level-0 pixels) and level-0 pixels per shown pixel."""

    cx: float
    cy: float
    downsample: float

    def field(self, box_px: tuple[int, int]) -> tuple[int, int, int, int]:
        """The level-0 rectangle (x, y, width, height) shown in a box of ``box_px`` pixels."""
        w0 = max(1, round(box_px[0] * self.downsample))
        h0 = max(1, round(box_px[1] * self.downsample))
        return round(self.cx - w0 / 2), round(self.cy - h0 / 2), w0, h0


def home_view(x: int, y: int, size: int, box_px: tuple[int, int]) -> Viewport:
    """The patch (level-0 square at x, y of side ``size``) centred and fitted to the box."""
    short = max(1, min(box_px))
    return Viewport(x + size / 2, y + size / 2, size / (HOME_FILL * short))


def zoom_ladder(home: float) -> list[float]:
    """Downsamples from full resolution (1) to the context view, finest first; the home
    downsample is a rung (it may lie below 1 when the box has more pixels than the patch)."""
    context = home * CONTEXT_FACTOR
    rungs = {home, context}
    power = 1.0
    while power < context:
        if abs(power - home) / home > 0.15:  # a rung close to home would be a step of no visible change
            rungs.add(power)
        power *= 2
    return sorted(r for r in rungs if r >= 1 or r == home)


def zoom(view: Viewport, home: float, steps: int) -> Viewport:
    """``steps`` rungs finer (positive: zoom in) or coarser (negative), stopping at the ends."""
    ladder = zoom_ladder(home)
    # the rung nearest the current downsample (a view is always on a rung, but floats drift)
    here = min(range(len(ladder)), key=lambda i: abs(ladder[i] - view.downsample))
    target = min(len(ladder) - 1, max(0, here - steps))
    return replace(view, downsample=ladder[target])


def pan(view: Viewport, dx: int, dy: int, box_px: tuple[int, int], slide_size: tuple[int, int]) -> Viewport:
    """The view moved by (dx, dy) quarters of its field, its centre kept on the slide."""
    step_x = box_px[0] * view.downsample * PAN_SHARE
    step_y = box_px[1] * view.downsample * PAN_SHARE
    cx, cy = view.cx + dx * step_x, view.cy + dy * step_y
    if slide_size[0] and slide_size[1]:
        cx, cy = min(max(0.0, cx), float(slide_size[0])), min(max(0.0, cy), float(slide_size[1]))
    return replace(view, cx=round(cx), cy=round(cy))


def neighbours(view: Viewport, home: float, box_px: tuple[int, int], slide_size: tuple[int, int]) -> list[Viewport]:
    """The views one key away (zoom in, zoom out, four pans), nearest-first: what to prefetch."""
    out = [zoom(view, home, 1), zoom(view, home, -1)]
    out += [pan(view, dx, dy, box_px, slide_size) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return [v for i, v in enumerate(out) if v != view and v not in out[:i]]


def nice_length(limit: float) -> float:
    """The longest 1, 2 or 5 times a power of ten that is at most ``limit`` (for a scale bar)."""
    if limit <= 0:
        return 0.0
    power = 1.0
    while power * 10 <= limit:
        power *= 10
    while power > limit:
        power /= 10
    return max(step * power for step in SCALE_BAR_STEPS if step * power <= limit)


@dataclass(frozen=True)
class Scale:
    """How a view's pixels relate to the tissue: µm per shown pixel, or None for a slide without mpp."""

    um_per_px: float | None  # µm per shown pixel
    downsample: float  # level-0 pixels per shown pixel
    mpp_source: str  # "mpp", "objective-power" or "level0-pixels"

    @property
    def magnification_text(self) -> str:
        """"20x, 0.50 µm/px", or in pixels for a slide that records no resolution."""
        full = " full res" if abs(self.downsample - 1) < 1e-6 else ""
        if self.um_per_px is None:
            return f"1:{self.downsample:.3g} px{full} (no mpp in the file)"
        mag = magnification_from_mpp(self.um_per_px)
        mag_text = f"{mag:.0f}x" if mag >= 9.95 else f"{mag:.1f}x"
        implied = " (from objective)" if self.mpp_source == "objective-power" else ""
        return f"{mag_text}, {self.um_per_px:.2f} µm/px{full}{implied}"

    def length_text(self, level0_px: float) -> str:
        """A level-0 length in µm (or mm), or in level-0 pixels when the slide has no mpp."""
        if self.um_per_px is None:
            return f"{level0_px:,.0f} px"
        um = level0_px * self.um_per_px / self.downsample
        return f"{um / 1000:.2f} mm" if um >= 10_000 else f"{um:,.0f} µm"

    def field_text(self, w0: int, h0: int) -> str:
        """The field of view, e.g. "146 x 105 µm"."""
        if self.um_per_px is None:
            return f"{w0:,} x {h0:,} px"
        per0 = self.um_per_px / self.downsample
        return f"{w0 * per0:,.0f} x {h0 * per0:,.0f} µm"

    def position_text(self, x0: float, y0: float) -> str:
        """A level-0 position in µm (mm on big slides) from the slide's top-left corner."""
        if self.um_per_px is None:
            return f"{x0:.0f}, {y0:.0f} px"
        per0 = self.um_per_px / self.downsample
        x, y = x0 * per0, y0 * per0
        if max(x, y) >= 10_000:
            return f"{x / 1000:.2f}, {y / 1000:.2f} mm"
        return f"{x:.0f}, {y:.0f} µm"  # no thousands separator: a comma already parts x from y

    def scale_bar(self, px_per_cell: float, max_cells: int) -> tuple[int, str]:
        """A scale bar at most ``max_cells`` wide: its width in cells and its label ("50 µm")."""
        unit_per_cell = px_per_cell * (self.um_per_px if self.um_per_px is not None else self.downsample)
        length = nice_length(unit_per_cell * max_cells)
        if length <= 0:
            return 0, ""
        cells = max(1, round(length / unit_per_cell))
        unit = "µm" if self.um_per_px is not None else "px"
        if unit == "µm" and length >= 1000:
            return cells, f"{length / 1000:g} mm"
        return cells, f"{length:g} {unit}"


def view_scale(view: Viewport, level0_mpp: float | None, mpp_source: str) -> Scale:
    return Scale(level0_mpp * view.downsample if level0_mpp else None, view.downsample, mpp_source)
