"""App-wide messages: screens react to these instead of reaching into each other."""

from __future__ import annotations

from textual.message import Message


class CatalogChanged(Message):
    """Slides, models or the queue changed (e.g. a retrain finished): reload what is shown."""
