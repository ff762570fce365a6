"""Reading what the triage screen shows: fields of a slide at any zoom, and thumbnails (no Textual).

Open slides are kept (a few at a time) because opening a slide costs far more than reading one
patch. Reads are thread-safe: workers read ahead while the UI thread shows the current patch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageDraw

from wsireview.catalog.queries import PatchLocation, QueueEntry
from wsireview.errors import WsireviewError
from wsireview.slides.reader import SlideFile, SlideError
from wsireview.tui.imaging import OUTLINE_COLOUR
from wsireview.tui.viewport import Viewport
from wsireview.workspace import Workspace


class PatchUnavailable(WsireviewError):
    """A patch or picture that cannot be shown, with the reason a person can act on."""


class PatchSource:
    def __init__(self, workspace: Workspace, patch_px: int = 224, open_slides: int = 6):
        self.workspace = workspace
        self.patch_px = patch_px
        self._slides: OrderedDict[str, SlideFile] = OrderedDict()
        self._slide_locks: dict[str, threading.Lock] = {}
        self._thumbs: dict[str, Image.Image] = {}
        self._lock = threading.Lock()
        self._max_open = open_slides

    def _slide(self, path: str) -> tuple[SlideFile, threading.Lock]:
        with self._lock:
            slide = self._slides.get(path)
            if slide is not None:
                self._slides.move_to_end(path)
                return slide, self._slide_locks[path]
        full = self.workspace.absolute(path) or Path(path)
        if not full.exists():
            raise PatchUnavailable(f"slide file not found: {full}")
        try:
            slide = SlideFile(full)
        except SlideError as error:
            raise PatchUnavailable(f"cannot open slide: {error}") from error
        with self._lock:
            if path in self._slides:  # another thread opened it meanwhile
                slide.close()
                return self._slides[path], self._slide_locks[path]
            self._slides[path] = slide
            self._slide_locks.setdefault(path, threading.Lock())
            while len(self._slides) > self._max_open:
                old_path, old = self._slides.popitem(last=False)
                with self._slide_locks[old_path]:
                    old.close()
            return slide, self._slide_locks[path]

    def patch(self, entry: PatchLocation) -> Image.Image:
        """The patch at the resolution it was embedded at (``patch_size_px``, default 224)."""
        slide, lock = self._slide(entry.slide_path)
        out_px = entry.patch_size_px or self.patch_px
        try:
            with lock:
                return slide.read_region(entry.x, entry.y, entry.size, out_px)
        except SlideError as error:
            raise PatchUnavailable(str(error)) from error

    def view(self, entry: QueueEntry, view: Viewport, box_px: tuple[int, int]) -> Image.Image:
        """The field ``view`` shows in a box of ``box_px`` pixels, read from the best pyramid level
        for its downsample, with the patch outlined wherever it falls in the field."""
        x0, y0, w0, h0 = view.field(box_px)
        slide, lock = self._slide(entry.slide_path)
        try:
            with lock:
                image = slide.read_field(x0, y0, w0, h0, *box_px)
        except SlideError as error:
            raise PatchUnavailable(str(error)) from error
        sx, sy = box_px[0] / w0, box_px[1] / h0
        a = ((entry.x - x0) * sx, (entry.y - y0) * sy)
        b = ((entry.x + entry.size - x0) * sx, (entry.y + entry.size - y0) * sy)
        # just outside the patch, so every pixel of the patch itself stays visible
        box = [round(a[0]) - 1, round(a[1]) - 1, round(b[0]), round(b[1])]
        ImageDraw.Draw(image).rectangle(box, outline=OUTLINE_COLOUR, width=1)
        return image

    def scale(self, entry: QueueEntry) -> tuple[float | None, str]:
        """The slide's µm per level-0 pixel (None when unknown) and where that came from."""
        slide, _ = self._slide(entry.slide_path)
        return slide.level0_mpp, slide.mpp_source

    def thumbnail(self, stored_path: str | None) -> Image.Image:
        """A workspace thumbnail (or overlay) picture, decoded once."""
        if not stored_path:
            raise PatchUnavailable("no thumbnail recorded for this slide")
        with self._lock:
            cached = self._thumbs.get(stored_path)
        if cached is not None:
            return cached
        path = self.workspace.absolute(stored_path)
        assert path is not None  # stored_path is not empty
        try:
            image: Image.Image = Image.open(path)
            image.load()
            image = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise PatchUnavailable(f"thumbnail unreadable: {path} ({type(error).__name__})") from error
        with self._lock:
            self._thumbs[stored_path] = image
        return image

    def close(self) -> None:
        with self._lock:
            for path, slide in self._slides.items():
                with self._slide_locks[path]:
                    slide.close()
            self._slides.clear()
