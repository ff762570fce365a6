"""Legends for the pictures of a slide: which colour means what (Rich text, one short line each)."""

from __future__ import annotations

from rich.columns import Columns
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
        r, g, b = (int(c) for c in COLORMAP[round(i * 255 / (steps - 1))])
        text.append_text(_swatch((r, g, b), "█"))
    return text.append(" high")


def tissue_legend() -> Text:
    """``□ tissue, rest shaded``: the outline colour (21 cells: one line in the 80-column side panel)."""
    return _swatch(TISSUE_OUTLINE, "□").append(" tissue, rest shaded", style="")


def verdict_items() -> list[Text]:
    """The verdict colours, the queued outline and the selected patch's box, one item each."""
    items = [_swatch(VERDICT_COLOURS[v]).append(f" {VERDICT_WORDS[v]}", style="") for v in VERDICTS]
    items.append(_swatch(QUEUED_COLOUR, "□").append(" queued", style=""))
    items.append(_swatch((0, 255, 255), "□").append(" selected", style=""))
    return items


def legend(items: list[Text]) -> Columns:
    """Legend items laid out in as many columns as fit: an item never breaks across lines."""
    for item in items:
        item.no_wrap = True
    return Columns(items, padding=(0, 2))
