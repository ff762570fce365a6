"""Every key of the screen underneath, read from its live bindings (so help cannot go stale)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

KEY_NAMES = {
    "question_mark": "?", "slash": "/", "space": "space", "escape": "esc", "backspace": "backspace",
    "enter": "enter", "ctrl+p": "ctrl+p",
}
# Textual adds the palette binding to every app as "palette": say what our palette holds instead.
PALETTE_ACTIONS = {"command_palette", "app.command_palette"}
PALETTE_DESCRIPTION = "command palette (retrain, screens)"


def key_table(screen: Screen) -> Table:
    """The screen's active bindings (its own, its focused widget's and the app's), one row per action."""
    rows: dict[str, list[str]] = {}
    for key, active in screen.active_bindings.items():
        binding: Binding = active.binding
        if not binding.description or binding.system:
            continue
        description = PALETTE_DESCRIPTION if binding.action in PALETTE_ACTIONS else binding.description
        names = rows.setdefault(description, [])
        name = KEY_NAMES.get(key, key)
        if name not in names:
            names.append(name)
    table = Table(show_edge=False, pad_edge=False, box=None)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("does")
    for description, keys in rows.items():
        table.add_row(" / ".join(keys), description)
    return table


class HelpScreen(ModalScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("question_mark", "app.pop_screen", "Close"),
        Binding("q", "app.pop_screen", "Close"),
    ]

    def __init__(self, under: Screen) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        title = getattr(self.under, "HELP_TITLE", None) or type(self.under).__name__.replace("Screen", "")
        with VerticalScroll(id="help-box"):
            yield Static(f"[b]Keys: {title}[/b]   (esc closes)", id="help-title")
            yield Static(key_table(self.under), id="help-keys")
