"""The selected slide's metadata, and why it cannot be used when it is failed or missing."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from wsireview.catalog import READY
from wsireview.catalog.queries import SlideOverview
from wsireview.tui.text import Shortened
from wsireview.tui.widgets.slide_table import STATUS_STYLE


def _line(text: str, style: str = "") -> Text:
    """A value on one line, cut with an ellipsis: a row never wraps in the 80-column side panel."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _paragraph(text: str, style: str) -> Text:
    """An explanation (why a slide failed, what to do) may take several lines."""
    return Text(text, style=style, no_wrap=False, overflow="fold")


def describe(s: SlideOverview, file_found: bool = True) -> Table:
    """One short row per fact; the values fit 19 cells, the room the side panel has at 80 columns."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()  # wrappable, so the grid narrows it rather than the names; _line keeps one line
    grid.add_row("slide", Shortened(s.name, "bold"))
    grid.add_row("status", _line(s.status, STATUS_STYLE.get(s.status, "")))
    if s.reason:
        grid.add_row("why", _paragraph(s.reason, "red"))
    if not file_found and s.status == READY:
        grid.add_row("file", _paragraph(f"not found at {s.path}: patches cannot be read "
                                        "(run `wsireview add` on its folder to mark it missing)", "yellow"))
    if s.warning:
        grid.add_row("note", _paragraph(s.warning, "yellow"))
    if s.width and s.height:
        grid.add_row("size", _line(f"{s.width:,} x {s.height:,} px"))
    if s.vendor or s.levels:
        grid.add_row("format", _line(" · ".join(p for p in (s.vendor, f"{s.levels} lv" if s.levels else "") if p)))
    if s.mpp:
        grid.add_row("mpp", _line(f"{s.mpp:.3f} µm/px" + (f" ({s.objective_power:g}x)" if s.objective_power else "")))
    if s.patch_size_level0:
        grid.add_row("patch", _line(f"{s.patch_size_px} px ({s.patch_size_level0} at lv0)"))
    if s.tissue_fraction is not None:
        grid.add_row("tissue", _line(f"{s.tissue_fraction:.1%}"))
    grid.add_row("label", _line((s.label or "-") + (f" ({s.label_set_by})" if s.label and s.label_set_by else "")))
    if s.probability is not None:
        grid.add_row("P(pos)", _line(f"{s.probability:.2f}"))
    grid.add_row("patches", _line(f"{s.patches:,}"))
    grid.add_row("review", _line(f"{s.queued:,} queued · {s.reviewed:,} done"))
    return grid


class SlideInfo(Static):
    def show(self, slide: SlideOverview | None, file_found: bool = True) -> None:
        self.update(describe(slide, file_found) if slide is not None else "")
