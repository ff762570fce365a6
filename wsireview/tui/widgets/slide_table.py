"""The slides table: one row per slide, sortable by any column, filtered by name or label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from wsireview.catalog.queries import SlideOverview
from wsireview.tui.text import Shortened

STATUS_STYLE = {"ready": "green", "failed": "bold red", "missing": "yellow"}


def _thousands(v: int) -> str:
    """A slide's side in at most 4 characters (950, 4.5k, 46k, 150k: up to 999,499 px)."""
    if v < 1000:
        return str(v)
    return f"{v / 1000:.1f}k" if v < 9950 else f"{v / 1000:.0f}k"


def _size(s: SlideOverview) -> str:
    """Width x height in at most 9 characters (the column's width; the side panel has the exact size)."""
    if not s.width or not s.height:
        return "-"
    return f"{_thousands(s.width)}x{_thousands(s.height)}"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    cell: Callable[[SlideOverview], Any]
    sort: Callable[[SlideOverview], Any]
    width: int | None = None  # fixed widths: DataTable then never measures 1,000s of cells


def _num(value: float | None) -> float:
    return -1.0 if value is None else float(value)


# Every fixed width holds the column's title and the sort arrow: the arrow shows whichever column sorts.
COLUMNS = [
    Column("name", "slide", lambda s: Shortened(s.name), lambda s: s.name.lower()),
    Column("status", "status", lambda s: Text(s.status, style=STATUS_STYLE.get(s.status, "")), lambda s: s.status, 7),
    Column("size", "size", lambda s: Text(_size(s)), lambda s: (s.width or 0) * (s.height or 0), 9),
    Column("mpp", "mpp", lambda s: Text(f"{s.mpp:.3f}" if s.mpp else "-"), lambda s: _num(s.mpp), 5),
    Column("tissue", "tissue", lambda s: Text(f"{s.tissue_fraction:.0%}" if s.tissue_fraction is not None else "-",
                                              justify="right"), lambda s: _num(s.tissue_fraction), 7),
    Column("label", "label", lambda s: Text(s.label or "-", overflow="ellipsis", no_wrap=True),
           lambda s: s.label or "", 8),
    Column("prob", "P", lambda s: Text(f"{s.probability:.2f}" if s.probability is not None else "-"),
           lambda s: _num(s.probability), 4),
    Column("patches", "patches", lambda s: Text(str(s.patches), justify="right"), lambda s: s.patches, 8),
    Column("reviewed", "done", lambda s: Text(str(s.reviewed), justify="right"), lambda s: s.reviewed, 5),
    Column("queued", "queue", lambda s: Text(str(s.queued), justify="right"), lambda s: s.queued, 6),
]
ARROWS = {False: "↑", True: "↓"}  # ascending, descending
# Hidden first when the table is narrow (a name needs NAME_WIDTH[0] cells): at 80 columns the table
# keeps slide, status, label, P and queue; at 120 it drops only mpp and size.
DROP_ORDER = ("mpp", "size", "tissue", "patches", "reviewed")
NAME_WIDTH = (12, 30)  # the name column's bounds (SlideTable.fit_columns)
FIRST_ROWS = 60
CHUNK_ROWS = 200


