"""Numbers as every screen, command and report prints them: metrics to three decimals, changes
with their sign and never "-0.000"."""

from __future__ import annotations


def metric_text(value: float | int | None) -> str:
    """A metric to three decimals, a count as a whole number, "-" when there is none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def rounded_change(change: float, whole: bool = False) -> float:
    """A change rounded to what is printed (0 or 3 decimals); ``+ 0.0`` turns -0.0 into 0.0, so a
    change that rounds to nothing prints +0.000 and is coloured as no change."""
    return round(change, 0 if whole else 3) + 0.0


def change_text(change: float, whole: bool = False) -> str:
    """``+0.012``, ``-0.300``, ``+0.000`` (or ``+3`` for a count): never ``-0.000``."""
    change = rounded_change(change, whole)
    return f"{change:+.0f}" if whole else f"{change:+.3f}"
