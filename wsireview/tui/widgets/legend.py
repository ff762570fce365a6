"""Legends for the pictures of a slide: which colour means what (Rich text, one short line each)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from wsireview.catalog import VERDICTS
from wsireview.tui.imaging import COLORMAP, QUEUED_COLOUR, TISSUE_OUTLINE, VERDICT_COLOURS

VERDICT_WORDS = {"lesion": "lesion", "not_lesion": "not lesion", "unsure": "unsure", "artifact": "artifact"}


def _swatch(rgb: tuple[int, int, int], char: str = "■") -> Text:
    return Text(char, style=Style(color=f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"))


def attention_legend(steps: int = 6) -> Text:
    """``attention low ▮▮▮▮▮▮ high``: the heatmap's colour ramp, lowest to highest attention."""
    text = Text("attention ", style="dim").append("low ")
    for i in range(steps):
        rgb = tuple(int(c) for c in COLORMAP[round(i * 255 / (steps - 1))])
        text.append_text(_swatch(rgb, "█"))
    return text.append(" high")


def tissue_legend() -> Text:
    return Text("tissue ", style="dim").append_text(_swatch(TISSUE_OUTLINE, "□")).append(" outlined, the rest shaded")


def verdict_legend() -> Text:
    """The verdict colours, the queued outline and the selected patch's box."""
    text = Text("patches ", style="dim")
    for verdict in VERDICTS:
        text.append_text(_swatch(VERDICT_COLOURS[verdict])).append(f" {VERDICT_WORDS[verdict]}  ")
    text.append_text(_swatch(QUEUED_COLOUR, "□")).append(" queued  ")
    return text.append_text(_swatch((0, 255, 255), "□")).append(" selected")
