"""App-wide messages: screens react to these instead of reaching into each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from wsireview.tui.widgets.image_view import ImageView


class CatalogChanged(Message):
    """Slides, models or the queue changed (e.g. a retrain finished): reload what is shown."""


class ImageBoxChanged(Message):
    """An image view has a new size: what it shows must be read again for the new box."""

    def __init__(self, view: ImageView) -> None:
        super().__init__()
        self.view = view
