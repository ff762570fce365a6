"""Text from files (names, paths, reasons) made safe to show on a terminal."""

from __future__ import annotations

from rich.markup import escape


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences included) shown as Python escapes,
    so a file name can never retitle, recolour or clear the terminal it is printed on."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def literal(text: str) -> str:
    """``text`` as Rich markup that shows it literally: ``[/]`` or ``[reverse]`` in a name is text,
    and control characters are escaped."""
    return escape(printable(text))
