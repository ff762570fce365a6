"""Retraining from inside the app: the round runs in a thread worker, the screen shows progress.

The round (``wsireview.learn.round.retrain``) is the same function the `retrain` command calls,
with the latest model version's round spec (encoder, positive label, budget, strategy, seed,
training parameters): the app's retrain continues the rounds run from the command line.
"""

from __future__ import annotations

import time

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar, Static

from wsireview.text import literal
from wsireview.tui.screens.base import ReviewModalScreen


class ConfirmRetrainScreen(ReviewModalScreen[bool]):
    """Asks before a retrain: it takes minutes, adds a model version and replaces the review queue,
    so a stray key or a palette search must not start one."""

    BINDINGS = [
        Binding("enter,y", "dismiss(True)", "Start"),
        Binding("escape,n", "dismiss(False)", "Cancel"),
    ]

    def __init__(self, queued: int) -> None:
        super().__init__()
        self.queued = queued

    def compose(self) -> ComposeResult:
        replaced = f"the {self.queued} patches still queued" if self.queued else "the review queue"
        with Vertical(id="confirm-box"):
            yield Label("[b]Retrain now?[/b]")
            yield Static(f"Trains a new model version on every label and verdict so far and replaces {replaced} "
                         "with new patches. It takes a while.", id="confirm-text")
            yield Label("[b]enter[/b]/[b]y[/b] start  ·  [b]esc[/b]/[b]n[/b] cancel", id="confirm-keys")


class RetrainScreen(ReviewModalScreen[bool]):
    """A round's progress, then its metrics. A catalog whose slides differ in patch grid is refused
    (as `retrain` refuses it); `m` then trains on them as they are (`retrain --mixed-grids`)."""

    BINDINGS = [
        Binding("escape,enter", "close", "Close"),
        Binding("m", "train_mixed", "Train on mixed grids"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.running = True
        self.ok = False
        self.mixed_grids = False  # train on slides of different patch grids together
        self.refused_mixed = False  # the round refused mixed grids: `m` is offered

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "train_mixed":
            return self.refused_mixed
        return True

    def compose(self) -> ComposeResult:
        with Vertical(id="retrain-box"):
            yield Label("[b]Retraining[/b] with every label and verdict so far", id="retrain-title")
            yield ProgressBar(total=100, show_eta=False, id="retrain-progress")
            yield Label("starting ...", id="retrain-phase")  # the current phase only
            yield Static("", id="retrain-log")  # the round's settings, or why it failed

    def on_mount(self) -> None:
        self.lines: list[str] = []
        self.set_interval(0.5, self._tick)
        self.run_round()

    def _tick(self) -> None:
        if self.running:
            self.query_one("#retrain-title", Label).update(
                f"[b]Retraining[/b] with every label and verdict so far  ·  {time.monotonic() - self.started:.0f} s"
            )

    def _line(self, text: str) -> None:
        self.lines = (self.lines + [text])[-8:]
        self.query_one("#retrain-log", Static).update("\n".join(self.lines))

    @work(thread=True, exclusive=True, group="retrain")
    def run_round(self) -> None:
        self.app.call_from_thread(self._progress, "loading torch and the model code", 0.0)
        from wsireview.learn.round import retrain
        from wsireview.learn.spec import RoundSpec, latest_spec

        spec = latest_spec(self.app.catalog) or RoundSpec()
        self.app.call_from_thread(
            self._line, escape(f"{spec.encoder} · positive {spec.positive!r} · {spec.strategy} · "
                               f"budget {spec.budget} · seed {spec.seed}"))
        from wsireview.status import MixedGrids

        try:
            result = retrain(self.app.catalog, self.app.workspace, spec=spec, mixed_grids=self.mixed_grids,
                             on_progress=lambda what, fraction: self.app.call_from_thread(self._progress, what, fraction))
        except MixedGrids as error:
            self.app.call_from_thread(self._refused_mixed, error.warning)
            return
        except Exception as error:  # shown to the person; the catalog is unchanged by a failed round
            self.app.call_from_thread(self._failed, f"{type(error).__name__}: {error}")
            return
        self.app.call_from_thread(self._done, result)

    def _progress(self, what: str, fraction: float) -> None:
        self.query_one(ProgressBar).update(progress=round(100 * fraction))
        self.query_one("#retrain-phase", Label).update(what)

    def _failed(self, text: str) -> None:
        self.running = False
        bar = self.query_one(ProgressBar)
        bar.update(progress=0)
        self._line(f"[red]Retrain failed:[/red] {literal(text)}")
        self._line("esc: close")

    def _refused_mixed(self, text: str) -> None:
        self.running, self.refused_mixed = False, True
        self.query_one(ProgressBar).update(progress=0)
        self.query_one("#retrain-phase", Label).update("refused: slides differ in patch grid")
        self._line(f"[yellow]Not trained:[/yellow] {literal(text)}")
        self._line("[b]m[/b]: train on them as they are (retrain --mixed-grids)  ·  [b]esc[/b]: close")
        self.refresh_bindings()

    def action_train_mixed(self) -> None:
        """Run the refused round again on the mixed grids, as `retrain --mixed-grids` does."""
        if not self.refused_mixed:
            return
        self.refused_mixed, self.mixed_grids, self.running = False, True, True
        self.started = time.monotonic()
        self.lines = []
        self._line("[yellow]training on slides of different patch grids[/yellow] (retrain --mixed-grids)")
        self.refresh_bindings()
        self.run_round()

    def _done(self, result) -> None:
        """Show what the new version learned (the model screen's table: metrics and label counts with
        their change from the parent) until enter or esc opens its queue."""
        from wsireview.catalog.queries import model_versions
        from wsireview.tui.screens.model import ModelScreen

        self.running, self.ok = False, True
        self.query_one(ProgressBar).update(progress=100)
        versions = {v.id: v for v in model_versions(self.app.catalog)}
        version = versions.get(result.model_version_id)
        self.query_one("#retrain-title", Label).update(
            f"[b]Model v{result.model_version_id} trained[/b]  ·  {result.queued} patches queued"
            f"  ·  {time.monotonic() - self.started:.0f} s")
        if version is not None:
            self.query_one("#retrain-log", Static).update(
                ModelScreen.detail(version, versions.get(version.parent_id) if version.parent_id else None))
        nxt = "review the new queue" if result.queued else "close (nothing was queued)"
        self.query_one("#retrain-phase", Label).update(f"[b]enter[/b]/[b]esc[/b]: {nxt}")

    def action_close(self) -> None:
        if self.running:
            self.app.notify("Retraining continues; it cannot be interrupted safely from here.", timeout=3)
            return
        self.dismiss(self.ok)
