"""After the queue: what this session recorded, time per verdict, and the way to retrain."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from wsireview.catalog import VERDICTS
from wsireview.catalog.progress import QueueProgress
from wsireview.catalog.queries import review_summary
from wsireview.tui.screens.base import ReviewScreen
from wsireview.tui.screens.triage import VERDICT_STYLE, VERDICT_TEXT


class SummaryScreen(ReviewScreen[str]):
    BINDINGS = [
        Binding("r", "retrain", "Retrain"),
        Binding("s", "dismiss('skipped')", "Review skipped"),
        Binding("z", "dismiss('undo')", "Undo last"),
        Binding("escape", "dismiss('back')", "Slides"),
        Binding("question_mark", "app.help", "Keys"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, review_ids: list[int], skipped: int, queued: int, progress: QueueProgress | None = None) -> None:
        super().__init__()
        self.review_ids = review_ids
        self.skipped = skipped
        self.queued = queued
        self.progress = progress  # the whole queue, the reviewer's part and the team's

    def compose(self) -> ComposeResult:
        yield Static("[b]Queue done[/b]", id="summary-title", classes="title")
        yield Static(id="summary")
        yield Footer(compact=True)  # compact: every key fits 80 columns

    def on_mount(self) -> None:
        self.query_one("#summary", Static).update(self.render_summary())

    def render_summary(self) -> Group:
        s = review_summary(self.app.catalog, self.review_ids)
        table = Table(title="This session", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("verdict")
        table.add_column("count", justify="right")
        for verdict in VERDICTS:
            table.add_row(Text(VERDICT_TEXT[verdict], style=VERDICT_STYLE[verdict]), str(s.by_verdict.get(verdict, 0)))
        table.add_row(Text("total", style="bold"), Text(str(s.total), style="bold"))
        per = f"{s.seconds_per_verdict:.1f} s per verdict" if s.seconds_per_verdict is not None else "no verdicts"
        lines: list[RenderableType] = [
            table,
            Text(""),
            Text(f"{per}  ·  {s.undone} undone  ·  {self.skipped} skipped  ·  {self.queued} in the queue"),
            *self._team_lines(),
            Text(""),
            Text.from_markup("Retrain with these verdicts (they become patch labels) and queue the next patches:"),
            Text.from_markup(f"    [b]{self.app.retrain_command()}[/b]"),
            Text(""),
            Text.from_markup("[b]r[/b] retrain now  ·  [b]s[/b] go through skipped patches  ·  "
                             "[b]z[/b] undo the last verdict  ·  [b]esc[/b] back to the slides"),
        ]
        return Group(*lines)

    def _team_lines(self) -> list[RenderableType]:
        """Whole queue: the reviewer's count, the team's, and who else holds patches still to judge."""
        p = self.progress
        if p is None:
            return []
        others = {name: n for name, n in p.claimed.items() if name != self.app.reviewer}
        line = f"The whole queue: {p.text(self.app.reviewer)}"
        if others:
            line += "; still being judged by " + ", ".join(f"{name} ({n})" for name, n in sorted(others.items()))
        return [Text(line)]

    def action_retrain(self) -> None:
        def done(ok: bool | None) -> None:
            if ok:
                self.dismiss("retrained")

        self.app.confirm_retrain(done)
