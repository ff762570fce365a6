"""The start screen: the slide table, the selected slide's thumbnail (plain, tissue, attention) and metadata."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Input, Static

from wsireview.catalog import FAILED, MISSING, READY
from wsireview.catalog.queries import SlideOverview, slide_attention, slides_overview
from wsireview.learn.labels import needs_labels
from wsireview.text import literal
from wsireview.tui.imaging import attention_overlay, mask_overlay
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.patch_source import PatchUnavailable
from wsireview.tui.screens.base import ReviewScreen
from wsireview.tui.widgets.image_view import ImageView, image_view
from wsireview.tui.widgets.legend import attention_legend, tissue_legend
from wsireview.tui.widgets.slide_info import SlideInfo
from wsireview.tui.widgets.slide_table import SlideTable
from wsireview.tui.widgets.textual_image_view import make_image_view

OVERLAYS = ("plain", "tissue", "attention")

EMPTY_HELP = """[b]No slides in this catalog yet.[/b]

Add slide files or folders (SVS, NDPI, MRXS, tiled TIFF, DICOM, plain images):

    [b]wsireview add SLIDES_DIR --labels labels.csv[/b]

or make a synthetic cohort to try the whole loop:

    [b]wsireview demo --out cohort[/b]
    [b]wsireview add cohort --labels cohort/labels.csv[/b]
    [b]wsireview retrain[/b]

