"""Every key of the screen underneath, read from its live bindings (so help cannot go stale)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

KEY_NAMES = {
    "question_mark": "?", "slash": "/", "space": "space", "escape": "esc", "backspace": "backspace",
    "enter": "enter", "ctrl+p": "ctrl+p", "plus": "+", "equals_sign": "=", "minus": "-",
    "left": "←", "right": "→", "up": "↑", "down": "↓",
}
# Textual adds the palette binding to every app as "palette": say what our palette holds instead.
PALETTE_ACTIONS = {"command_palette", "app.command_palette"}
PALETTE_DESCRIPTION = "command palette (retrain, screens)"


def _own_actions(node: DOMNode) -> set[str]:
    """The actions bound in this app's own classes (a screen, the app) along the node's class
    hierarchy: Textual's generic keys (tab focus, copy text, table cursor moves) are not ours."""
    actions: set[str] = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith("wsireview.") and "BINDINGS" in vars(cls):
            actions.update(b.action for b in vars(cls)["BINDINGS"] if isinstance(b, Binding))
    return actions


def key_table(screen: Screen) -> Table:
    """The app's own keys active on the screen, one row per action (plus the command palette)."""
    rows: dict[str, list[str]] = {}
    own: dict[int, set[str]] = {}
    for key, active in screen.active_bindings.items():
        binding: Binding = active.binding
        if not binding.description or binding.system:
            continue
        mine = own.setdefault(id(active.node), _own_actions(active.node))
        if binding.action not in mine and binding.action not in PALETTE_ACTIONS:
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
