"""Images as colour half-blocks ('▀', upper pixel in the foreground, lower in the background).

The lines of an image are built once per (image, box size) and kept in a small cache, so showing
an image that was pre-rendered in a thread worker is a list swap: the UI thread never converts
pixels. Resizing the widget renders the current image again for the new box.

An image is given either as a picture (fitted to the box here) or as a function that draws the
picture for a box (a thumbnail with a marker drawn at display resolution): the function is called
again for every new box, so what is shown never depends on the order of resize and show.
"""

from __future__ import annotations

import textwrap
import threading
from collections import OrderedDict
from typing import Callable, Hashable, Union

import numpy as np
from PIL import Image
from rich.color import Color
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual.filter import ANSIToTruecolor
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from wsireview.tui.messages import ImageBoxChanged

UPPER_HALF = "▀"
_ANSI_CONSOLE = Console(color_system="truecolor", force_terminal=True, width=400)

ImageSource = Union[Image.Image, Callable[[tuple[int, int]], Image.Image]]
"""A picture, or a function that draws one already fitted to a box of (cells wide, cells high)."""


def fit_size(width: int, height: int, cells_w: int, cells_h: int) -> tuple[int, int]:
    """The pixel size that fits an image into a cell box; a cell holds 1 x 2 (about square) pixels."""
    if width <= 0 or height <= 0 or cells_w <= 0 or cells_h <= 0:
        return 0, 0
    scale = min(cells_w / width, 2 * cells_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_image(image: Image.Image, cells_w: int, cells_h: int) -> Image.Image:
    """The image resized to fit the box (aspect kept), RGB."""
    w, h = fit_size(image.width, image.height, cells_w, cells_h)
    rgb = image.convert("RGB")
    if (w, h) == rgb.size or w == 0:
        return rgb
    return rgb.resize((w, h), Image.Resampling.LANCZOS if w < rgb.width else Image.Resampling.BILINEAR)


def _style(fg: tuple[int, int, int], bg: tuple[int, int, int]) -> Style:
    return Style.from_color(Color.from_rgb(*fg), Color.from_rgb(*bg))


def render_strips(image: Image.Image, cells_w: int, cells_h: int, pad: Style | None = None) -> list[Strip]:
    """``cells_h`` lines of exactly ``cells_w`` cells showing ``image`` centred in the box.

    Pure and thread-safe: call it from a worker. An image already fitted to the box (e.g. with a
    marker drawn at display resolution) is kept as it is.
    """
    if cells_w <= 0 or cells_h <= 0:
        return []
    arr = np.asarray(fit_image(image, cells_w, cells_h), dtype=np.uint8)
    if arr.shape[0] % 2:
        fill = np.asarray(pad.bgcolor.get_truecolor() if pad and pad.bgcolor else (0, 0, 0), dtype=np.uint8)
        arr = np.concatenate([arr, np.broadcast_to(fill, (1, arr.shape[1], 3))], axis=0)
    rows = arr.shape[0] // 2
    width = arr.shape[1]
    left = (cells_w - width) // 2
    right = cells_w - width - left
    top = (cells_h - rows) // 2
    blank = Strip.blank(cells_w, pad)
    strips = [blank] * top
    upper = arr[0::2].tolist()
    lower = arr[1::2].tolist()
    for up_row, low_row in zip(upper, lower):
        segments: list[Segment] = []
        if left:
            segments.append(Segment(" " * left, pad))
        run_style: tuple | None = None
        run = 0
        for up, low in zip(up_row, low_row):
            key = (*up, *low)
            if key == run_style:
                run += 1
                continue
            if run_style is not None:
                segments.append(Segment(UPPER_HALF * run, _style(run_style[:3], run_style[3:])))
            run_style, run = key, 1
        if run_style is not None:
            segments.append(Segment(UPPER_HALF * run, _style(run_style[:3], run_style[3:])))
        if right:
            segments.append(Segment(" " * right, pad))
        strip = Strip(segments, cells_w)
        strip.render(_ANSI_CONSOLE)  # warms each Style's ANSI codes here, off the UI thread
        strips.append(strip)
    strips.extend([blank] * (cells_h - len(strips)))
    return strips


def source_strips(source: ImageSource, cells_w: int, cells_h: int, pad: Style | None = None) -> list[Strip]:
    """The lines for an image source in a box (thread-safe)."""
    if cells_w <= 0 or cells_h <= 0:
        return []
    image = source((cells_w, cells_h)) if callable(source) else source
    return render_strips(image, cells_w, cells_h, pad)


def message_strips(text: str, cells_w: int, cells_h: int, style: Style | None = None) -> list[Strip]:
    """A short message centred in the box (for a missing or unreadable image)."""
    if cells_w <= 0 or cells_h <= 0:
        return []
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, max(1, cells_w - 2)) or [""])
    lines = lines[:cells_h]
    top = (cells_h - len(lines)) // 2
    out = [Strip.blank(cells_w, style)] * top
    for line in lines:
        left = (cells_w - len(line)) // 2
        out.append(Strip([Segment(" " * left + line + " " * (cells_w - left - len(line)), style)], cells_w))
    out.extend([Strip.blank(cells_w, style)] * (cells_h - len(out)))
    return out


