"""Reading what the triage screen shows: patches, wider context and thumbnails (no Textual).

Open slides are kept (a few at a time) because opening a slide costs far more than reading one
patch. Reads are thread-safe: workers read ahead while the UI thread shows the current patch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageDraw

from wsireview.catalog.queries import QueueEntry
from wsireview.errors import WsireviewError
from wsireview.slides.reader import Slide, SlideError
from wsireview.tui.imaging import CONTEXT_COLOUR
from wsireview.workspace import Workspace

CONTEXT_FACTOR = 8  # the context view covers 8 x 8 patches around the one under review


class PatchUnavailable(WsireviewError):
    """A patch or picture that cannot be shown, with the reason a person can act on."""


class PatchSource:
    def __init__(self, workspace: Workspace, patch_px: int = 224, open_slides: int = 6):
        self.workspace = workspace
        self.patch_px = patch_px
        self._slides: OrderedDict[str, Slide] = OrderedDict()
        self._slide_locks: dict[str, threading.Lock] = {}
        self._thumbs: dict[str, Image.Image] = {}
        self._lock = threading.Lock()
        self._max_open = open_slides

    def _slide(self, path: str) -> tuple[Slide, threading.Lock]:
        with self._lock:
            slide = self._slides.get(path)
            if slide is not None:
                self._slides.move_to_end(path)
                return slide, self._slide_locks[path]
        full = self.workspace.absolute(path) or Path(path)
        if not full.exists():
            raise PatchUnavailable(f"slide file not found: {full}")
        try:
            slide = Slide(full)
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

    def _read(self, path: str, x: int, y: int, side0: int, out_px: int) -> Image.Image:
        """A square field of ``side0`` level-0 pixels at ``out_px``, under the slide's lock."""
        slide, lock = self._slide(path)
        try:
            with lock:
                return slide.read_region(x, y, side0, out_px)
        except SlideError as error:
            raise PatchUnavailable(str(error)) from error

    def patch(self, entry: QueueEntry) -> Image.Image:
        """The patch at the resolution it was embedded at (``patch_size_px``, default 224)."""
        return self._read(entry.slide_path, entry.x, entry.y, entry.size, entry.patch_size_px or self.patch_px)

    def context(self, entry: QueueEntry, factor: int = CONTEXT_FACTOR) -> Image.Image:
        """A ``factor``-times wider field around the patch, read at lower magnification, patch outlined."""
        out_px = entry.patch_size_px or self.patch_px
        side0 = entry.size * factor
        x0 = entry.x + entry.size // 2 - side0 // 2
        y0 = entry.y + entry.size // 2 - side0 // 2
        image = self._read(entry.slide_path, x0, y0, side0, out_px)
        scale = out_px / side0
        a = (entry.x - x0) * scale
        b = a + entry.size * scale
        ImageDraw.Draw(image).rectangle([round(a) - 1, round(a) - 1, round(b), round(b)], outline=CONTEXT_COLOUR, width=2)
        return image

    def thumbnail(self, stored_path: str | None) -> Image.Image:
        """A workspace thumbnail (or overlay) picture, decoded once."""
        if not stored_path:
            raise PatchUnavailable("no thumbnail recorded for this slide")
        with self._lock:
            cached = self._thumbs.get(stored_path)
        if cached is not None:
            return cached
        path = self.workspace.absolute(stored_path)
        try:
            image = Image.open(path)
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
