"""Full garbage collections wait until the reviewer pauses.

A prepared patch is about 1,300 differently coloured half-block cells, i.e. thousands of small
Python objects (segments and styles), and the read-ahead keeps a dozen of them. CPython's automatic
full collection walks every live object, in whichever thread happens to allocate, holding the
GIL: measured here 0.1 s at start-up growing to 0.7 s, every 7 or 8 patches, and a keypress that
arrived meanwhile waited for it (p95 54-67 ms keypress to patch; 17 ms without).

So while the app runs: the objects that exist once it is up are frozen (never walked again),
automatic full collections are pushed back to a large threshold (young-generation collections
still run as usual), and a full collection runs when no key has been pressed for a moment. Textual
does the same kind of thing during smooth scrolling (``App.PAUSE_GC_ON_SCROLL``).
"""

from __future__ import annotations

import gc
import time

IDLE_SECONDS = 2.0
# Young-generation collections between two automatic full ones: the safety net for a reviewer
# who never pauses (about 7 million allocations, a thousand prepared patches).
FULL_COLLECTION_EVERY = 1000


class IdleCollector:
    """Defers full collections while active; ``tick`` (on a timer) collects once input is idle."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, clock=time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.last_input = clock()
        self.collections = 0
        self._saved: tuple[int, int, int] | None = None

    @property
    def started(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        """Collect once, freeze what survives (the app's long-lived objects), defer full collections."""
        if self._saved is not None:
            return
        gc.collect()
        gc.freeze()
        self._saved = gc.get_threshold()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)

    def stop(self) -> None:
        """Back to the interpreter's own policy."""
        if self._saved is None:
            return
        gc.set_threshold(*self._saved)
        gc.unfreeze()
        self._saved = None

    def input_seen(self) -> None:
        self.last_input = self.clock()

    def tick(self) -> bool:
        """Run a full collection if input has been idle long enough and anything new survived
        since the last one; True when it collected."""
        if self._saved is None or self.clock() - self.last_input < self.idle_seconds:
            return False
        if gc.get_count()[2] == 0:  # no young-generation collection since the last full one
            return False
        gc.collect()
        self.collections += 1
        return True
