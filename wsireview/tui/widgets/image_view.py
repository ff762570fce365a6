"""What screens use of an image widget, whichever way it draws (half-blocks, Kitty, Sixel).

``HalfBlockImage`` and the textual-image views share this surface; ``make_image_view`` picks one by
the graphics mode, and screens reach it through ``image_view`` rather than a concrete class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Protocol, cast

from textual.dom import DOMNode

from wsireview.tui.widgets.halfblock import ImageSource


class ImageView(Protocol):
    """An image widget: shows a picture (or a message), and pre-renders pictures from a worker."""

    @property
    def box(self) -> tuple[int, int]:
        """The content size in cells as of the last resize (safe to read from a worker thread)."""
        ...

    @property
    def pixel_box(self) -> tuple[int, int]:
        """The box in image pixels: what a picture is fitted to."""
        ...

    @property
    def shown_key(self) -> Hashable | None:
        """The key of the picture shown; None while a message is shown."""
        ...

    def prerender(self, key: Hashable, source: ImageSource) -> None:
        """Prepare a picture for the current box (called from a worker thread)."""
        ...

    def show(self, key: Hashable, source: ImageSource) -> None: ...

    def show_message(self, text: str) -> None: ...


def image_view(node: DOMNode, selector: str) -> ImageView:
    """The image widget under ``node`` that ``selector`` names (one made by ``make_image_view``)."""
    return cast(ImageView, node.query_one(selector))


if TYPE_CHECKING:  # the widgets implement the protocol: mypy checks it here
    from wsireview.tui.widgets.halfblock import HalfBlockImage

    _halfblock: type[ImageView] = HalfBlockImage
