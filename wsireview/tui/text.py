"""Names shortened for narrow columns: slide names that differ only at the end must stay apart."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.style import Style, StyleType
from rich.text import Text

from wsireview.text import printable

ELLIPSIS = "…"


def middle_ellipsis(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by dropping its middle: "cmu-1-small-region.svs" in 12
    is "cmu-1-…n.svs" (the start and the end, where slide names differ, both kept)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return ELLIPSIS
    tail = (width - 1) // 2
    head = width - 1 - tail
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


class Shortened:
    """A one-line name that keeps both ends when the column is narrower than it (a Rich renderable).

    Shown as plain text, never markup, with control characters escaped: a name from a file cannot
    style, retitle or clear the terminal."""

    def __init__(self, text: str, style: StyleType = "") -> None:
        self.text = printable(text)
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        style = console.get_style(self.style) if self.style else Style()
        yield Text(middle_ellipsis(self.text, options.max_width), style=style, no_wrap=True, overflow="crop")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(len(self.text), 8), len(self.text))

    def __str__(self) -> str:
        return self.text
