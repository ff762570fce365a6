"""Where a patch sits on its slide: the thumbnail, large, with the patch and the field shown marked."""

from __future__ import annotations

from functools import partial

from PIL import Image
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from wsireview.catalog.queries import QueueEntry
from wsireview.tui.imaging import MARK_COLOUR, VIEW_COLOUR, mark_rect, placeholder
from wsireview.tui.patch_source import PatchUnavailable
from wsireview.tui.text import Shortened
from wsireview.tui.widgets.halfblock import fit_image
from wsireview.tui.widgets.textual_image_view import make_image_view


class PatchPlaceScreen(ModalScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]
    HELP_TITLE = "where the patch sits"

    def __init__(self, entry: QueueEntry, field: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.entry = entry
        self.field = field

    def compose(self) -> ComposeResult:
        with Vertical(id="place-box"):
            yield Static(Shortened(f"{self.entry.slide_name}: the patch (cyan) and the field shown (magenta)"),
                         id="place-title", classes="title")
            yield make_image_view(self.app.graphics, id="place-thumb")
            yield Static("[b]esc[/b] or [b]s[/b]: back to the patch", id="place-keys", classes="caption")

    def on_mount(self) -> None:
        self.query_one("#place-thumb").show(("place", self.entry.patch_id, self.field), partial(self._marked))

    def on_resize(self) -> None:
        self.query_one("#place-thumb").show(("place", self.entry.patch_id, self.field), partial(self._marked))

    def _marked(self, cells: tuple[int, int]) -> Image.Image:
        e = self.entry
        try:
            thumb = fit_image(self.app.source.thumbnail(e.thumbnail_path), *cells)
        except PatchUnavailable as error:
            return fit_image(placeholder(str(error)), *cells)
        size = (e.slide_width or 0, e.slide_height or 0)
        x0, y0, w0, h0 = self.field
        mark_rect(thumb, x0, y0, w0, h0, size, VIEW_COLOUR)
        return mark_rect(thumb, e.x, e.y, e.size, e.size, size, MARK_COLOUR)
