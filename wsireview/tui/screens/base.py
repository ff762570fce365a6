"""The screens' common base: ``self.app`` typed as the review app they run in.

Textual types a node's ``app`` as ``App[Any]``; its ``getters.app`` returns the running app narrowed
to our class (and asserts that it is one), so screens read ``self.app.catalog`` with its type.
"""

from __future__ import annotations

from typing import TypeVar

from textual import getters
from textual.screen import ModalScreen, Screen

from wsireview.tui.app import ReviewApp

ResultType = TypeVar("ResultType")


class ReviewScreen(Screen[ResultType]):
    """A full screen of the review app."""

    app = getters.app(ReviewApp)


class ReviewModalScreen(ModalScreen[ResultType]):
    """A modal screen of the review app (a question or progress over the screen beneath)."""

    app = getters.app(ReviewApp)
