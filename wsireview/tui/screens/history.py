"""Your verdicts, newest first: any of them changed or withdrawn after the fact.

A change is a new review appended (the old one stays in the catalog, superseded); a withdrawal
marks your reviews of the patch undone. The list keeps its order while you work through it, so a
changed row does not jump away from the cursor; it is sorted again when a filter changes.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Static

from wsireview.text import literal
from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, UNSURE, VERDICTS
from wsireview.learn.reviews import WITHDRAWN, HistoryEntry, change_verdict, reviewer_history, withdraw_verdict
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.patch_source import PatchUnavailable
from wsireview.tui.screens.base import ReviewScreen
from wsireview.tui.screens.slide import VERDICT_STYLE
from wsireview.tui.text import Shortened
from wsireview.tui.widgets.legend import VERDICT_WORDS
from wsireview.tui.widgets.image_view import image_view
from wsireview.tui.widgets.textual_image_view import make_image_view

FILTERS = (None, *VERDICTS, WITHDRAWN)


def verdict_text(verdict: str) -> Text:
    if verdict == WITHDRAWN:
        return Text("withdrawn", style="dim italic")
    return Text(VERDICT_WORDS.get(verdict, verdict), style=VERDICT_STYLE.get(verdict, ""))


class HistoryScreen(ReviewScreen):
    HELP_TITLE = "History"
    AUTO_FOCUS = ""  # the table takes focus in reload(); the hidden filter box must not
    BINDINGS = [
        Binding("y", f"change('{LESION}')", "Change to lesion", show=False),  # the side panel names y n u a
        Binding("n", f"change('{NOT_LESION}')", "Change to not lesion", show=False),
        Binding("u", f"change('{UNSURE}')", "Change to unsure", show=False),
        Binding("a", f"change('{ARTIFACT}')", "Change to artifact", show=False),
        Binding("w,delete", "withdraw", "Withdraw"),
        Binding("v", "verdict_filter", "Verdict"),
        Binding("slash", "slide_filter", "Slide"),
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, slide_id: int | None = None, focus_patch_id: int | None = None) -> None:
        super().__init__()
        self.slide_id = slide_id
        self.focus_patch_id = focus_patch_id
        self.verdict: str | None = None
        self.name_filter = ""
        self.entries: list[HistoryEntry] = []
        self.order: list[int] = []  # patch ids in the order first shown: a change keeps its row in place
        self._shown_once = False

    def compose(self) -> ComposeResult:
        yield Static(id="history-title", classes="title")
        yield Input(placeholder="slide name (enter: keep, esc: all slides)", id="history-filter")
        with Horizontal(id="history-body"):
            yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="history-side"):
                yield make_image_view(self.app.graphics, id="history-patch")
                yield Static(id="history-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.view = image_view(self, "#history-patch")
        table = self.query_one(DataTable)
        table.add_column("when", key="when", width=11)
        table.add_column("verdict", key="verdict", width=10)
        table.add_column("slide", key="slide")  # what it was before: in the side panel (80 columns)
        self.reload(resort=True)

    def on_screen_resume(self) -> None:
        if self.is_mounted and self._shown_once:
            self.reload()
        self._shown_once = True

    def on_catalog_changed(self, _: CatalogChanged) -> None:
        self.reload()

    # -- data -----------------------------------------------------------------------------------
    def reload(self, resort: bool = False) -> None:
        """Read the history again; ``resort``: newest first (else rows stay where they were)."""
        table = self.query_one(DataTable)
        keep = self.selected.patch_id if self.selected else self.focus_patch_id
        entries = reviewer_history(self.app.catalog, self.app.reviewer, slide_id=self.slide_id, verdict=self.verdict)
        if self.name_filter:
            entries = [e for e in entries if self.name_filter.lower() in e.slide_name.lower()]
        if resort:
            self.order = [e.patch_id for e in entries]
        else:
            place = {pid: i for i, pid in enumerate(self.order)}
            entries.sort(key=lambda e: place.get(e.patch_id, -1))  # new patches first, the rest in place
        self.entries = entries
        table.clear()
        for e in entries:
            table.add_row(
                e.changed_at.astimezone().strftime("%m-%d %H:%M"),
                verdict_text(e.verdict),
                Shortened(e.slide_name),
                key=str(e.patch_id),
            )
        index = next((i for i, e in enumerate(entries) if e.patch_id == keep), 0)
        if entries:
            table.move_cursor(row=index)
        if not self.query_one("#history-filter", Input).has_focus:
            table.focus()
        self.show_title()
        self.show_selected()

    @property
    def selected(self) -> HistoryEntry | None:
        if not self.entries:
            return None
        row = self.query_one(DataTable).cursor_row
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def show_title(self) -> None:
        scope = []
        if self.slide_id is not None and self.entries:
            scope.append(f"slide {literal(self.entries[0].slide_name)}")
        elif self.slide_id is not None:
            scope.append("this slide")
        if self.name_filter:
            scope.append(f"slides matching {literal(repr(self.name_filter))}")
        scope.append(f"verdict {VERDICT_WORDS.get(self.verdict, self.verdict)}" if self.verdict else "every verdict")
        self.query_one("#history-title", Static).update(
            f"[b]History[/b] of [b]{self.app.reviewer}[/b]  ·  {len(self.entries)} patch{'' if len(self.entries) == 1 else 'es'}  ·  " + ", ".join(scope)
        )

    # -- the selected patch ---------------------------------------------------------------------
    @on(DataTable.RowHighlighted)
    def show_selected(self) -> None:
        e = self.selected
        detail = self.query_one("#history-detail", Static)
        if e is None:
            self.view.show_message("")
            detail.update("No verdicts here yet." if not (self.verdict or self.name_filter or self.slide_id)
                          else "No verdicts match (v: verdict, /: slide).")
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row("slide", Shortened(e.slide_name, style="bold"))
        grid.add_row("at", f"{e.x:,}, {e.y:,} (patch {e.patch_id})")
        history = [VERDICT_WORDS.get(v, v) for v in e.earlier] + [verdict_text(e.verdict).plain]
        grid.add_row("now", verdict_text(e.verdict))
        grid.add_row("was", Text(" > ".join(history[:-1]) or "-"))
        grid.add_row("keys", Text("y n u a change · w withdraw", style="dim"))
        grid.add_row("", Text("enter: on the slide", style="dim"))
        detail.update(grid)
        self.load_patch(e)

    @work(thread=True, exclusive=True, group="history-patch")
    def load_patch(self, entry: HistoryEntry) -> None:
        key = ("history-patch", entry.patch_id)
        try:
            image = self.app.source.patch(entry)
        except PatchUnavailable as error:
            self.app.call_from_thread(self.view.show_message, f"cannot be shown: {error}")
            return
        self.view.prerender(key, image)
        self.app.call_from_thread(self._show, entry.patch_id, key, image)

    def _show(self, patch_id: int, key: tuple, image) -> None:
        """Show a patch read in a worker if it is still the selected one (a cancelled thread worker
        runs to its end, and may end after its successor)."""
        if self.selected is not None and self.selected.patch_id == patch_id:
            self.view.show(key, image)

    @on(DataTable.RowSelected)
    def open_on_slide(self) -> None:
        e = self.selected
        if e is not None:
            self.app.open_slide(e.slide_id, focus_patch_id=e.patch_id)

    # -- changing one's mind --------------------------------------------------------------------
    def action_change(self, verdict: str) -> None:
        e = self.selected
        if e is None:
            return
        if e.verdict == verdict:
            self.notify(f"Already {VERDICT_WORDS[verdict]}.", timeout=1.5)
            return
        change_verdict(self.app.catalog, e.patch_id, self.app.reviewer, verdict)
        self.notify(f"{literal(e.slide_name)} patch {e.patch_id}: {verdict_text(e.verdict).plain} -> "
                    f"{VERDICT_WORDS[verdict]}", timeout=3)
        self.reload()

    def action_withdraw(self) -> None:
        e = self.selected
        if e is None or e.verdict == WITHDRAWN:
            return
        withdraw_verdict(self.app.catalog, e.patch_id, self.app.reviewer)
        self.notify(f"{literal(e.slide_name)} patch {e.patch_id}: {VERDICT_WORDS.get(e.verdict, e.verdict)} withdrawn "
                    "(it can be queued again)", timeout=3)
        self.reload()

    # -- filters --------------------------------------------------------------------------------
    def action_verdict_filter(self) -> None:
        self.verdict = FILTERS[(FILTERS.index(self.verdict) + 1) % len(FILTERS)]
        self.reload(resort=True)

    def action_slide_filter(self) -> None:
        box = self.query_one("#history-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#history-filter")
    def slide_filter_changed(self, event: Input.Changed) -> None:
        self.slide_id = None  # a typed name replaces the slide the screen was opened for
        self.name_filter = event.value.strip()
        self.reload(resort=True)

    @on(Input.Submitted, "#history-filter")
    def slide_filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_back(self) -> None:
        box = self.query_one("#history-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.name_filter = ""
            self.reload(resort=True)
            return
        self.app.pop_screen()