class SlideTable(DataTable):
    """Slides with their status, size, tissue, label, prediction and review counts."""

    BINDINGS = [Binding("enter", "select_cursor", "Open", show=True)]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.slides: list[SlideOverview] = []
        self.sort_key = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self.shown: list[Column] = []  # the columns on screen (fit_columns)
        self.matching = 0  # rows that pass the filter
        self._generation = 0  # bumped by each fill, so a late batch of an older fill is dropped

    def fit_columns(self) -> tuple[list[Column], int]:
        """The columns to show and the name column's width. The name takes the room the other
        columns leave (a scrollbar's width kept free), within NAME_WIDTH and no wider than the
        longest name; when that room is under NAME_WIDTH[0], the columns of DROP_ORDER are hidden
        one by one, so slide, status, label, P and queue stay on screen at 80 columns. When even
        those do not fit (or before the first layout), names stay whole and the table scrolls."""
        longest = max((len(s.name) for s in self.slides), default=0)
        wanted = min(NAME_WIDTH[1], max(NAME_WIDTH[0], longest))
        shown = list(COLUMNS)
        for key in (None, *DROP_ORDER):
            shown = [c for c in shown if c.key != key]
            fixed = sum((c.width or 0) + 2 * self.cell_padding for c in shown)  # the name's padding too
            room = self.size.width - fixed - self.styles.scrollbar_size_vertical
            if room >= NAME_WIDTH[0]:
                return shown, min(wanted, room)
        return shown, wanted

    def set_slides(self, slides: list[SlideOverview]) -> None:
        self.slides = slides
        shown, name_width = self.fit_columns()
        if not self._laid_out(shown, name_width):
            self.shown = shown
            self.clear(columns=True)
            for column in shown:
                self.add_column(column.label, key=column.key, width=column.width or name_width)
        self._populate()

    def on_resize(self) -> None:
        """Fit the columns to the new width; the table is refilled only when that changes them."""
        if self.columns and not self._laid_out(*self.fit_columns()):
            self.set_slides(self.slides)

    def _laid_out(self, shown: list[Column], name_width: int) -> bool:
        """Whether the table already has these columns and this name width."""
        return (bool(self.columns) and [c.key for c in shown] == [c.key for c in self.shown]
                and self.columns[ColumnKey("name")].width == name_width)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._populate()

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = (not self.sort_reverse) if key == self.sort_key else False
        self.sort_key, self.sort_reverse = key, reverse
        self._populate()

    def visible_slides(self) -> list[SlideOverview]:
        """The slides the filter lets through, in the sort order (not Textual's ``visible``: a style)."""
        needle = self.filter_text
        rows = [s for s in self.slides if not needle or needle in s.name.lower() or needle in (s.label or "").lower()]
        column = next(c for c in COLUMNS if c.key == self.sort_key)
        return sorted(rows, key=column.sort, reverse=self.sort_reverse)

    @property
    def selected_id(self) -> int | None:
        if not self.row_count:
            return None
        try:
            value = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
            return int(value) if value is not None else None
        except Exception:
            return None

    def _populate(self) -> None:
        """Fill the table: the first screenful at once, the rest in chunks after the frame is drawn
        (DataTable measures every cell it is given, ~0.3 s for 1,000 slides)."""
        keep = self.selected_id
        self.clear()
        self._generation += 1
        rows = self.visible_slides()
        self.matching = len(rows)
        self._add_rows(rows[:FIRST_ROWS])
        if len(rows) > FIRST_ROWS:
            self.call_after_refresh(self._add_later, self._generation, rows[FIRST_ROWS:], keep)
        self._restore_cursor(keep)
        self._mark_sort_column()

    def _add_rows(self, rows: list[SlideOverview]) -> None:
        for s in rows:
            self.add_row(*(c.cell(s) for c in self.shown), key=str(s.id))

    def _add_later(self, generation: int, rows: list[SlideOverview], keep: int | None) -> None:
        if generation != self._generation:  # a newer filter or sort replaced this fill
            return
        self._add_rows(rows[:CHUNK_ROWS])
        if len(rows) > CHUNK_ROWS:
            self.set_timer(0.02, lambda: self._add_later(generation, rows[CHUNK_ROWS:], keep))
        if keep is not None and self.selected_id != keep:
            self._restore_cursor(keep)

    def _restore_cursor(self, keep: int | None) -> None:
        if keep is not None and str(keep) in self.rows:
            self.move_cursor(row=self.get_row_index(str(keep)))

    def _mark_sort_column(self) -> None:
        for column in self.shown:  # mark the sort column in its header
            arrow = ARROWS[self.sort_reverse] if column.key == self.sort_key else ""
            self.columns[ColumnKey(column.key)].label = Text(column.label + arrow)