then run [b]wsireview[/b] again.  Workspace: {root}"""


class SlidesScreen(ReviewScreen):
    AUTO_FOCUS = ""  # the table takes focus in reload(); the hidden filter box must not
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("t", "toggle_overlay", "Overlay"),
        Binding("r", "review_queue", "Review"),  # short: "? Keys" and "q Quit" stay on an 80-column footer
        Binding("l", "label", "Label"),
        Binding("m", "models", "Models", show=False),  # in ? and the palette: the footer keeps ? and q at 80 columns
        Binding("h", "history", "History", show=False),
        Binding("g", "team", "Team agreement and adjudication", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.overlay = "plain"
        self.slides: dict[int, SlideOverview] = {}
        self._shown_once = False  # the first resume is the mount itself: nothing to reload
        self._showing: tuple[int | None, str] | None = None  # (slide id, overlay) last shown

    def compose(self) -> ComposeResult:
        yield Static(id="title", classes="title")
        yield Input(placeholder="filter by name or label (enter: keep, esc: clear)", id="filter")
        yield Static(id="first-step")
        with Horizontal(id="slides-body"):
            yield SlideTable(id="slide-table")
            yield Static(id="empty")
            with Vertical(id="slide-side"):
                yield Static(id="overlay-label", classes="caption")
                yield make_image_view(self.app.graphics, id="slide-thumb")
                yield Static(id="slide-legend")
                yield SlideInfo(id="slide-info")
        yield Footer(compact=True)  # compact: every key fits 80 columns

    def on_mount(self) -> None:
        self.reload()

    # -- data -----------------------------------------------------------------------------------
    def reload(self) -> None:
        overview = slides_overview(self.app.catalog)
        self.slides = {s.id: s for s in overview}
        table = self.query_one(SlideTable)
        empty = not overview
        table.display = not empty
        self.query_one("#slide-side").display = not empty
        self.query_one("#empty", Static).display = empty
        if empty:
            self.query_one("#empty", Static).update(EMPTY_HELP.format(root=self.app.workspace.root))
        table.set_slides(overview)
        self.show_title()
        first = self.query_one("#first-step", Static)
        first.display = not empty and needs_labels(self.app.catalog)
        if first.display:
            first.update("[b]First step:[/b] no slide has a label yet. Select a slide and press [b]l[/b] to label it "
                         "(lesion or normal; at least one of each), then retrain from [b]ctrl+p[/b].")
        if not empty:
            table.focus()
            self.show_selected()
            self.show_matches()

    def show_title(self) -> None:
        """Slide counts (of those the filter keeps), patches queued and the reviewer, in 80 columns:
        statuses with no slide are left out."""
        table = self.query_one(SlideTable)
        total = len(self.slides)
        counts = {st: sum(1 for s in self.slides.values() if s.status == st) for st in (READY, FAILED, MISSING)}
        statuses = ", ".join(f"{n} {st}" for st, n in counts.items() if n)
        slides = f"{table.matching} of {total} slides" if table.filter_text else f"{total} slides"
        queued = sum(s.queued for s in self.slides.values())
        self.query_one("#title", Static).update(
            f"[b]wsireview[/b]  {slides}" + (f" ({statuses})" if statuses else "")
            + f"  ·  {queued} queued  ·  reviewer [b]{self.app.reviewer}[/b]"
        )

    def show_matches(self) -> None:
        """When the filter keeps no slide, say so where the rows would be and clear the side panel."""
        if not self.slides:  # the empty catalog's help stays
            return
        table = self.query_one(SlideTable)
        none = table.matching == 0
        table.display = not none
        self.query_one("#empty", Static).display = none
        if none:
            self.query_one("#empty", Static).update(f"no slides match {table.filter_text!r} (esc clears)")
        self.selection_moved()

    def on_catalog_changed(self, _: CatalogChanged) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        if self.is_mounted and self._shown_once:
            self.reload()  # back from triage or the model screen: counts changed
        self._shown_once = True

    # -- selection and thumbnail ----------------------------------------------------------------
    @property
    def selected(self) -> SlideOverview | None:
        sid = self.query_one(SlideTable).selected_id
        return self.slides.get(sid) if sid is not None else None

    @on(DataTable.RowHighlighted)
    def selection_moved(self) -> None:
        """Show the slide the cursor moved to. The table also posts this after every fill, filter
        and sort (and reload() already showed the selection): loading it again would be wasted."""
        slide = self.selected
        if (slide.id if slide else None, self.overlay) != self._showing:
            self.show_selected()

    def show_selected(self) -> None:
        """Show the selected slide's metadata and load its picture (in a worker)."""
        slide = self.selected
        self._showing = (slide.id if slide else None, self.overlay)
        found = True
        if slide is not None and slide.status == READY:
            found = (self.app.workspace.absolute(slide.path) or Path(slide.path)).exists()
        self.query_one(SlideInfo).show(slide, found)
        self.query_one("#overlay-label", Static).update(  # 24 cells: fits the 80-column side panel
            "[dim]t[/] " + " ".join(f"[reverse]{o}[/]" if o == self.overlay else o for o in OVERLAYS)
        )
        legend = {"attention": attention_legend, "tissue": tissue_legend}.get(self.overlay)
        self.query_one("#slide-legend", Static).update(legend() if legend and slide is not None else "")
        view = image_view(self, "#slide-thumb")
        if slide is None:
            view.show_message("")
            return
        if slide.status == FAILED:
            view.show_message(f"failed: {slide.reason or 'unknown reason'}")
            return
        if slide.status == MISSING:
            view.show_message(f"file missing: {slide.path}")
            return
        self.load_thumbnail(view, slide, self.overlay)

    @work(thread=True, exclusive=True, group="thumbnail")
    def load_thumbnail(self, view: ImageView, slide: SlideOverview, overlay: str) -> None:
        # The attention picture belongs to a model: a retrain in the app must not reuse the old one.
        key = ("slide-thumb", slide.id, overlay, self.app.generation if overlay == "attention" else 0)
        try:
            image = self._picture(slide, overlay)
        except PatchUnavailable as error:
            self.app.call_from_thread(view.show_message, str(error))
            return
        view.prerender(key, image)
        self.app.call_from_thread(view.show, key, image)

    def _picture(self, slide: SlideOverview, overlay: str) -> Image.Image:
        source = self.app.source
        thumb = source.thumbnail(slide.thumbnail_path)
        if overlay == "tissue":
            overlay_file = self.app.workspace.absolute(slide.overlay_path)  # None when there is none
            if overlay_file is not None and overlay_file.exists():
                return source.thumbnail(slide.overlay_path)
            return mask_overlay(thumb, source.thumbnail(slide.mask_path))
        if overlay == "attention":
            points = slide_attention(self.app.catalog, slide.id)
            if not points:
                raise PatchUnavailable("no attention yet: run `wsireview retrain` to train a model")
            return attention_overlay(thumb, points, (slide.width or 0, slide.height or 0))
        return thumb

    # -- actions --------------------------------------------------------------------------------
    @on(DataTable.RowSelected)
    def open_slide(self) -> None:
        """The slide view: its picture with tissue, attention and verdicts, and its patches."""
        slide = self.selected
        if slide is None:
            return
        if slide.status != READY:
            self.notify(f"{literal(slide.name)} is {slide.status}: {literal(slide.reason or slide.path)}", severity="warning")
            return
        self.app.open_slide(slide.id)

    @on(DataTable.HeaderSelected)
    def header_sort(self, event: DataTable.HeaderSelected) -> None:
        self.query_one(SlideTable).sort_by(str(event.column_key.value))

    def action_sort(self) -> None:
        """Sort by the next column on screen (the arrow of a column hidden at this width could not be seen)."""
        table = self.query_one(SlideTable)
        keys = [c.key for c in table.shown]
        nxt = keys[(keys.index(table.sort_key) + 1) % len(keys)] if table.sort_key in keys else keys[0]
        table.sort_by(nxt, reverse=nxt not in ("name", "status", "label"))
        self.notify(f"sorted by {next(c.label for c in table.shown if c.key == nxt)}", timeout=1.5)

    def action_toggle_overlay(self) -> None:
        self.overlay = OVERLAYS[(OVERLAYS.index(self.overlay) + 1) % len(OVERLAYS)]
        self.show_selected()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    def apply_filter(self, text: str) -> None:
        """Filter the table, then say how many slides match in the title and where the rows were."""
        self.query_one(SlideTable).set_filter(text)
        self.show_title()
        self.show_matches()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(SlideTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.apply_filter("")
        self.query_one(SlideTable).focus()

    def action_review_queue(self) -> None:
        self.app.open_triage(None)

    def action_models(self) -> None:
        self.app.open_models()

    def action_label(self) -> None:
        slide = self.selected
        if slide is not None:
            self.app.edit_label(slide)

    def action_history(self) -> None:
        self.app.open_history()

    def action_team(self) -> None:
        self.app.open_team()
