"""Model versions: their metrics and label counts, how each changed from its parent, what each
queue found (yield per reason) and what drove the slide predictions."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Static

from wsireview.catalog.queries import ModelVersionSummary, model_versions
from wsireview.catalog.score_files import SCORES_OK
from wsireview.learn.reviews import verdict_counts
from wsireview.learn.status import queue_yield, slide_predictions
from wsireview.numbers import change_text, metric_text, rounded_change
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.screens.base import ReviewScreen

# Shown as table columns when present; every other numeric metric is in the detail pane.
HEADLINE = ("slide_auc", "slide_accuracy", "instance_auc")
# Metric keys as words; any other key is shown with its underscores as spaces.
METRIC_NAMES = {
    "slide_auc": "slide AUC", "instance_auc": "instance AUC", "instance_auc_fit": "instance AUC (train)",
    "cv_folds": "CV folds", "slide_auc_bag": "slide AUC (bag)",
    "lookalike_radius": "look-alike radius", "lookalikes": "look-alike patches",
}


def _metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key.replace("_", " "))


def _count_name(key: str) -> str:
    """A flattened label count as words: slides.positive -> positive slides, slide_labels.lesion ->
    slides labelled lesion, patches.not_lesion -> not lesion patches."""
    group, _, name = key.rpartition(".")
    name = name.replace("_", " ")
    if group == "slides":
        return f"{name} slides"
    if group == "slide_labels":
        return f"slides labelled {name}"
    if group == "patches":
        return f"{name} patches"
    return key.replace("_", " ").replace(".", " ")


def _delta(change: float | None, whole: bool = False) -> Text:
    """The change from the parent: +0.000 (or +0 for a count) when there is none, as `wsireview
    retrain` prints it; blank only when there is nothing to compare with."""
    if change is None:
        return Text("")
    change = rounded_change(change, whole)
    return Text(change_text(change, whole), style="green" if change > 0 else "red" if change < 0 else "dim")


def _flatten(counts: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in (counts or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


class ModelScreen(ReviewScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="model-title", classes="title")
        with Vertical(id="model-body"):
            yield DataTable(id="model-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="model-detail")
        yield Footer(compact=True)  # compact: every key fits 80 columns

    def on_mount(self) -> None:
        self.reload()

    def on_catalog_changed(self, _: CatalogChanged) -> None:
        self.reload()

    def reload(self) -> None:
        self.versions = {v.id: v for v in model_versions(self.app.catalog)}
        verdicts = verdict_counts(self.app.catalog)
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(verdicts["by_verdict"].items()))
        self.query_one("#model-title", Static).update(
            f"[b]Model versions[/b]  {len(self.versions)}  ·  verdicts: {counts or 'none yet'}"
        )
        table = self.query_one(DataTable)
        table.clear(columns=True)
        present = [k for k in HEADLINE if any(k in v.metrics for v in self.versions.values())][:3]
        # What changes from version to version first: at 80 columns parent, encoder and date are cut.
        table.add_columns("version", *map(_metric_name, present), "queued", "verdicts", "parent", "encoder", "created")
        for v in self.versions.values():
            parent = self.versions.get(v.parent_id) if v.parent_id else None
            changes = v.metric_changes(parent)
            cells = []
            for key in present:
                cell = Text(metric_text(v.metrics.get(key)))
                if key in changes:
                    cell.append(" ").append_text(_delta(changes[key]))
                cells.append(cell)
            created = v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else "-"
            table.add_row(f"v{v.id}", *cells, str(v.queued), str(v.reviews),
                          f"v{v.parent_id}" if v.parent_id else "-", v.encoder, created, key=str(v.id))
        if not self.versions:
            self.query_one("#model-detail", Static).update(
                "No model yet. Train the first one with [b]wsireview retrain[/b] (slide labels are enough to start)."
            )
        else:
            table.focus()
            self.show_detail(next(iter(self.versions)))

    @on(DataTable.RowHighlighted)
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.show_detail(int(event.row_key.value))

    def show_detail(self, version_id: int) -> None:
        v = self.versions.get(version_id)
        if v is None:
            return
        parent = self.versions.get(v.parent_id) if v.parent_id else None
        extra = [line for line in (self.yield_line(queue_yield(self.app.catalog, v.id)),
                                   self.drivers_line(slide_predictions(self.app.catalog, v.id))) if line]
        self.query_one("#model-detail", Static).update(Group(*extra, self.detail(v, parent)))

    @staticmethod
    def yield_line(yields: dict[str, dict[str, int]]) -> Text | None:
        """What this version's queue found, per reason: lesion of reviewed (of queued)."""
        if not any(y["reviewed"] for y in yields.values()):
            return None
        parts = [f"{reason} {y['lesion']}/{y['reviewed']}" + (f" of {y['queued']}" if y["queued"] != y["reviewed"] else "")
                 for reason, y in sorted(yields.items(), key=lambda item: -item[1]["lesion"])]
        return Text("queue yield (lesion/reviewed): " + " · ".join(parts))

    @staticmethod
    def drivers_line(predictions: list[dict]) -> Text | None:
        """What drove the slide predictions (bag score, instance evidence, a confirmed lesion), and
        the unlabelled slides with a confirmed lesion: candidate positives."""
        drivers = [p["driver"] for p in predictions if p["driver"]]
        if not drivers:
            return None
        counts = " · ".join(f"{drivers.count(d)} {d}" for d in ("bag", "instances", "verdict") if d in drivers)
        candidates = [p["name"] for p in predictions if p["candidate_positive"]]
        text = f"slide predictions driven by: {counts}"
        if candidates:
            text += f" · candidate positives: {', '.join(candidates[:5])}" + (" ..." if len(candidates) > 5 else "")
        return Text(text)

    @staticmethod
    def detail(v: ModelVersionSummary, parent: ModelVersionSummary | None) -> Group:
        vs = f" vs v{parent.id}" if parent else " (first version)"
        metrics = Table(title=f"v{v.id} metrics{vs}", title_justify="left", show_edge=False, pad_edge=False, expand=False)
        metrics.add_column("metric")
        metrics.add_column("value", justify="right")
        metrics.add_column("change", justify="right")
        changes = v.metric_changes(parent)
        for key, value in v.metrics.items():
            if isinstance(value, dict):
                continue
            metrics.add_row(_metric_name(key), metric_text(value), _delta(changes.get(key), whole=isinstance(value, int)))
        labels = Table(title="labels", title_justify="left", show_edge=False, pad_edge=False)
        labels.add_column("count")
        labels.add_column("n", justify="right")
        labels.add_column("change", justify="right")
        mine, theirs = _flatten(v.label_counts), _flatten(parent.label_counts) if parent else {}
        for key, value in mine.items():  # a count the parent does not have was 0 then
            change = value - theirs.get(key, 0) if parent else None
            labels.add_row(_count_name(key), metric_text(value), _delta(change, whole=True))
        grid = Table.grid(padding=(0, 4))
        grid.add_row(metrics, labels)
        scores = f" · {v.scores}" if v.scores != SCORES_OK else ""
        return Group(grid, Text(f"{v.positive_label!r} is positive · {v.queued} queued · {v.reviews} verdicts on its queue"
                                f"{scores}", style="dim"))
