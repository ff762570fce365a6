"""App-wide messages: screens react to these instead of reaching into each other."""

from __future__ import annotations

from textual.message import Message


class CatalogChanged(Message):
    """Slides, models or the queue changed (e.g. a retrain finished): reload what is shown."""


class ImageBoxChanged(Message):
    """An image view has a new size: what it shows must be read again for the new box."""

    def __init__(self, view) -> None:
        super().__init__()
        self.view = view
