"""The review app: slides screen first; triage, model versions, help and retraining from there.

The app holds what every screen needs (catalog, workspace, reviewer, how to draw images, the patch
reader); screens call domain functions and run slow work in workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from textual import events
from textual.app import App, SystemCommand
from textual.screen import Screen

from wsireview.text import literal
from wsireview.catalog import Catalog
from wsireview.catalog.claims import release_claims
from wsireview.catalog.queries import SlideOverview, latest_model_version_id, model_versions, slides_overview
from wsireview.tui.gc_policy import IdleCollector
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.patch_source import PatchSource
from wsireview.workspace import DEFAULT_WORKSPACE, Workspace

GRAPHICS = ("halfblock", "kitty", "sixel", "textual-image")


class ReviewApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "wsireview"

    def __init__(
        self,
        workspace: Workspace,
        catalog: Catalog,
        reviewer: str,
        graphics: str = "halfblock",
        start: str = "slides",
        slide_id: int | None = None,
        latency_log: Path | None = None,
        adjudicate: bool = False,
    ) -> None:
        super().__init__()
        if graphics not in GRAPHICS:
            raise ValueError(f"unknown graphics {graphics!r}; expected one of {', '.join(GRAPHICS)}")
        self.workspace = workspace
        self.catalog = catalog
        self.reviewer = reviewer
        self.graphics = graphics
        self.start = start
        self.start_slide_id = slide_id
        self.start_adjudicating = adjudicate  # `wsireview review --adjudicate`: the adjudication queue first
        self.source = PatchSource(workspace)
        self.generation = 0  # bumped when a retrain changes the model and queue
        self._latency = open(latency_log, "a", buffering=1) if latency_log else None
        self.collector = IdleCollector()

    def get_default_screen(self) -> Screen:
        from wsireview.tui.screens.slides import SlidesScreen

        return SlidesScreen()

    def on_mount(self) -> None:
        if self.start == "review":
            self.open_triage(self.start_slide_id, adjudicate=self.start_adjudicating)
        self.set_timer(1.0, self.collector.start)  # once start-up is drawn: it costs one full collection
        self.set_interval(0.5, self.collector.tick, name="idle-gc")

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self.collector.input_seen()
        await super().on_event(event)

    def on_unmount(self) -> None:
        release_claims(self.catalog, self.reviewer)  # on quit: the patches this reviewer held go back to the team
        self.collector.stop()
        self.source.close()
        if self._latency:
            self._latency.close()

    # -- navigation ---------------------------------------------------------------------------
    def open_triage(self, slide_id: int | None, adjudicate: bool = False) -> None:
        """The review queue (one slide's, or all), or with ``adjudicate`` the adjudication queue."""
        from wsireview.tui.screens.triage import TriageScreen

        self.push_screen(TriageScreen(slide_id, adjudicate=adjudicate))

    def open_team(self) -> None:
        from wsireview.tui.screens.team import TeamScreen

        self.push_screen(TeamScreen())

    def open_slide(self, slide_id: int, focus_patch_id: int | None = None) -> None:
        """The slide view: its picture with layers, its patches; ``focus_patch_id`` boxed and selected."""
        from wsireview.tui.screens.slide import SlideScreen

        self.push_screen(SlideScreen(slide_id, focus_patch_id=focus_patch_id))

    def open_history(self, slide_id: int | None = None, focus_patch_id: int | None = None) -> None:
        """The reviewer's verdicts, newest first (one slide's when given), to change or withdraw."""
        from wsireview.tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(slide_id, focus_patch_id=focus_patch_id))

    def edit_label(self, slide: SlideOverview) -> None:
        """Ask for a slide's label (the cohort's labels offered first) and record it with the reviewer's
        name and the time; every screen reloads."""
        from wsireview.learn.labels import known_labels, set_slide_label
        from wsireview.tui.screens.label import LabelScreen

        def answered(choice: tuple[str | None] | None) -> None:
            if choice is None:
                return
            (label,) = choice
            if label == slide.label:
                return
            set_slide_label(self.catalog, slide.id, label, self.reviewer)
            self.notify(f"{literal(slide.name)}: " + (f"labelled {literal(label)}" if label else "label removed")
                        + " (used by the next retrain)", timeout=3)
            for screen in self.screen_stack:
                screen.post_message(CatalogChanged())

        self.push_screen(LabelScreen(slide.name, slide.label, known_labels(self.catalog)), answered)

    def open_models(self) -> None:
        from wsireview.tui.screens.model import ModelScreen

        self.push_screen(ModelScreen())

    def action_help(self) -> None:
        from wsireview.tui.screens.help import HelpScreen

        if type(self.screen).__name__ != "HelpScreen":
            self.push_screen(HelpScreen(self.screen))

    # -- retraining ---------------------------------------------------------------------------
    def latest_encoder(self) -> str | None:
        latest = latest_model_version_id(self.catalog)
        if latest is None:
            return None
        return next((v.encoder for v in model_versions(self.catalog) if v.id == latest), None)

    def retrain_command(self) -> str:
        parts = ["wsireview"]
        if self.workspace.root != Path(DEFAULT_WORKSPACE).resolve():
            parts += ["--workspace", str(self.workspace.root)]
        parts.append("retrain")
        encoder = self.latest_encoder()
        if encoder:
            parts += ["--encoder", encoder]
        return " ".join(parts)

    def start_retrain(self, callback: Callable[[bool | None], None] | None = None) -> None:
        """Run one round in a worker behind a progress screen, which then shows the new version's
        metrics; every screen reloads, and without a ``callback`` the new queue opens."""
        from wsireview.tui.screens.retrain import RetrainScreen

        def finished(ok: bool | None) -> None:
            if ok:
                self.generation += 1
                for screen in self.screen_stack:
                    screen.post_message(CatalogChanged())
            if callback is not None:
                callback(ok)
            elif ok and type(self.screen).__name__ != "TriageScreen":  # a triage screen reloads its queue itself
                self.open_triage(None)  # the new queue, right after its metrics were shown

        self.push_screen(RetrainScreen(), finished)

    def confirm_retrain(self, callback: Callable[[bool | None], None] | None = None) -> None:
        """Ask first, then start_retrain: a round takes minutes and replaces the review queue."""
        from wsireview.tui.screens.retrain import ConfirmRetrainScreen

        def answered(start: bool | None) -> None:
            if start:
                self.start_retrain(callback)

        from wsireview.learn.labels import needs_labels

        if needs_labels(self.catalog):  # the round would have nothing to learn from: say what comes first
            self.notify("No slide has a label yet: press l on a slide (slides screen or slide view) to label it, "
                        "at least one lesion and one other, then retrain.", severity="warning", timeout=8)
            return

        queued = sum(s.queued for s in slides_overview(self.catalog))
        self.push_screen(ConfirmRetrainScreen(queued), answered)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's commands, except its "Keys" (a side panel): ours, below, opens the help screen `?` opens.
        Equal fuzzy scores keep this order, so "model" finds the model screen before the retrain."""
        yield from (command for command in super().get_system_commands(screen) if command.title != "Keys")
        yield SystemCommand("Model versions", "metrics and label counts per version", self.open_models)
        yield SystemCommand("Review queue", "triage the latest model's queue across all slides",
                            lambda: self.open_triage(None))
        yield SystemCommand("History", "your verdicts, newest first: change or withdraw any of them",
                            self.open_history)
        yield SystemCommand("Team agreement", "Cohen's and Fleiss' kappa between reviewers, the adjudication queue",
                            self.open_team)
        yield SystemCommand("Adjudication queue", "decide the patches whose reviewers disagree",
                            lambda: self.open_triage(None, adjudicate=True))
        yield SystemCommand("Retrain now", "train a new model version on every label and verdict, then "
                            "replace the queue (asks first)", self.confirm_retrain)
        yield SystemCommand("Keys", "every key of this screen", self.action_help)

    # -- measurement --------------------------------------------------------------------------
    def log_latency(self, seconds: float) -> None:
        """Keypress-to-new-patch time, written when $WSIREVIEW_LATENCY_LOG names a file."""
        if self._latency:
            self._latency.write(f"{seconds * 1000:.3f}\n")
