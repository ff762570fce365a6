"""Which way the app draws images: Kitty graphics, Sixel or colour half-blocks (``--graphics auto``).

The terminal is asked before the app starts (once Textual runs, it reads every answer from stdin
itself). textual-image sends the queries when it is imported: Sixel support from the primary
device attributes, Kitty graphics from a query image, 0.1 s each at most. Inside tmux or screen
and when stdout is not a terminal nothing is asked: a multiplexer answers for itself, not for the
terminal that shows it, and a pipe answers nothing.
"""

from __future__ import annotations

import os
import sys

MODES = ("auto", "halfblock", "kitty", "sixel")  # what --graphics accepts


def in_multiplexer(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("TMUX")) or env.get("TERM", "").startswith(("screen", "tmux"))


def choose(is_tty: bool, multiplexed: bool, terminal_answer: str | None) -> str:
    """The mode for a terminal: ``terminal_answer`` is what the terminal said it speaks
    ("kitty", "sixel" or None), asked only when it is a terminal outside a multiplexer."""
    if not is_tty or multiplexed:
        return "halfblock"
    return terminal_answer or "halfblock"


def ask_terminal() -> str | None:
    """What textual-image found the terminal speaks (it asks on import): "sixel", "kitty" or None."""
    import textual_image.renderable as renderable

    if renderable.Image is renderable.SixelImage:
        return "sixel"
    if renderable.Image is renderable.TGPImage:
        return "kitty"
    return None


def resolve(requested: str) -> str:
    """The mode to draw with: ``requested`` itself unless it is "auto"."""
    if requested != "auto":
        return requested
    is_tty = bool(sys.__stdout__ and sys.__stdout__.isatty() and sys.__stdin__ and sys.__stdin__.isatty())
    multiplexed = in_multiplexer()
    return choose(is_tty, multiplexed, ask_terminal() if is_tty and not multiplexed else None)
