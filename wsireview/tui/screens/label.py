"""Setting a slide's label in the app: the labels the cohort already uses are offered first (so a
new spelling of an existing class is not typed by accident), a new one can be typed, or cleared."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from wsireview.text import printable

CLEAR = "\0clear"  # the option that removes the label


class LabelScreen(ModalScreen[tuple[str | None] | None]):
    """Dismissed with ``(label,)`` (``(None,)`` clears it), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, slide_name: str, current: str | None, known: list[tuple[str, int]]) -> None:
        super().__init__()
        self.slide_name = slide_name
        self.current_label = current
        self.known = known

    def compose(self) -> ComposeResult:
        options = []
        for i, (label, n) in enumerate(self.known[:9], start=1):
            used = f"{n} slide{'s' if n != 1 else ''}" if n else "suggested"
            mark = "  (now)" if label == self.current_label else ""
            options.append(Option(Text.assemble(f"{i}  ", (label, "bold"), (f"  {used}{mark}", "dim")), id=label))
        if self.current_label:
            options.append(Option(Text("x  no label", style="dim"), id=CLEAR))
        with Vertical(id="label-box"):
            yield Label(Text.assemble("Label ", (printable(self.slide_name), "bold")), id="label-title")
            yield OptionList(*options, id="label-options")
            yield Input(placeholder="or type a new label, enter", id="label-new")
            yield Static("[b]1-9[/b]/[b]enter[/b] choose · [b]tab[/b] new label · [b]esc[/b] cancel",
                         id="label-keys")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        ids = [label for label, _ in self.known[:9]]
        options.highlighted = ids.index(self.current_label) if self.current_label in ids else 0

    def on_key(self, event) -> None:
        """Digits choose a listed label and x clears, unless a new label is being typed."""
        if isinstance(self.focused, Input):
            return
        if event.character and event.character.isdigit() and 1 <= int(event.character) <= min(9, len(self.known)):
            event.stop()
            self.dismiss((self.known[int(event.character) - 1][0],))
        elif event.character == "x" and self.current_label:
            event.stop()
            self.dismiss((None,))

    @on(OptionList.OptionSelected)
    def chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss((None,) if event.option.id == CLEAR else (event.option.id,))

    @on(Input.Submitted, "#label-new")
    def typed(self, event: Input.Submitted) -> None:
        label = event.value.strip()
        if label:
            self.dismiss((label,))

    def action_cancel(self) -> None:
        self.dismiss(None)
