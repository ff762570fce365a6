"""How long-running domain work tells a screen how far it has got: one callback type for all of it.

Domain functions (embedding, a retrain round, an export) never draw; they call
``on_progress(what, fraction)`` and the command line, the terminal app or the web viewer draws it.
"""

from __future__ import annotations

from typing import Callable

ProgressCallback = Callable[[str, float], None]
"""``(what is running, fraction done from 0 to 1)``: a fraction never goes down, and ends at 1."""
