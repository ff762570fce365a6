"""Triage: one patch at a time, one key per verdict, every verdict committed the moment it is given.

The next patches are read and rendered to half-block lines in a thread worker that starts after
the current frame is drawn, so a keypress only swaps prepared lines (the key handler itself never
touches a slide file or converts pixels).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from functools import partial

from PIL import Image
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, UNSURE
from wsireview.catalog.queries import QueueEntry, queue_entries
from wsireview.learn.labels import nothing_queued_step
from wsireview.learn.reviews import record_verdict, undo_last
from wsireview.tui.imaging import mark_region, placeholder
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.patch_source import PatchUnavailable
from wsireview.tui.widgets.halfblock import fit_image
from wsireview.tui.widgets.textual_image_view import make_image_view

READ_AHEAD = 4
KEEP_IMAGES = 32
VERDICT_TEXT = {LESION: "lesion", NOT_LESION: "not lesion", UNSURE: "unsure", ARTIFACT: "artifact"}
VERDICT_STYLE = {LESION: "bold red", NOT_LESION: "bold green", UNSURE: "bold yellow", ARTIFACT: "bold magenta"}
REASON_TEXT = {
    "top-attention": "top attention",
    "uncertain": "uncertain (P near 0.5)",
    "diverse": "diverse (unlike the others)",
    "random": "random (baseline)",
}


class TriageScreen(Screen):
    BINDINGS = [
        Binding("y", f"verdict('{LESION}')", "Lesion"),
        Binding("n", f"verdict('{NOT_LESION}')", "Not lesion"),
        Binding("u", f"verdict('{UNSURE}')", "Unsure"),
        Binding("a", f"verdict('{ARTIFACT}')", "Artifact"),
        Binding("z", "undo", "Undo"),
        Binding("backspace", "undo", "Undo", show=False),
        Binding("space", "skip", "Skip"),
        Binding("c", "context", "Context", show=False),  # in ? help: the footer has no room at 80 columns
        Binding("s", "on_slide", "Where on the slide", show=False),
        Binding("escape", "back", "Slides"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, slide_id: int | None = None) -> None:
        super().__init__()
        self.slide_id = slide_id
        self.entries: list[QueueEntry] = []
        self.verdicts: dict[int, str] = {}
        self.skipped: set[int] = set()
        self.index: int | None = None
        self.session_reviews: list[int] = []
        self.shown_at = time.monotonic()
        self.context_on = False
        self.last_action = ""
        self.loaded_generation = -1
        self._images: OrderedDict[int, Image.Image] = OrderedDict()
        self._errors: dict[int, str] = {}
        self._fitted: dict[tuple, Image.Image] = {}
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Static(id="triage-title", classes="title")
        with Horizontal(id="triage-body"):
            yield make_image_view(self.app.graphics, id="patch")
            with Vertical(id="triage-side"):
                yield make_image_view(self.app.graphics, id="triage-thumb")
                yield Static(id="triage-info")
        # Compact, and without the palette key: the verdict keys, esc and ? fit 80 columns.
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # Kept as attributes: workers use them without querying the DOM from their thread.
        self.patch_view = self.query_one("#patch")
        self.thumb_view = self.query_one("#triage-thumb")
        self.load_queue()

    # -- the queue ------------------------------------------------------------------------------
    def load_queue(self) -> None:
        self.loaded_generation = self.app.generation
        self.entries = queue_entries(self.app.catalog, slide_id=self.slide_id)
        self.verdicts = {e.patch_id: e.verdict for e in self.entries if e.verdict}
        self.skipped.clear()
        self.last_action = ""
        with self._lock:
            self._images.clear()
            self._errors.clear()
        self.index = None
        if not self.entries:
            where = "this slide" if self.slide_id is not None else "any slide"
            self.patch_view.show_message(f"Nothing queued for {where}.\n\n{nothing_queued_step(self.app.catalog)}")
            self._update_text()
            return
        nxt = self._next_pending(0)
        if nxt is None:
            self._finished()
        else:
            self.show_entry(nxt)

    def _pending(self, i: int) -> bool:
        pid = self.entries[i].patch_id
        return pid not in self.verdicts and pid not in self.skipped

    def _next_pending(self, start: int) -> int | None:
        n = len(self.entries)
        for offset in range(n):
            i = (start + offset) % n
            if self._pending(i):
                return i
        return None

    def _upcoming(self, after: int, count: int) -> list[int]:
        out, n = [], len(self.entries)
        for offset in range(1, n):
            i = (after + offset) % n
            if self._pending(i):
                out.append(i)
                if len(out) == count:
                    break
        return out

    # -- showing a patch ------------------------------------------------------------------------
    @property
    def current(self) -> QueueEntry | None:
        return self.entries[self.index] if self.index is not None else None

    def show_entry(self, index: int, started: float | None = None) -> None:
        self.index, self.context_on = index, False
        entry = self.entries[index]
        view = self.patch_view
        with self._lock:
            image = self._images.get(entry.patch_id)
            error = self._errors.get(entry.patch_id)
        if image is not None:
            view.show(("patch", entry.patch_id), image)
        elif error is not None:
            view.show_message(f"This patch cannot be shown:\n{error}\n\nspace: skip it")
        else:
            view.show_message("reading patch ...")
            self.read_current(index)
        self._show_thumb(entry)
        self._update_text()
        self.shown_at = time.monotonic()
        self.call_after_refresh(self._frame_drawn, started)

    def _frame_drawn(self, started: float | None) -> None:
        """The new patch is on screen: log the latency, then prepare what comes next."""
        if started is not None:
            self.app.log_latency(time.perf_counter() - started)
        if self.index is not None:
            self.read_ahead(self.index)

    def _marked_thumb(self, entry: QueueEntry, box: tuple[int, int]) -> Image.Image:
        """The slide's thumbnail fitted to ``box`` with the patch's place marked (drawn at display
        resolution, so the marker stays visible on a small thumbnail)."""
        key = (entry.slide_id, box)
        fitted = self._fitted.get(key)
        if fitted is None:
            try:
                fitted = fit_image(self.app.source.thumbnail(entry.thumbnail_path), *box)
            except PatchUnavailable as error:
                return fit_image(placeholder(str(error)), *box)
            self._fitted[key] = fitted
        return mark_region(fitted, entry.x, entry.y, entry.size, (entry.slide_width or 0, entry.slide_height or 0))

    def _show_thumb(self, entry: QueueEntry) -> None:
        self.thumb_view.show(("mark", entry.patch_id), partial(self._marked_thumb, entry))

    # -- workers --------------------------------------------------------------------------------
    def _prepare(self, entry: QueueEntry) -> Image.Image | None:
        """Read one patch (and mark its thumbnail) and render both for the current boxes."""
        pid = entry.patch_id
        with self._lock:
            image, failed = self._images.get(pid), pid in self._errors
        if image is None and not failed:
            try:
                image = self.app.source.patch(entry)
            except PatchUnavailable as error:
                with self._lock:
                    self._errors[pid] = str(error)
                return None
            with self._lock:
                self._images[pid] = image
                while len(self._images) > KEEP_IMAGES:
                    self._images.popitem(last=False)
        if image is not None:
            self.patch_view.prerender(("patch", pid), image)
            self.thumb_view.prerender(("mark", pid), partial(self._marked_thumb, entry))
        return image

    @work(thread=True, exclusive=True, group="current")
    def read_current(self, index: int) -> None:
        self._prepare(self.entries[index])
        self.app.call_from_thread(self._current_ready, index)

    def _current_ready(self, index: int) -> None:
        if self.index == index and not self.context_on:
            self.show_entry(index)

    @work(thread=True, exclusive=True, group="read-ahead")
    def read_ahead(self, index: int) -> None:
        worker = get_current_worker()
        for i in self._upcoming(index, READ_AHEAD):
            if worker.is_cancelled:
                return
            self._prepare(self.entries[i])

    @work(thread=True, exclusive=True, group="context")
    def read_context(self, index: int) -> None:
        entry = self.entries[index]
        view = self.patch_view
        try:
            image = self.app.source.context(entry)
        except PatchUnavailable as error:
            self.app.call_from_thread(view.show_message, f"no context: {error}")
            return
        view.prerender(("context", entry.patch_id), image)
        if self.index == index and self.context_on:
            self.app.call_from_thread(view.show, ("context", entry.patch_id), image)

    # -- actions --------------------------------------------------------------------------------
    def action_verdict(self, verdict: str) -> None:
        started = time.perf_counter()
        entry = self.current
        if entry is None:
            return
        if self.patch_view.shown_key not in (("patch", entry.patch_id), ("context", entry.patch_id)):
            if entry.patch_id in self._errors:
                self.notify("This patch cannot be shown: skip it with space.", severity="warning")
            else:
                self.notify("The patch is still loading.", timeout=1.5)
            return
        seconds = time.monotonic() - self.shown_at
        review_id = record_verdict(
            self.app.catalog, entry.patch_id, verdict, self.app.reviewer, seconds, entry.model_version_id
        )
        self.session_reviews.append(review_id)
        self.verdicts[entry.patch_id] = verdict
        self.last_action = f"[{VERDICT_STYLE[verdict]}]{VERDICT_TEXT[verdict]}[/] in {seconds:.1f} s"
        self._advance(self.index + 1, started)

    def action_skip(self) -> None:
        started = time.perf_counter()
        entry = self.current
        if entry is None:
            return
        self.skipped.add(entry.patch_id)
        self.last_action = "skipped, not recorded"
        self._advance(self.index + 1, started)

    def _advance(self, start: int, started: float) -> None:
        nxt = self._next_pending(start % len(self.entries))
        if nxt is None:
            self._finished()
        else:
            self.show_entry(nxt, started)

    def action_undo(self) -> None:
        review = undo_last(self.app.catalog, self.app.reviewer)
        if review is None:
            self.notify("Nothing to undo.", timeout=2)
            return
        for i, entry in enumerate(self.entries):
            if entry.patch_id == review.patch_id:
                self.verdicts.pop(entry.patch_id, None)
                self.skipped.discard(entry.patch_id)
                self.last_action = f"undid {VERDICT_TEXT.get(review.verdict, review.verdict)}"
                self.show_entry(i, time.perf_counter())
                return
        self.notify(f"Undid {review.verdict} on patch {review.patch_id} (not in this queue).")

    def action_context(self) -> None:
        entry = self.current
        if entry is None or entry.patch_id in self._errors:
            return
        view = self.patch_view
        self.context_on = not self.context_on
        if self.context_on:
            view.show_message("reading context ...")
            self.read_context(self.index)
        else:
            with self._lock:
                image = self._images.get(entry.patch_id)
            if image is not None:
                view.show(("patch", entry.patch_id), image)
        self._update_text()

    def action_on_slide(self) -> None:
        """The slide view with this patch boxed: where it sits, and what else was found around it."""
        if self.current is not None:
            self.app.open_slide(self.current.slide_id, focus_patch_id=self.current.patch_id)

    def action_back(self) -> None:
        self.app.pop_screen()

    # -- the end of the queue -------------------------------------------------------------------
    def _finished(self) -> None:
        from wsireview.tui.screens.summary import SummaryScreen

        self.index = None
        self._update_text()
        self.patch_view.show_message("Queue done.")
        self.app.push_screen(
            SummaryScreen(list(self.session_reviews), len(self.skipped), len(self.entries)),
            self._after_summary,
        )

    def _after_summary(self, result: str | None) -> None:
        if result == "skipped":
            self.skipped.clear()
            nxt = self._next_pending(0)
            if nxt is not None:
                self.show_entry(nxt)
                return
            self._finished()
        elif result == "undo":
            self.action_undo()
            if self.index is None:  # the undone verdict was not in this queue
                self._finished()
        elif result == "retrained":
            self.session_reviews.clear()
            if self.loaded_generation != self.app.generation:
                self.load_queue()
        else:
            self.app.pop_screen()

    def on_catalog_changed(self, _: CatalogChanged) -> None:
        # A retrain started from the summary reloads through the summary's result instead.
        if self.app.screen is self and self.loaded_generation != self.app.generation:
            self.load_queue()

    # -- text -----------------------------------------------------------------------------------
    def _update_text(self) -> None:
        """Title and info have fixed heights (CSS), so a keypress repaints them without a layout
        pass over the whole screen (which cost about 25 ms a verdict)."""
        done = sum(1 for e in self.entries if e.patch_id in self.verdicts)
        scope = self.entries[0].slide_name if self.slide_id is not None and self.entries else "all slides"
        model = f"model v{self.entries[0].model_version_id}" if self.entries else "no model yet"
        self.query_one("#triage-title", Static).update(
            f"[b]Triage[/b] {scope}  ·  [b]{done}[/b]/{len(self.entries)} reviewed"
            + (f", {len(self.skipped)} skipped" if self.skipped else "")
            + f"  ·  {self.app.reviewer}  ·  {model}",
            layout=False,
        )
        self.query_one("#triage-info", Static).update(self._info(), layout=False)

    def _info(self) -> Table | str:
        entry = self.current
        if entry is None:
            return self.last_action
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True, min_width=5)  # the longest name: never squeezed
        grid.add_column(no_wrap=True, overflow="ellipsis")  # one line per row: the panel's height is fixed
        grid.add_row("slide", Text(entry.slide_name, style="bold"))
        pred = f"  P {entry.slide_probability:.2f}" if entry.slide_probability is not None else ""
        grid.add_row("label", f"{entry.slide_label or '-'}{pred}")
        grid.add_row("why", REASON_TEXT.get(entry.reason, entry.reason))
        rank = f"#{entry.attention_rank}" if entry.attention_rank is not None else "-"
        prob = f"{entry.probability:.2f}" if entry.probability is not None else "-"
        grid.add_row("attn", f"rank {rank}  P(lesion) {prob}")
        grid.add_row("at", f"{entry.x:,}, {entry.y:,} ({entry.size} px)")
        if self.context_on:
            grid.add_row("view", Text("8x wider context, c: back", style="yellow"))
        if self.last_action:
            grid.add_row("last", Text.from_markup(self.last_action))
        return grid
