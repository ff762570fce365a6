"""The team: how far reviewers agree (the same report `wsireview agreement` prints) and the
adjudication queue's size, with the key that opens it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from wsireview.agreement_text import agreement_renderable
from wsireview.learn.agreement import agreement_report
from wsireview.tui.messages import CatalogChanged
from wsireview.tui.screens.base import ReviewScreen


class TeamScreen(ReviewScreen):
    HELP_TITLE = "Team"
    BINDINGS = [
        Binding("j", "adjudicate", "Adjudicate"),
        Binding("escape", "app.pop_screen", "Back"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("[b]Team[/b]  ·  agreement between reviewers", id="team-title", classes="title")
        with VerticalScroll(id="team-body"):
            yield Static(id="team-report")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.query_one("#team-report", Static).update(agreement_renderable(agreement_report(self.app.catalog)))

    def on_screen_resume(self) -> None:
        self.reload()  # back from adjudicating: the counts changed

    def on_catalog_changed(self, _: CatalogChanged) -> None:
        self.reload()

    def action_adjudicate(self) -> None:
        self.app.open_triage(None, adjudicate=True)
