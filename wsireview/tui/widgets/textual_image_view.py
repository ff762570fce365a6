"""textual-image widgets with the same small surface as ``HalfBlockImage``.

Kitty graphics (``--graphics kitty``) and Sixel (``--graphics sixel``) draw real pixels where the
terminal speaks them (not through tmux). The plain half-cell widget is kept only as the benchmark's baseline:
it converts pixels to cells on the UI thread at every swap. textual-image is imported here only,
when one of these is chosen (its import probes the terminal).
"""

from __future__ import annotations

from typing import Hashable

from wsireview.tui.imaging import placeholder
from wsireview.tui.messages import ImageBoxChanged
from wsireview.tui.widgets.halfblock import ImageSource


def _with_show(base):
    class View(base, Renderable=base._Renderable):  # type: ignore[misc, valid-type, call-arg]
        DEFAULT_CSS = "View { width: 1fr; height: 1fr; }"

        def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
            super().__init__(None, id=id, classes=classes)
            self._key: Hashable | None = None
            self._box = (0, 0)

        @property
        def box(self) -> tuple[int, int]:
            """The content size as of the last resize (safe to read from a worker thread)."""
            return self._box

        def on_resize(self) -> None:
            box = (self.content_size.width, self.content_size.height)
            if box != self._box:
                self._box = box
                self.post_message(ImageBoxChanged(self))

        @property
        def pixel_box(self) -> tuple[int, int]:
            """The box in the terminal's pixels (cells times the cell size the terminal reported)."""
            from textual_image._terminal import get_cell_size

            cell = get_cell_size()
            return self._box[0] * cell.width, self._box[1] * cell.height

        @property
        def shown_key(self) -> Hashable | None:
            return self._key

        def prerender(self, key: Hashable, source: ImageSource) -> None:
            """Nothing to prepare: these renderers convert at draw time."""

        def show(self, key: Hashable, source: ImageSource) -> None:
            self._key = key
            self.image = source(self._box if min(self._box) > 0 else (80, 40)) if callable(source) else source

        def show_message(self, text: str) -> None:
            self._key = None
            self.image = placeholder(text)

    return View


def kitty_image(id: str | None = None, classes: str | None = None):
    from textual_image.widget import TGPImage

    return _with_show(TGPImage)(id=id, classes=classes)


def sixel_image(id: str | None = None, classes: str | None = None):
    from textual_image.widget import SixelImage

    return _with_show(SixelImage)(id=id, classes=classes)


def halfcell_baseline_image(id: str | None = None, classes: str | None = None):
    from textual_image.widget import HalfcellImage

    return _with_show(HalfcellImage)(id=id, classes=classes)


def make_image_view(graphics: str, id: str | None = None, classes: str | None = None):
    """The image widget for a graphics mode: halfblock, kitty, sixel, or textual-image (baseline)."""
    if graphics == "kitty":
        return kitty_image(id=id, classes=classes)
    if graphics == "sixel":
        return sixel_image(id=id, classes=classes)
    if graphics == "textual-image":
        return halfcell_baseline_image(id=id, classes=classes)
    from wsireview.tui.widgets.halfblock import HalfBlockImage

    return HalfBlockImage(id=id, classes=classes)
