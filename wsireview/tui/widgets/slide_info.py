"""The selected slide's metadata, and why it cannot be used when it is failed or missing."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from wsireview.catalog.queries import SlideOverview


def describe(s: SlideOverview, file_found: bool = True) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("slide", Text(s.name, style="bold"))
    status = Text(s.status, style={"ready": "green", "failed": "bold red", "missing": "yellow"}.get(s.status, ""))
    grid.add_row("status", status)
    if s.reason:
        grid.add_row("why", Text(s.reason, style="red"))
    if not file_found and s.status == "ready":
        grid.add_row("file", Text(f"not found at {s.path}: patches cannot be read "
                                  "(run `wsireview add` on its folder to mark it missing)", style="yellow"))
    if s.warning:
        grid.add_row("note", Text(s.warning, style="yellow"))
    if s.width and s.height:
        grid.add_row("size", f"{s.width:,} x {s.height:,} px · {s.levels or 1} lv")
    if s.vendor:
        grid.add_row("format", s.vendor)
    if s.mpp:
        grid.add_row("mpp", f"{s.mpp:.3f} µm/px" + (f" ({s.objective_power:g}x)" if s.objective_power else ""))
    if s.patch_size_level0:
        grid.add_row("patch", f"{s.patch_size_px} px ({s.patch_size_level0} at level 0)")
    if s.tissue_fraction is not None:
        grid.add_row("tissue", f"{s.tissue_fraction:.1%}")
    grid.add_row("label", s.label or "-")
    if s.probability is not None:
        grid.add_row("P(pos)", f"{s.probability:.2f}")
    grid.add_row("patches", f"{s.patches} · {s.reviewed} done · {s.queued} queued")
    return grid


class SlideInfo(Static):
    def show(self, slide: SlideOverview | None, file_found: bool = True) -> None:
        self.update(describe(slide, file_found) if slide is not None else "")
