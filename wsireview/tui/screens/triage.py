"""Triage: one patch at a time, one key per verdict, every verdict committed the moment it is given.

The patch is shown in its place on the slide, outlined, and can be looked at from the context view
(8 patch fields wide) down to the slide's full resolution, panned with the arrow keys. Each field
is read from the best pyramid level for its magnification. After every frame a thread worker
reads and renders what one key away would show (zoom in, zoom out, the four pans) and the next
patches, so a keypress only swaps prepared lines: the key handler never touches a slide file or
converts pixels when the step was prefetched.

Reviewers share the queue: the screen shows only the patches this reviewer holds a claim on
(``catalog.claims``, whose one rule also keeps a double read open for a second, different reader
and hides the first read from them), topped up in a worker as they are judged, renewed on a timer and released
when the screen closes. The title gives the reviewer's count and the team's, and a newer model
version is announced with the key that opens its queue (N). The adjudication queue
(``adjudicate``) takes no claims: its patches have all their reads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from functools import partial

from PIL import Image
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from wsireview.text import literal
from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, UNSURE
from wsireview.catalog.claims import CLAIMS, claim_patches, release_claims, renew_claims
from wsireview.catalog.progress import QueueProgress, queue_progress
from wsireview.catalog.queries import QueueEntry, adjudication_entries, latest_model_version_id, queue_entries
from wsireview.learn.labels import nothing_queued_step
from wsireview.learn.reviews import record_adjudication, record_verdict, undo_review
from wsireview.tui.imaging import MARK_COLOUR, VIEW_COLOUR, mark_rect, placeholder
from wsireview.tui.messages import CatalogChanged, ImageBoxChanged
from wsireview.tui.patch_source import PatchUnavailable
from wsireview.tui.screens.base import ReviewScreen
from wsireview.tui.text import Shortened
from wsireview.tui.viewport import (
    Scale,
    Viewport,
    home_view,
    neighbours,
    pan,
    view_scale,
    zoom,
    zoom_ladder,
)
from wsireview.tui.widgets.halfblock import fit_image
from wsireview.tui.widgets.image_view import image_view
from wsireview.tui.widgets.textual_image_view import make_image_view

READ_AHEAD = 4
REFILL_AT = 2  # claimed patches still to judge when the claims are topped up
REFRESH_SECONDS = 5.0  # at most this long between reading team progress and the newest model version
KEEP_IMAGES = 64
VERDICT_TEXT = {LESION: "lesion", NOT_LESION: "not lesion", UNSURE: "unsure", ARTIFACT: "artifact"}
VERDICT_STYLE = {LESION: "bold red", NOT_LESION: "bold green", UNSURE: "bold yellow", ARTIFACT: "bold magenta"}
REASON_TEXT = {
    "exploit": "highest P(lesion)",
    "top-attention": "top attention",
    "uncertain": "uncertain (P near 0.5)",
    "diverse": "diverse (unlike the others)",
    "random": "random (baseline)",
    "second-read": "second read (from the last queue)",
}
SCALE_BAR = "━"


class TriageScreen(ReviewScreen):
    BINDINGS = [
        Binding("y", f"verdict('{LESION}')", "Lesion"),
        Binding("n", f"verdict('{NOT_LESION}')", "Not lesion"),
        Binding("u", f"verdict('{UNSURE}')", "Unsure"),
        Binding("a", f"verdict('{ARTIFACT}')", "Artifact"),
        Binding("z", "undo", "Undo"),
        Binding("backspace", "undo", "Undo", show=False),
        Binding("space", "skip", "Skip"),
        # In ? help; the footer has no room for them at 80 columns (the caption under the image says +/-).
        Binding("plus,equals_sign", "zoom(1)", "Zoom in (to full resolution)", show=False),
        Binding("minus", "zoom(-1)", "Zoom out (to the context view)", show=False),
        Binding("left", "pan(-1, 0)", "Pan a quarter field", show=False),
        Binding("right", "pan(1, 0)", "Pan a quarter field", show=False),
        Binding("up", "pan(0, -1)", "Pan a quarter field", show=False),
        Binding("down", "pan(0, 1)", "Pan a quarter field", show=False),
        Binding("0", "home", "Back to the patch", show=False),
        Binding("c", "context", "Context (8 fields wide) / back", show=False),
        Binding("f", "fill", "Image on the whole terminal / back", show=False),
        Binding("s", "on_slide", "Where on the slide (slide view)", show=False),
        Binding("N", "newest_queue", "Switch to the newest model's queue (when one appeared)", show=False),
        Binding("escape", "back", "Slides"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, slide_id: int | None = None, adjudicate: bool = False) -> None:
        super().__init__()
        self.slide_id = slide_id
        # The adjudication queue instead of the review queue: every reader's verdict and name shown,
        # and a key records the adjudicator's decision.
        self.adjudicate = adjudicate
        self.entries: list[QueueEntry] = []
        self.verdicts: dict[int, str] = {}
        self.skipped: set[int] = set()
        self._verdicts_counted = 0  # verdicts counted on screen: a team read started before the latest is stale
        self.index: int | None = None
        self.model_version_id: int | None = None  # the version whose queue is shown
        self.claimed: set[int] = set()  # patches this reviewer holds a claim on, still to judge
        self.progress: QueueProgress | None = None
        self.newer_version: int | None = None  # a newer model version that appeared meanwhile
        self._refreshed_at = 0.0
        self._new_patch = False
        self.session_reviews: list[int] = []  # review ids recorded in this queue view, oldest first
        self.shown_at = time.monotonic()
        self.view: Viewport | None = None  # None: home, the patch fitted to the box
        self.last_action = ""
        self.loaded_generation = -1
        self._images: OrderedDict[tuple, Image.Image] = OrderedDict()  # (patch id, view, box) -> field
        self._errors: dict[int, str] = {}
        self._scales: dict[str, tuple[float | None, str]] = {}  # slide path -> (level-0 mpp, its source)
        self._fitted: dict[tuple, Image.Image] = {}
        self._lock = threading.Lock()
        # Set from a key until its frame is drawn: the prefetch worker waits meanwhile, so the UI
        # thread does not share the GIL (and a 2-core machine) with it while it makes the frame.
        self._frame_pending = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(id="triage-title", classes="title")
        with Horizontal(id="triage-body"):
            with Vertical(id="triage-main"):
                yield make_image_view(self.app.graphics, id="patch")
                yield Static(id="triage-scale")
            with Vertical(id="triage-side"):
                yield make_image_view(self.app.graphics, id="triage-thumb")
                yield Static(id="triage-info")
        # Compact, and without the palette key: the verdict keys, esc and ? fit 80 columns.
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # Kept as attributes: workers use them without querying the DOM from their thread.
        self.patch_view = image_view(self, "#patch")
        self.thumb_view = image_view(self, "#triage-thumb")
        self.load_queue()
        self.set_interval(CLAIMS.renew_every_seconds, self.renew, name="renew-claims")

    def on_unmount(self) -> None:
        release_claims(self.app.catalog, self.app.reviewer)  # left the queue: others may take them now

    def on_screen_resume(self) -> None:
        if self.model_version_id is not None and self.index is not None:
            self._claim()  # another queue view of this reviewer may have released them meanwhile

    # -- the queue ------------------------------------------------------------------------------
    def load_queue(self, model_version_id: int | None = None) -> None:
        """Show the queue of ``model_version_id`` (default: the newest version) as this reviewer sees it."""
        self.loaded_generation = self.app.generation
        version = model_version_id if model_version_id is not None else latest_model_version_id(self.app.catalog)
        if self.model_version_id is not None and version != self.model_version_id:
            release_claims(self.app.catalog, self.app.reviewer)  # the old queue's patches go back to the team
        self.model_version_id, self.newer_version = version, None
        self.entries = self._entries()
        self.verdicts = {e.patch_id: e.verdict or "" for e in self.entries if e.done}
        self.skipped.clear()
        self.session_reviews.clear()
        self.last_action = ""
        with self._lock:
            self._images.clear()
            self._errors.clear()
        self.index = None
        self.claimed.clear()
        if not self.entries and self.adjudicate:
            self.patch_view.show_message("Nothing to adjudicate: no patch has reads that disagree (or were all "
                                         "unsure) without a decision.")
            self._update_text()
            return
        if self.entries:
            self._claim()
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

    def _entries(self) -> list[QueueEntry]:
        if self.adjudicate:
            return adjudication_entries(self.app.catalog)
        if self.model_version_id is None:
            return []
        return queue_entries(self.app.catalog, slide_id=self.slide_id, model_version_id=self.model_version_id,
                             reviewer=self.app.reviewer)

    def _pending(self, i: int) -> bool:
        pid = self.entries[i].patch_id
        # The adjudication queue takes no claims: its patches have all their reads, so none is held.
        return (self.adjudicate or pid in self.claimed) and pid not in self.verdicts and pid not in self.skipped

    def _next_pending(self, start: int) -> int | None:
        for _ in range(2):  # nothing claimed left: top up once, then look again
            n = len(self.entries)
            for offset in range(n):
                i = (start + offset) % n
                if self._pending(i):
                    return i
            if not self._claim():
                return None
        return None

    # -- claims: the patches this reviewer works on -----------------------------------------------
    def _to_judge(self) -> int:
        return len(self.claimed - self.verdicts.keys() - self.skipped)

    def _claim(self, first: tuple[int, ...] = ()) -> bool:
        """Top up this reviewer's claims now (on the UI thread: only when nothing claimed is left,
        or to hold again a patch whose verdict was undone, ``first``); True when it brought patches to judge."""
        if self.model_version_id is None or self.adjudicate:
            return False
        claimed = claim_patches(self.app.catalog, self.app.reviewer, self.model_version_id,
                                slide_id=self.slide_id, exclude=set(self.skipped), first=first)
        self._claims_ready(claimed, *self._read_team())
        return self._to_judge() > 0

    def _read_team(self) -> tuple[QueueProgress | None, int | None]:
        assert self.model_version_id is not None
        catalog = self.app.catalog
        return queue_progress(catalog, self.model_version_id, self.slide_id), latest_model_version_id(catalog)

    @work(thread=True, exclusive=True, group="claims")
    def refill(self, version: int, skipped: frozenset[int], top_up: bool, team: bool, stamp: int) -> None:
        """In a worker after each new patch is shown: look for a newer model version; top up the
        claims when few are left (``top_up``) and read the team's progress (``team``). ``stamp``: the
        verdicts counted on screen when it started (a read overtaken by a newer verdict is dropped)."""
        catalog = self.app.catalog
        try:
            claimed = claim_patches(catalog, self.app.reviewer, version, slide_id=self.slide_id,
                                    exclude=skipped) if top_up else None
            progress = queue_progress(catalog, version, self.slide_id) if team else self.progress
            latest = latest_model_version_id(catalog)
        except SQLAlchemyError as error:  # a busy or unreachable catalog: say so, try again after the next patch
            self.app.call_from_thread(self._catalog_unreachable, error)
            return
        self.app.call_from_thread(self._claims_ready, claimed, progress, latest, version, stamp)

    def _catalog_unreachable(self, error: SQLAlchemyError) -> None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        self.notify(f"The catalog did not answer ({first[:120]}); your claims are kept, and the next patch tries "
                    "again.", severity="warning", timeout=6)

    def _claims_ready(self, claimed: list[int] | None, progress: QueueProgress | None, latest: int | None,
                      version: int | None = None, stamp: int | None = None) -> None:
        if version is not None and version != self.model_version_id:
            return  # read for a queue the screen has left
        if stamp is not None and stamp != self._verdicts_counted:
            progress = self.progress  # read before this screen's latest verdict: its count would go back
        if progress is not self.progress:
            self._refreshed_at = time.monotonic()
        if claimed is not None:
            skipped_since = set(claimed) & self.skipped  # skipped while this top-up was read: let them go again
            if skipped_since:
                release_claims(self.app.catalog, self.app.reviewer, sorted(skipped_since))
            self.claimed = set(claimed) - skipped_since
            if not self.claimed <= {e.patch_id for e in self.entries}:  # freed by others since the queue was read
                self._read_entries_again()
        self.progress = progress
        if latest is not None and self.model_version_id is not None and latest > self.model_version_id \
                and latest != self.newer_version:
            self.newer_version = latest
            self.notify(f"A newer model, v{latest}, has queued patches (this is v{self.model_version_id}'s queue): "
                        "press N (shift+n) to switch to its queue.", title="New model version", timeout=10)
        self._update_text()

    def _read_entries_again(self) -> None:
        """Read the queue again (others freed patches since it was read), keeping the patch on screen
        the current one wherever it now lies: a verdict goes to the patch the reviewer sees."""
        shown = self.current
        self.entries = self._entries()
        self.verdicts.update({e.patch_id: e.verdict or "" for e in self.entries if e.done})
        if shown is None or self.index is None:
            return
        at = next((i for i, e in enumerate(self.entries) if e.patch_id == shown.patch_id), None)
        if at is None:  # no longer in this reviewer's queue (a lapsed claim taken over): shown until they move on
            at = min(self.index, len(self.entries))
            self.entries.insert(at, shown)
        self.index = at

    def renew(self) -> None:
        """On a timer: keep this reviewer's claims while the screen is open, even while they think."""
        try:
            renew_claims(self.app.catalog, self.app.reviewer)
        except SQLAlchemyError as error:
            self._catalog_unreachable(error)

    def action_newest_queue(self) -> None:
        """Leave this queue for the newest model version's (its verdicts are recorded against it)."""
        latest = latest_model_version_id(self.app.catalog)
        if latest is None or latest == self.model_version_id:
            self.notify("This is the newest model's queue.", timeout=3)
            return
        self.session_reviews.clear()  # undo stays within one queue view
        self.load_queue(latest)
        self.notify(f"Now reviewing model v{latest}'s queue.", timeout=3)

    def _upcoming(self, after: int, count: int) -> list[int]:
        out, n = [], len(self.entries)
        for offset in range(1, n):
            i = (after + offset) % n
            if self._pending(i):
                out.append(i)
                if len(out) == count:
                    break
        return out

    # -- views ----------------------------------------------------------------------------------
    @property
    def current(self) -> QueueEntry | None:
        return self.entries[self.index] if self.index is not None else None

    def _box(self) -> tuple[int, int]:
        return self.patch_view.pixel_box

    def _home(self, entry: QueueEntry, box: tuple[int, int] | None = None) -> Viewport:
        return home_view(entry.x, entry.y, entry.size, box or self._box())

    def current_view(self) -> Viewport | None:
        """The field shown for the current patch (its home view unless zoomed or panned)."""
        entry = self.current
        if entry is None:
            return None
        return self.view or self._home(entry)

    def _slide_size(self, entry: QueueEntry) -> tuple[int, int]:
        return entry.slide_width or 0, entry.slide_height or 0

    def scale(self, entry: QueueEntry, view: Viewport) -> Scale | None:
        """How the view's pixels relate to the tissue, once the slide has been opened by a worker."""
        known = self._scales.get(entry.slide_path)
        return view_scale(view, *known) if known else None

    def show_entry(self, index: int, started: float | None = None) -> None:
        self.index, self.view = index, None
        self._new_patch = True  # once drawn: claims, team progress and the newest version are looked at
        self.shown_at = time.monotonic()
        self._show_view(started)

    def _show_view(self, started: float | None = None) -> None:
        """Show the current view: prepared lines when prefetched, else read it in a worker."""
        entry, view = self.current, self.current_view()
        if entry is None or view is None:
            return
        box = self._box()
        if min(box) <= 0:  # not laid out yet: shown once the image box has its size
            self.set_timer(0.02, partial(self._show_view, started))
            return
        if started is not None:  # a key's frame: the prefetch worker waits until it is drawn
            self._frame_pending.set()
        pid = entry.patch_id
        with self._lock:
            image = self._images.get((pid, view, box))
            error = self._errors.get(pid)
        if image is not None:
            self.patch_view.show(("view", pid, view, box), image)
        elif error is not None:
            self.patch_view.show_message(f"This patch cannot be shown:\n{error}\n\nspace: skip it")
        else:
            self.patch_view.show_message("reading ...")
            self.read_current(entry, view, box)
        self.thumb_view.show(("mark", pid, view, box), partial(self._marked_thumb, entry, view, box))
        self._update_text()
        self.call_after_refresh(self._frame_drawn, started)

    def _frame_drawn(self, started: float | None) -> None:
        """The new frame is on screen: log the latency, then prepare what one key away shows and,
        when due, top up the claims and read the team's progress."""
        self._frame_pending.clear()
        if started is not None:
            self.app.log_latency(time.perf_counter() - started)
        if self.index is not None:
            self.prefetch(self.index, self.current_view(), self._box())
            if self._new_patch and self.model_version_id is not None and not self.adjudicate:
                top_up = self._to_judge() <= REFILL_AT
                team = top_up or time.monotonic() - self._refreshed_at > REFRESH_SECONDS
                self.refill(self.model_version_id, frozenset(self.skipped), top_up, team, self._verdicts_counted)
        self._new_patch = False

    def _marked_thumb(self, entry: QueueEntry, view: Viewport, box: tuple[int, int], cells: tuple[int, int]) -> Image.Image:
        """The slide's thumbnail fitted to ``cells`` with the patch (cyan) and, when zoomed or
        panned, the field shown (magenta) marked: the minimap. Drawn at display resolution so the
        marks stay visible on a small thumbnail."""
        key = (entry.slide_id, cells)
        fitted = self._fitted.get(key)
        if fitted is None:
            try:
                fitted = fit_image(self.app.source.thumbnail(entry.thumbnail_path), *cells)
            except PatchUnavailable as error:
                return fit_image(placeholder(str(error)), *cells)
            self._fitted[key] = fitted
        out = fitted.copy()
        slide_size = self._slide_size(entry)
        if view != self._home(entry, box):
            x0, y0, w0, h0 = view.field(box)
            mark_rect(out, x0, y0, w0, h0, slide_size, VIEW_COLOUR)
        return mark_rect(out, entry.x, entry.y, entry.size, entry.size, slide_size, MARK_COLOUR)

    # -- workers --------------------------------------------------------------------------------
    def _yield_to_frame(self) -> None:
        """In the prefetch worker: wait (at most 0.25 s) while a key's frame is being made."""
        deadline = time.monotonic() + 0.25
        while self._frame_pending.is_set() and time.monotonic() < deadline:
            time.sleep(0.003)

    def _prepare(self, entry: QueueEntry, view: Viewport, box: tuple[int, int], background: bool = False) -> bool:
        """Read one field and render it (and the minimap marking it) for the current boxes;
        ``background`` (prefetching): give way to a frame in the making between the steps."""
        pid = entry.patch_id
        with self._lock:
            image, failed = self._images.get((pid, view, box)), pid in self._errors
        if failed:
            return False
        if image is None:
            try:
                if entry.slide_path not in self._scales:
                    self._scales[entry.slide_path] = self.app.source.scale(entry)
                image = self.app.source.view(entry, view, box)
            except PatchUnavailable as error:
                with self._lock:
                    self._errors[pid] = str(error)
                return False
            with self._lock:
                self._images[(pid, view, box)] = image
                while len(self._images) > KEEP_IMAGES:
                    self._images.popitem(last=False)
        if box == self._box():  # not prepared for a box the screen has left (fill view toggled)
            if background:
                self._yield_to_frame()
            self.patch_view.prerender(("view", pid, view, box), image)
            if background:
                self._yield_to_frame()
            self.thumb_view.prerender(("mark", pid, view, box), partial(self._marked_thumb, entry, view, box))
        return True

    @work(thread=True, exclusive=True, group="current")
    def read_current(self, entry: QueueEntry, view: Viewport, box: tuple[int, int]) -> None:
        self._prepare(entry, view, box)
        self.app.call_from_thread(self._current_ready, entry.patch_id, view, box)

    def _current_ready(self, patch_id: int, view: Viewport, box: tuple[int, int]) -> None:
        current = self.current
        if current is not None and current.patch_id == patch_id and self.current_view() == view \
                and self._box() == box:
            self._show_view()

    @work(thread=True, exclusive=True, group="prefetch")
    def prefetch(self, index: int, view: Viewport | None, box: tuple[int, int]) -> None:
        """What one key away shows, the likeliest first: the next patch (a verdict), zoom in,
        the other zoom and pan steps and the patch itself (`0`), then the patches after it."""
        worker = get_current_worker()
        entries = self.entries  # the queue may be read again meanwhile: this worker keeps the list it started on
        if index >= len(entries):
            return
        entry = entries[index]
        near: list[tuple[QueueEntry, Viewport]] = []
        if view is not None:
            home = self._home(entry, box)
            steps = neighbours(view, home.downsample, box, self._slide_size(entry))
            near = [(entry, v) for v in steps + ([home] if view != home and home not in steps else [])]
        try:
            upcoming = [(entries[i], self._home(entries[i], box)) for i in self._upcoming(index, READ_AHEAD)]
        except IndexError:  # read again since: the next frame prefetches from the new list
            upcoming = []
        for item_entry, item_view in upcoming[:1] + near + upcoming[1:]:
            self._yield_to_frame()
            if worker.is_cancelled:
                return
            self._prepare(item_entry, item_view, box, background=True)

    # -- verdicts -------------------------------------------------------------------------------
    def action_verdict(self, verdict: str) -> None:
        started = time.perf_counter()
        entry = self.current
        if entry is None:
            return
        if self.patch_view.shown_key is None:
            if entry.patch_id in self._errors:
                self.notify("This patch cannot be shown: skip it with space.", severity="warning")
            else:
                self.notify("The patch is still loading.", timeout=1.5)
            return
        seconds = time.monotonic() - self.shown_at
        record = record_adjudication if self.adjudicate else record_verdict
        review_id = record(self.app.catalog, entry.patch_id, verdict, self.app.reviewer, seconds, entry.model_version_id)
        self.session_reviews.append(review_id)
        self.verdicts[entry.patch_id] = verdict
        if self.progress is not None and not self.adjudicate:  # counted at once; the next refresh reads the team's
            self.progress = self.progress.counted(self.app.reviewer, 1, completes=entry.reads <= 1)
            self._verdicts_counted += 1
        self.last_action = f"[{VERDICT_STYLE[verdict]}]{VERDICT_TEXT[verdict]}[/] in {seconds:.1f} s"
        assert self.index is not None  # there is a current entry
        self._advance(self.index + 1, started)

    def action_skip(self) -> None:
        started = time.perf_counter()
        entry = self.current
        if entry is None:
            return
        self.skipped.add(entry.patch_id)
        release_claims(self.app.catalog, self.app.reviewer, [entry.patch_id])  # someone else may take it
        self.last_action = "skipped, not recorded"
        assert self.index is not None  # there is a current entry
        self._advance(self.index + 1, started)

    def _advance(self, start: int, started: float) -> None:
        if not self.entries:
            self._finished()
            return
        nxt = self._next_pending(start % len(self.entries))
        if nxt is None:
            self._finished()
        else:
            self.show_entry(nxt, started)

    def action_undo(self) -> None:
        """Undo the latest verdict given in this queue view (never one from elsewhere), and say which."""
        while self.session_reviews:
            review = undo_review(self.app.catalog, self.session_reviews.pop())
            if review is None:  # already withdrawn elsewhere (another screen): look further back
                continue
            self.verdicts.pop(review.patch_id, None)
            self.skipped.discard(review.patch_id)
            self._verdicts_counted += 1  # a team count read before the undo must not bring the verdict back
            self._claim(first=(review.patch_id,))  # undone: held again first; the counts are read again too
            # Looked up after the claim: a queue read again by it has moved the patch.
            index = next((i for i, e in enumerate(self.entries) if e.patch_id == review.patch_id), None)
            if index is None or not (self.adjudicate or review.patch_id in self.claimed):
                # Another reviewer took it meanwhile (a second read): undone, and theirs to judge now.
                self.last_action = f"undid {VERDICT_TEXT.get(review.verdict, review.verdict)}"
                self.notify(f"Undid {VERDICT_TEXT.get(review.verdict, review.verdict)}; another reviewer holds that "
                            "patch now.", timeout=4)
                self._update_text()
                return
            entry = self.entries[index]
            where = self._where_text(entry)
            self.last_action = f"undid {VERDICT_TEXT.get(review.verdict, review.verdict)}"
            self.notify(f"Undid {VERDICT_TEXT.get(review.verdict, review.verdict)} on {literal(entry.slide_name)}, "
                        f"patch at {where}.", timeout=4)
            self.show_entry(index, time.perf_counter())
            return
        self.notify("Nothing to undo: no verdict given in this queue view yet.", timeout=3)

    def _where_text(self, entry: QueueEntry) -> str:
        known = self._scales.get(entry.slide_path)
        scale = view_scale(Viewport(0, 0, 1), *known) if known else Scale(None, 1, "level0-pixels")
        return scale.position_text(entry.x, entry.y)

    # -- looking around -------------------------------------------------------------------------
    def _go(self, view: Viewport) -> None:
        started = time.perf_counter()
        entry = self.current
        if entry is None or entry.patch_id in self._errors:
            return
        home = self._home(entry)
        new = None if view == home else view
        if new == self.view:
            return
        self.view = new
        self._show_view(started)

    def action_zoom(self, steps: int) -> None:
        entry, view = self.current, self.current_view()
        if entry is not None and view is not None:
            self._go(zoom(view, self._home(entry).downsample, steps))

    def action_pan(self, dx: int, dy: int) -> None:
        entry, view = self.current, self.current_view()
        if entry is not None and view is not None:
            self._go(pan(view, dx, dy, self._box(), self._slide_size(entry)))

    def action_home(self) -> None:
        entry = self.current
        if entry is not None:
            self._go(self._home(entry))

    def action_context(self) -> None:
        """The context view (8 patch fields wide, around the patch), or back to the patch."""
        entry = self.current
        if entry is None:
            return
        home = self._home(entry)
        context = Viewport(home.cx, home.cy, zoom_ladder(home.downsample)[-1])
        self._go(home if self.view == context else context)

    def action_fill(self) -> None:
        """The image on the whole terminal (title, side panel and footer hidden), or back."""
        self.toggle_class("-fill")

    def on_image_box_changed(self, message: ImageBoxChanged) -> None:
        """The image box has a new size (fill view, a resized terminal): the same place at the
        same magnification, read for the new box."""
        if message.view is self.patch_view and self.index is not None:
            self._show_view()

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
        if self.model_version_id is not None and not self.adjudicate:
            self.progress = queue_progress(self.app.catalog, self.model_version_id, self.slide_id)
        self._update_text()
        self.patch_view.show_message("Queue done.")
        self.app.push_screen(
            SummaryScreen(list(self.session_reviews), len(self.skipped), len(self.entries), self.progress),
            self._after_summary,
        )

    def _after_summary(self, result: str | None) -> None:
        if result == "skipped":
            self.skipped.clear()
            nxt = self._next_pending(0) if self.entries else None
            if nxt is not None:
                self.show_entry(nxt)
                return
            self._finished()
        elif result == "undo":
            self.action_undo()
            if self.index is None:  # nothing of this queue view to undo
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
        """Title, caption and info have fixed heights (CSS), so a keypress repaints them without a
        layout pass over the whole screen (which cost about 25 ms a verdict)."""
        model = f"model v{self.model_version_id}" if self.model_version_id is not None else "no model yet"
        if self.newer_version is not None:
            model += f" (v{self.newer_version} out: N)"
        title = Table.grid(padding=0)
        title.add_column(no_wrap=True)
        title.add_column()  # the scope: shortened in its middle when the line is too narrow
        title.add_column(no_wrap=True)
        if self.adjudicate:
            done = sum(1 for e in self.entries if e.patch_id in self.verdicts)
            counts = f"[b]{done}[/b]/{len(self.entries)} decided"
        else:
            counts = self._progress_text()
        counts += f", {len(self.skipped)} skipped" if self.skipped else ""
        scope = self.entries[0].slide_name if self.slide_id is not None and self.entries else "all slides"
        name = "[b]Adjudication[/b] " if self.adjudicate else "[b]Triage[/b] "
        title.add_row(Text.from_markup(name), Shortened(scope),
                      Text.from_markup(f"  ·  {counts}  ·  {self.app.reviewer}  ·  {model}"))
        self.query_one("#triage-title", Static).update(title, layout=False)
        self.query_one("#triage-scale", Static).update(self._caption(), layout=False)
        self.query_one("#triage-info", Static).update(self._info(), layout=False)

    def _progress_text(self) -> str:
        """The reviewer's count and the team's of the whole queue, each labelled: ``you 6 · team 20/50``
        (short: the title keeps its scope at 80 columns)."""
        p = self.progress
        if p is None:
            return "[b]you 0[/b] · team 0/0"
        return f"[b]you {p.yours(self.app.reviewer)}[/b] · team {p.team}/{p.queued}"

    def _caption(self) -> Text:
        """Under the image: a scale bar, the magnification, and (in fill view) the field."""
        entry, view = self.current, self.current_view()
        if entry is None or view is None:
            return Text("")
        scale = self.scale(entry, view)
        if scale is None:
            return Text("reading ...", style="dim")
        cells_w = self.patch_view.box[0]
        px_per_cell = self._box()[0] / max(1, cells_w)
        bar_cells, bar_label = scale.scale_bar(px_per_cell, max(4, cells_w // 4))
        out = Text(SCALE_BAR * bar_cells, style="bold")
        out.append(f" {bar_label}  ")
        out.append(scale.magnification_text, style="bold cyan")
        extra = []
        if self.has_class("-fill"):
            _, _, w0, h0 = view.field(self._box())
            extra.append(f"field {scale.field_text(w0, h0)} at {scale.position_text(view.cx, view.cy)}")
        hints = ("+/- zoom, arrows pan, 0 patch", "+/- zoom") if self.view is None else ("0: back to the patch", "0: patch")
        for options in (extra, hints):
            part = next((p for p in options if out.cell_len + 5 + len(p) <= cells_w), None)
            if part:
                out.append(f"  ·  {part}", style="dim")
        out.truncate(max(1, cells_w), overflow="ellipsis")
        return out

    def _info(self) -> Table | str:
        entry, view = self.current, self.current_view()
        if entry is None or view is None:
            return self.last_action
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True, min_width=5)  # the longest name: never squeezed
        grid.add_column()  # rows are one line each but "why", which may wrap: the panel's height is fixed
        grid.add_row("slide", Shortened(entry.slide_name, style="bold"))
        pred = f"  P {entry.slide_probability:.2f}" if entry.slide_probability is not None else ""
        grid.add_row("label", one_line(f"{entry.slide_label or '-'}{pred}"))
        if entry.shown_reads:  # the adjudication queue: who said what
            grid.add_row("reads", Text(", ".join(f"{who} {VERDICT_TEXT.get(v, v)}" for who, v in entry.shown_reads)))
        else:
            grid.add_row("why", Text(REASON_TEXT.get(entry.reason, entry.reason)))
        rank = f"#{entry.attention_rank}" if entry.attention_rank is not None else "-"
        prob = f"{entry.probability:.2f}" if entry.probability is not None else "-"
        grid.add_row("attn", one_line(f"rank {rank}  P(lesion) {prob}"))
        scale = self.scale(entry, view)
        if scale is not None:
            grid.add_row("patch", one_line(f"{scale.length_text(entry.size)} at {scale.position_text(entry.x, entry.y)}"))
            _, _, w0, h0 = view.field(self._box())
            grid.add_row("view", one_line(scale.magnification_text))
            grid.add_row("field", one_line(scale.field_text(w0, h0)))
        if self.last_action:
            grid.add_row("last", one_line(Text.from_markup(self.last_action)))
        return grid


def one_line(text: str | Text) -> Text:
    """A panel row that never wraps (the panel's height is fixed): cut with an ellipsis."""
    out = Text(text) if isinstance(text, str) else text
    out.no_wrap, out.overflow = True, "ellipsis"
    return out
