"""End to end: the real `wsireview` command in a tmux terminal, keys sent, screen read, catalog checked.

The session is killed at the end instead of quitting: verdicts shown as made must already be saved.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from tui_support import make_queue

from wsireview.catalog import Review, open_catalog

pytestmark = pytest.mark.slow
# This checkout's code, in 24-bit colour, whatever environment the tmux server was started with.
PROJECT = Path(__file__).resolve().parent.parent
# -u COLUMNS/LINES: sizes inherited from the test runner would override the pane's real size.
WSIREVIEW = f"env -u COLUMNS -u LINES PYTHONPATH={PROJECT} COLORTERM=truecolor {sys.executable} -m wsireview"


def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", *args], check=check, capture_output=True, text=True).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session, check=False)


def wait_for(session: str, *texts: str, timeout: float = 60) -> str:
    """The pane once every text shows on it (a frame may be captured half drawn)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = screen(session)
        if all(text in shown for text in texts):
            return shown
        time.sleep(0.1)
    size = tmux("display", "-p", "-t", session, "#{window_width}x#{window_height}", check=False).strip()
    raise AssertionError(f"{texts!r} never appeared on the {size} screen:\n{screen(session)}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_review_in_tmux_saves_every_verdict(demo_workspace, demo_catalog):
    version = make_queue(demo_catalog, per_slide=2, seed=3)
    demo_catalog.close()
    session = f"wsireview-e2e-{os.getpid()}"
    # stderr is not redirected: Textual draws there.
    command = f"{WSIREVIEW} --workspace {demo_workspace.root} review --reviewer e2e-reviewer"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", command)
    try:
        shown = wait_for(session, "you 0 · team 0/12", "Lesion", "why")  # footer keys, why it was queued
        assert "top attention" in shown
        for key, progress in (("y", "you 1 · team 1/12"), ("n", "you 2 · team 2/12"),
                              ("Space", "you 2 · team 2/12, 1 skipped"), ("a", "you 3 · team 3/12"),
                              ("z", "you 2 · team 2/12"), ("u", "you 3 · team 3/12")):
            tmux("send-keys", "-t", session, key)
            wait_for(session, progress)
        wait_for(session, "last  unsure")
        tmux("send-keys", "-t", session, "?")
        wait_for(session, "Keys:", "Not lesion", "backspace")
    finally:
        tmux("kill-session", "-t", session, check=False)  # no clean quit: nothing may depend on one

    catalog = open_catalog(demo_workspace.db_url)
    with catalog.session() as session_:
        rows = session_.scalars(select(Review).order_by(Review.id)).all()
        got = [(r.verdict, r.undone_at is not None, r.reviewer, r.model_version_id) for r in rows]
    catalog.close()
    assert got == [
        ("lesion", False, "e2e-reviewer", version),
        ("not_lesion", False, "e2e-reviewer", version),
        ("artifact", True, "e2e-reviewer", version),
        ("unsure", False, "e2e-reviewer", version),
    ]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@pytest.mark.parametrize("graphics", ["kitty", "textual-image"])
def test_textual_image_renderers_start_and_record(demo_workspace, demo_catalog, graphics):
    """textual-image probes the terminal on import; done inside the running app it hung on a blank screen."""
    make_queue(demo_catalog, per_slide=1, seed=5)
    demo_catalog.close()
    session = f"wsireview-kitty-{os.getpid()}"
    command = f"env WSIREVIEW_GRAPHICS={graphics} {WSIREVIEW} --workspace {demo_workspace.root} review --reviewer k"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", command)
    try:
        wait_for(session, "you 0 · team 0/6", "Lesion", timeout=30)
        tmux("send-keys", "-t", session, "n")
        wait_for(session, "you 1 · team 1/6")
    finally:
        tmux("kill-session", "-t", session, check=False)
    catalog = open_catalog(demo_workspace.db_url)
    with catalog.session() as s:
        assert [r.verdict for r in s.scalars(select(Review))] == ["not_lesion"]
    catalog.close()


SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def half_block_pixels(ansi: str, rows: int, cols: int) -> np.ndarray:
    """The picture a `capture-pane -e` dump shows in its top ``rows`` x ``cols`` cells, each '▀'
    cell being two pixels: the foreground colour above, the background colour below."""
    out = np.zeros((2 * rows, cols, 3), dtype=np.int16) - 1
    for y, line in enumerate(ansi.split("\n")[:rows]):
        fg = bg = (-1, -1, -1)
        x, pos = 0, 0
        for match in [*SGR.finditer(line), None]:
            text = line[pos:match.start()] if match else line[pos:]
            for ch in text:
                if ch == "▀" and x < cols:
                    out[2 * y, x], out[2 * y + 1, x] = fg, bg
                x += 1
            if match is None:
                break
            pos = match.end()
            codes = match.group(1).replace(":", ";").split(";")
            i = 0
            while i < len(codes):
                if codes[i] in ("38", "48") and i + 4 < len(codes) + 1 and codes[i + 1] == "2":
                    colour = tuple(int(v) for v in codes[i + 2:i + 5])
                    fg, bg = (colour, bg) if codes[i] == "38" else (fg, colour)
                    i += 5
                    continue
                if codes[i] in ("", "0"):
                    fg = bg = (-1, -1, -1)
                i += 1
    return out


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_zoom_to_level0_on_cmu1_shows_its_level0_pixels(real_slides, workspace, catalog):
    """On the real cmu-1 slide, + up to full resolution and f (the image on the whole terminal):
    every half-block on the screen has the colours of the level-0 pixel at that spot."""
    from wsireview.catalog.queries import queue_entries
    from wsireview.ingest import add_paths
    from wsireview.slides.reader import SlideFile
    from wsireview.tui.viewport import Viewport

    add_paths(catalog, workspace, [real_slides / "cmu-1-small-region.svs"])
    make_queue(catalog, per_slide=1, seed=2)
    entry = queue_entries(catalog)[0]
    catalog.close()
    cols, rows = 100, 30
    session = f"wsireview-zoom-{os.getpid()}"
    command = f"{WSIREVIEW} --workspace {workspace.root} review --reviewer zoom"
    tmux("new-session", "-d", "-s", session, "-x", str(cols), "-y", str(rows), command)
    try:
        wait_for(session, "you 0 · team 0/1", "µm/px")
        for _ in range(6):
            if "full res" in screen(session):
                break
            tmux("send-keys", "-t", session, "+")
            time.sleep(0.5)
        tmux("send-keys", "-t", session, "f")
        shown = wait_for(session, "20x, 0.50 µm/px full res", "field 50 x 29 µm")  # 100 x 58 px at 0.499 µm/px
        assert "Triage" not in shown  # fill: the title, side panel and footer gave their room
        time.sleep(1.0)  # the frame for the new box
        ansi = tmux("capture-pane", "-e", "-p", "-t", session)
    finally:
        tmux("kill-session", "-t", session, check=False)

    pixels = half_block_pixels(ansi, rows - 1, cols)  # all but the caption line
    view = Viewport(entry.x + entry.size / 2, entry.y + entry.size / 2, 1.0)
    x0, y0, w0, h0 = view.field((cols, 2 * (rows - 1)))
    with SlideFile(real_slides / "cmu-1-small-region.svs") as slide:
        assert slide.level_count == 1
        truth = np.asarray(slide._osr.read_region((x0, y0), 0, (w0, h0)).convert("RGB"), dtype=np.int16)
    assert (pixels >= 0).all(), "some cells were not drawn as half-blocks"
    assert pixels.shape == truth.shape
    assert np.abs(pixels - truth).max() <= 1  # tmux keeps 24-bit colour as it was sent
    assert truth.std() > 10  # tissue, not glass: the comparison can fail
