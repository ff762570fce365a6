"""One slide: its thumbnail with the tissue, attention and verdict layers (and a legend), the
patches queued or reviewed on it, and the way into its review queue, its label and its history.

Opened with ``enter`` on the slides screen, or for one patch (``focus_patch_id``: drawn in a cyan
box and selected in the list) from wherever a patch is shown.
"""

from __future__ import annotations

from functools import partial

from PIL import Image
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Static

from wsireview.catalog import READY
from wsireview.catalog.queries import (
    SlideOverview,
    SlidePatch,
    latest_model_version_id,
    slide_attention,
    slide_patches,
    slides_overview,
)
from wsireview.learn.labels import needs_labels
from wsireview.text import printable
from wsireview.tui.imaging import attention_overlay, mask_overlay, patch_markers
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.patch_source import PatchUnavailable
from wsireview.tui.screens.base import ReviewScreen
from wsireview.tui.widgets.halfblock import fit_image
from wsireview.tui.widgets.image_view import image_view
from wsireview.tui.widgets.legend import VERDICT_WORDS, attention_legend, legend, tissue_legend, verdict_items
from wsireview.tui.widgets.textual_image_view import make_image_view

LAYERS = ("tissue", "attention", "patches")
LAYER_KEYS = {"tissue": "t", "attention": "a", "patches": "v"}
VERDICT_STYLE = {"lesion": "bold red", "not_lesion": "bold green", "unsure": "bold yellow", "artifact": "bold magenta"}
REASON_WORDS = {"top-attention": "top attn", "uncertain": "uncertain", "diverse": "diverse", "random": "random"}


def label_source(slide: SlideOverview) -> str:
    """``label by anna, 2026-12-01``: who set the label and when (the end of the title: cut first)."""
    if not slide.label or not (slide.label_set_by or slide.label_set_at):
        return ""
    when = f", {slide.label_set_at:%Y-%m-%d}" if slide.label_set_at else ""
    return f"  ·  label by {slide.label_set_by or 'unknown'}{when}"


def state_text(p: SlidePatch) -> Text:
    if p.verdict is not None:
        return Text(VERDICT_WORDS.get(p.verdict, p.verdict), style=VERDICT_STYLE.get(p.verdict, ""))
    if p.queue_rank is not None:
        return Text(f"queued #{p.queue_rank}")
    return Text("-", style="dim")