class HalfBlockImage(Widget):
    """Shows one image as half-block lines; ``prerender`` fills its cache from a worker."""

    DEFAULT_CSS = """
    HalfBlockImage { width: 1fr; height: 1fr; }
    """
    CACHE_SIZE = 32  # the shown image, the views one key away and the next patches, with room to spare

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._source: ImageSource | None = None
        self._key: Hashable | None = None
        self._message = ""
        self._strips: list[Strip] = []
        self._box = (0, 0)
        self._pad = Style()
        self._cache: OrderedDict[tuple, list[Strip]] = OrderedDict()
        self._lock = threading.Lock()

    # -- rendering off the UI thread ------------------------------------------------------------
    @property
    def box(self) -> tuple[int, int]:
        """The content size in cells, as of the last resize: safe to read from worker threads
        (asking the widget itself from a thread could run layout off the UI thread)."""
        return self._box

    @property
    def pixel_box(self) -> tuple[int, int]:
        """The box in image pixels: a cell shows two (upper and lower half), so pixels are about square."""
        return self._box[0], 2 * self._box[1]

    def prerender(self, key: Hashable, source: ImageSource) -> None:
        """Render an image for the current box into the cache (thread-safe; call from a worker)."""
        w, h = box = self.box
        if w <= 0 or h <= 0 or self.is_cached(key):
            return
        strips = source_strips(source, w, h, self._pad)
        with self._lock:
            if box == self._box:  # a resize while rendering would file these lines under the wrong box
                self._store((key, w, h), strips)

    def _store(self, cache_key: tuple, strips: list[Strip]) -> None:
        """Keep the newest ``CACHE_SIZE`` renders (call with the lock held)."""
        self._cache[cache_key] = strips
        while len(self._cache) > self.CACHE_SIZE:
            self._cache.popitem(last=False)

    def is_cached(self, key: Hashable) -> bool:
        w, h = self.box
        with self._lock:
            return (key, w, h) in self._cache

    # -- what is shown --------------------------------------------------------------------------
    def show(self, key: Hashable, source: ImageSource | None) -> None:
        """Show an image: its cached lines when pre-rendered (``source`` may then be None), else
        rendered here on the UI thread (the slow path)."""
        self._key, self._message, self._source = key, "", source
        self._strips = self._strips_for_box()
        self.refresh()

    def show_message(self, text: str) -> None:
        self._source, self._key, self._message = None, None, text
        self._strips = message_strips(text, *self.box, self.rich_style)
        self.refresh()

    @property
    def shown_key(self) -> Hashable | None:
        return self._key

    def _strips_for_box(self) -> list[Strip]:
        w, h = self.box
        if self._key is not None:
            with self._lock:
                cached = self._cache.get((self._key, w, h))
                if cached is not None:
                    self._cache.move_to_end((self._key, w, h))
                    return cached
        if self._source is None:
            return message_strips(self._message, w, h, self.rich_style)
        strips = source_strips(self._source, w, h, self._pad)
        with self._lock:
            self._store((self._key, w, h), strips)
        return strips

    def on_resize(self) -> None:
        size = self.content_size
        background = self.styles.background
        with self._lock:
            changed, self._box = self._box != (size.width, size.height), (size.width, size.height)
        self._pad = Style(bgcolor=background.rich_color) if background.a > 0 else Style()
        self._strips = self._strips_for_box()
        self.refresh()
        if changed:
            self.post_message(ImageBoxChanged(self))

    def render_line(self, y: int) -> Strip:
        w = self._box[0]  # not content_size: that property recomputes the box on every call
        if y < len(self._strips):
            strip = self._strips[y]
            return strip if strip.cell_length == w else strip.adjust_cell_length(w, self._pad)
        return Strip.blank(w, self.rich_style)

    def render_lines(self, crop: Region) -> list[Strip]:
        """The cached lines go to the compositor as they are.

        Textual's per-line styling would build a new strip for every line on every frame and run
        the ANSI-to-truecolor filter over each of its ~50 differently coloured segments (a miss
        in that filter's cache, as one patch has over 1000 colours): about 10 ms a frame. These
        lines are truecolor already and the widget has no border or padding, so only the other
        enabled filters (e.g. monochrome for NO_COLOR) are applied, and their results stay
        cached on the strips.
        """
        if self.styles.gutter or self.opacity != 1.0 or self.styles.tint.a:
            return super().render_lines(crop)
        filters = [f for f in self.get_line_filters() if not isinstance(f, ANSIToTruecolor)]
        background = self.background_colors[1]
        x1, x2 = crop.column_span
        full = (x1, x2) == (0, self._box[0])
        lines = []
        for y in crop.line_range:
            strip = self.render_line(y)
            for line_filter in filters:
                strip = strip.apply_filter(line_filter, background)
            lines.append(strip if full else strip.crop(x1, x2))
        return lines