class SlideScreen(ReviewScreen):
    HELP_TITLE = "Slide"
    BINDINGS = [
        Binding("r", "review", "Review"),
        Binding("l", "label", "Label"),
        Binding("h", "history", "History"),
        Binding("t", "layer('tissue')", "Tissue layer", show=False),  # the layer line above the picture names them
        Binding("a", "layer('attention')", "Attention layer", show=False),
        Binding("v", "layer('patches')", "Verdict layer", show=False),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, slide_id: int, focus_patch_id: int | None = None) -> None:
        super().__init__()
        self.slide_id = slide_id
        self.focus_patch_id = focus_patch_id
        self.slide: SlideOverview | None = None
        self.patches: list[SlidePatch] = []
        self.shown_layers = {"tissue": False, "attention": True, "patches": True}
        self._bases: dict[tuple, Image.Image] = {}  # (tissue, attention, generation) -> full thumbnail
        self._fitted: dict[tuple, Image.Image] = {}  # (base key, box) -> fitted picture
        self._shown_once = False
        self._wanted: tuple | None = None  # the picture last asked for
        self.has_model = False

    def compose(self) -> ComposeResult:
        yield Static(id="slide-view-title", classes="title")
        with Horizontal(id="slide-view-body"):
            with Vertical(id="slide-view-main"):
                yield Static(id="slide-view-layers", classes="caption")
                yield make_image_view(self.app.graphics, id="slide-view-picture")
                yield Static(id="slide-view-legend")
            with Vertical(id="slide-view-side"):
                yield DataTable(id="slide-view-patches", cursor_type="row", zebra_stripes=True)
                yield Static(id="slide-view-detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.view = image_view(self, "#slide-view-picture")
        table = self.query_one(DataTable)
        table.add_column("patch", key="state", width=10)  # 35 cells with the padding: fits the 40-cell side
        table.add_column("attn", key="attn", width=4)
        table.add_column("P", key="prob", width=4)
        table.add_column("why", key="why", width=9)
        self.reload()

    def on_screen_resume(self) -> None:
        if self.is_mounted and self._shown_once:
            self.reload()  # back from triage, history or the label dialog: verdicts and label changed
        self._shown_once = True

    def on_catalog_changed(self, _: CatalogChanged) -> None:
        self._bases.clear()
        self._fitted.clear()
        self.reload()

    # -- data -----------------------------------------------------------------------------------
    def reload(self) -> None:
        self.slide = next((s for s in slides_overview(self.app.catalog) if s.id == self.slide_id), None)
        if self.slide is None:
            self.query_one("#slide-view-title", Static).update("[b]Slide[/b]  not in the catalog")
            return
        table = self.query_one(DataTable)
        keep = self.selected.patch_id if self.selected else self.focus_patch_id
        self.patches = slide_patches(self.app.catalog, self.slide_id, also=self.focus_patch_id,
                                     reviewer=self.app.reviewer)
        self.has_model = latest_model_version_id(self.app.catalog) is not None
        table.clear()
        for p in self.patches:
            table.add_row(
                state_text(p),
                f"#{p.attention_rank}" if p.attention_rank is not None else "-",
                f"{p.probability:.2f}" if p.probability is not None else "-",
                REASON_WORDS.get(p.reason or "", p.reason or ""),
                key=str(p.patch_id),
            )
        index = next((i for i, p in enumerate(self.patches) if p.patch_id == keep), 0)
        if self.patches:
            table.move_cursor(row=index)
        table.focus()
        self.show_title()
        self.show_layers()
        self.show_detail()
        self.draw()

    @property
    def selected(self) -> SlidePatch | None:
        if not self.patches:
            return None
        row = self.query_one(DataTable).cursor_row
        return self.patches[row] if 0 <= row < len(self.patches) else None

    # -- text -----------------------------------------------------------------------------------
    def show_title(self) -> None:
        s = self.slide
        assert s is not None  # called by reload() once the slide is found
        prob = f"  ·  P {s.probability:.2f}" if s.probability is not None else ""
        self.query_one("#slide-view-title", Static).update(Text.assemble(
            (printable(s.name), "bold"), f"  ·  {printable(s.label or 'no label')}{prob}  ·  {s.queued} queued · {s.reviewed} reviewed",
            (label_source(s), "dim"),
        ))

    def show_layers(self) -> None:
        """The layer switches above the picture (on: reversed) and the legend of those that are on."""
        self.query_one("#slide-view-layers", Static).update(
            "  ".join(f"[dim]{LAYER_KEYS[name]}[/] " + (f"[reverse]{name}[/]" if self.shown_layers[name] else name)
                      for name in LAYERS)
        )
        items = []
        if self.shown_layers["tissue"]:
            items.append(tissue_legend())
        if self.shown_layers["attention"]:
            items.append(attention_legend() if self.has_model else Text("attention: no model yet", style="dim"))
        if self.shown_layers["patches"]:
            items.extend(verdict_items())
        self.query_one("#slide-view-legend", Static).update(legend(items) if items else "")

    def show_detail(self) -> None:
        p = self.selected
        detail = self.query_one("#slide-view-detail", Static)
        if p is None:
            if needs_labels(self.app.catalog):
                detail.update("Nothing queued or reviewed here. No slide has a label yet: press l to label "
                              "this one (lesion or normal), label a slide of the other class, then retrain (ctrl+p).")
            else:
                detail.update("Nothing queued or reviewed on this slide yet: a retrain (ctrl+p) queues patches.")
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row("patch", f"{p.patch_id} at {p.x:,}, {p.y:,}")
        grid.add_row("state", state_text(p))
        keys = "enter: history" if p.verdict is not None else "enter: review"
        grid.add_row("", Text(keys, style="dim"))
        detail.update(grid)

    # -- the picture ----------------------------------------------------------------------------
    def draw(self) -> None:
        s = self.slide
        if s is None:
            return
        if s.status != READY:
            self.view.show_message(f"{s.status}: {s.reason or s.path}")
            return
        layers, focus = dict(self.shown_layers), self.selected.patch_id if self.selected else None
        self._wanted = (tuple(layers.values()), focus, len(self.patches), self.app.generation)
        self.draw_picture(layers, focus, self._wanted)

    @work(thread=True, exclusive=True, group="slide-picture")
    def draw_picture(self, layers: dict[str, bool], focus: int | None, wanted: tuple) -> None:
        base_key = (layers["tissue"], layers["attention"], self.app.generation)
        try:
            base = self._base(base_key)
        except PatchUnavailable as error:
            self.app.call_from_thread(self.view.show_message, str(error))
            return
        source = partial(self._picture, base_key, base, layers["patches"], focus)
        key = ("slide-view", self.slide_id, base_key, layers["patches"], focus, len(self.patches))
        self.view.prerender(key, source)
        self.app.call_from_thread(self._show, wanted, key, source)

    def _show(self, wanted: tuple, key: tuple, source) -> None:
        """Show a finished picture unless a newer one was asked for meanwhile (a thread worker that an
        exclusive successor cancelled still runs to its end, and may end last)."""
        if wanted == self._wanted:
            self.view.show(key, source)

    def _base(self, key: tuple) -> Image.Image:
        """The full thumbnail with the tissue and attention layers (cached: markers change more often)."""
        base = self._bases.get(key)
        if base is not None:
            return base
        tissue, attention, _ = key
        s, source = self.slide, self.app.source
        assert s is not None  # draw() starts the picture only for a slide found
        overlay_file = self.app.workspace.absolute(s.overlay_path)  # None when there is none
        if tissue and overlay_file is not None and overlay_file.exists():
            base = source.thumbnail(s.overlay_path)
        elif tissue:
            base = mask_overlay(source.thumbnail(s.thumbnail_path), source.thumbnail(s.mask_path))
        else:
            base = source.thumbnail(s.thumbnail_path)
        if attention:
            points = slide_attention(self.app.catalog, s.id)
            base = attention_overlay(base, points, (s.width or 0, s.height or 0))
        self._bases[key] = base
        return base

    def _picture(self, base_key: tuple, base: Image.Image, verdicts: bool, focus: int | None,
                 box: tuple[int, int]) -> Image.Image:
        """The picture fitted to ``box`` with the patch markers drawn at display resolution."""
        fitted = self._fitted.get((base_key, box))
        if fitted is None:
            fitted = self._fitted[(base_key, box)] = fit_image(base, *box)
        s = self.slide
        assert s is not None  # draw() starts the picture only for a slide found
        return patch_markers(fitted, self.patches, (s.width or 0, s.height or 0), verdicts, focus)

    # -- actions --------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted)
    def row_moved(self) -> None:
        self.show_detail()
        self.draw()

    @on(DataTable.RowSelected)
    def row_chosen(self) -> None:
        p = self.selected
        if p is None:
            return
        if p.verdict is not None:
            self.app.open_history(slide_id=self.slide_id, focus_patch_id=p.patch_id)
        else:
            self.action_review()

    def action_layer(self, name: str) -> None:
        self.shown_layers[name] = not self.shown_layers[name]
        self.show_layers()
        self.draw()

    def action_review(self) -> None:
        if self.slide is None or not self.slide.queued:
            self.notify("Nothing queued on this slide: a retrain (ctrl+p) queues patches.", severity="warning")
            return
        self.app.open_triage(self.slide_id)

    def action_label(self) -> None:
        if self.slide is not None:
            self.app.edit_label(self.slide)

    def action_history(self) -> None:
        self.app.open_history(slide_id=self.slide_id)
