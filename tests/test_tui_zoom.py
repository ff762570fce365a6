"""Zoom, pan, fill and undo in the triage screen, driven with Pilot on the demo cohort; the pixels on
screen are compared with the slide's own pixels at the place and magnification the screen states."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import select
from tui_support import make_queue, settle

from wsireview.catalog import Review
from wsireview.catalog import Slide as SlideRow
from wsireview.learn.reviews import record_verdict
from wsireview.slides.reader import SlideFile
from wsireview.tui.app import ReviewApp
from wsireview.tui.viewport import CONTEXT_FACTOR, PAN_SHARE

pytestmark = pytest.mark.asyncio
REVIEWER = "dr-zoom"


def text_of(widget) -> str:
    console = Console(width=300, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


def shown_pixels(view) -> np.ndarray:
    """The half-block view's picture, read back from its lines: upper pixel = foreground colour,
    lower = background, for every cell drawn with '▀' (the image is centred, padding skipped)."""
    rows = []
    for y in range(view.box[1]):
        upper, lower = [], []
        for segment in view.render_line(y):
            if not segment.text.startswith("▀"):
                continue
            fg = segment.style.color.get_truecolor()
            bg = segment.style.bgcolor.get_truecolor()
            upper += [tuple(fg)] * len(segment.text)
            lower += [tuple(bg)] * len(segment.text)
        if upper:
            rows += [upper, lower]
    return np.asarray(rows, dtype=np.int16)


@pytest.fixture
def queued(demo_workspace, demo_catalog):
    make_queue(demo_catalog, per_slide=2, seed=1)
    return demo_workspace, demo_catalog


def app_for(ws, cat) -> ReviewApp:
    return ReviewApp(ws, cat, reviewer=REVIEWER, start="review")


async def zoom_to_full_resolution(pilot, screen) -> None:
    for _ in range(10):
        if screen.current_view().downsample == 1:
            return
        await pilot.press("plus")
        await settle(pilot)
    raise AssertionError("+ never reached full resolution")


async def test_zoom_to_level0_shows_the_level0_pixels_and_says_20x(queued):
    ws, cat = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        entry = screen.current
        home = screen.current_view()
        assert home.downsample > 1  # the whole patch fitted: fewer pixels than the slide has
        caption = text_of(screen.query_one("#triage-scale"))
        assert "µm" in caption and "x, " in caption and "µm/px" in caption

        await zoom_to_full_resolution(pilot, screen)
        caption = text_of(screen.query_one("#triage-scale"))
        assert "20x, 0.50 µm/px full res" in caption  # the demo slides are scanned at 0.5 µm/px
        info = text_of(screen.query_one("#triage-info"))
        assert "field" in info and "µm" in info
        view = screen.query_one("#patch")
        x0, y0, w0, h0 = screen.current_view().field(view.pixel_box)
        with SlideFile(ws.absolute(entry.slide_path)) as slide:
            truth = np.asarray(slide.read_field(x0, y0, w0, h0, w0, h0), dtype=np.int16)
        shown = shown_pixels(view)
        assert shown.shape == truth.shape == (view.pixel_box[1], view.pixel_box[0], 3)
        assert np.abs(shown - truth).max() == 0  # level 0, one slide pixel per half-block pixel

        # one more + changes nothing: level 0 is the end of the ladder
        await pilot.press("plus")
        await settle(pilot)
        assert screen.current_view().downsample == 1

        # the arrows pan a quarter of the field, and what is shown follows
        before = screen.current_view()
        await pilot.press("right")
        await settle(pilot)
        after = screen.current_view()
        assert after.cx - before.cx == pytest.approx(view.pixel_box[0] * PAN_SHARE, abs=1)
        assert after.cy == before.cy
        x0, y0, w0, h0 = after.field(view.pixel_box)
        with SlideFile(ws.absolute(entry.slide_path)) as slide:
            truth = np.asarray(slide.read_field(x0, y0, w0, h0, w0, h0), dtype=np.int16)
        assert np.abs(shown_pixels(view) - truth).max() == 0

        # 0 returns to the patch; - steps out to the context view (8 fields) and stops there
        await pilot.press("0")
        await settle(pilot)
        assert screen.current_view() == home and screen.view is None
        for _ in range(8):
            await pilot.press("minus")
            await settle(pilot)
        assert screen.current_view().downsample == pytest.approx(home.downsample * CONTEXT_FACTOR)
        assert screen.current is entry  # looking around never changes the patch under review
    with cat.session() as s:
        assert s.scalars(select(Review)).all() == []


async def test_patch_outline_drawn_at_home_and_in_context(queued):
    ws, cat = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        screen = app.screen
        view = screen.query_one("#patch")
        for key in (None, "c"):
            if key:
                await pilot.press(key)
                await settle(pilot)
            pixels = shown_pixels(view)
            outline = np.all(pixels == (255, 230, 0), axis=-1)
            rows, cols = np.nonzero(outline)
            side = screen.current.size / screen.current_view().downsample
            assert cols.max() - cols.min() == pytest.approx(side + 1, abs=2)  # a square the patch's size
            assert rows.max() - rows.min() == pytest.approx(side + 1, abs=2)
        await pilot.press("c")
        await settle(pilot)
        assert screen.view is None


async def test_prefetched_steps_are_shown_from_prepared_lines(queued):
    """After a frame, the views one key away are read and rendered: a zoom or pan key never has to
    start a read of what it shows."""
    ws, cat = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        started_reads = []
        original = screen.read_current
        screen.read_current = lambda *a: started_reads.append(a) or original(*a)
        for key in ("plus", "right", "down", "minus", "left", "plus", "0"):
            before = screen.current_view()
            await pilot.press(key)
            await settle(pilot)
            assert screen.current_view() != before
            assert screen.query_one("#patch").shown_key == ("view", screen.current.patch_id, screen.current_view(),
                                                                screen.query_one("#patch").pixel_box)
        assert started_reads == []


async def test_fill_view_gives_the_image_the_terminal(queued):
    ws, cat = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = app.screen.query_one("#patch")
        narrow = view.box
        await pilot.press("plus")
        await settle(pilot)
        ds = app.screen.current_view().downsample
        await pilot.press("f")
        await settle(pilot)
        assert view.box == (80, 23)  # all but the caption line (scale bar, magnification)
        assert shown_pixels(view).shape == (46, 80, 3)  # read again for the new box, not stretched
        assert not app.screen.query_one("#triage-side").display
        assert app.screen.current_view().downsample == ds  # same magnification, a wider field
        assert "field" in text_of(app.screen.query_one("#triage-scale"))
        await pilot.press("f")
        await settle(pilot)
        assert view.box == narrow


async def test_undo_takes_back_only_this_queue_views_verdicts(queued):
    ws, cat = queued
    app = app_for(ws, cat)
    elsewhere = None
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        # a verdict given elsewhere (another window, the history screen) by the same reviewer
        other = screen.entries[-1]
        elsewhere = record_verdict(cat, other.patch_id, "lesion", REVIEWER)
        await pilot.press("z")
        await settle(pilot)
        assert "Nothing to undo" in " ".join(str(n.message) for n in app._notifications)
        first = screen.current
        await pilot.press("n")
        await settle(pilot)
        assert screen.current is not first
        await pilot.press("z")
        await settle(pilot)
        assert screen.current is first
        messages = [str(n.message) for n in app._notifications]
        assert any(first.slide_name in m and "µm" in m and "not lesion" in m for m in messages)
    with cat.session() as s:
        rows = {r.id: r for r in s.scalars(select(Review))}
    assert rows[elsewhere].undone_at is None  # never touched
    undone = [r for r in rows.values() if r.id != elsewhere]
    assert len(undone) == 1 and undone[0].undone_at is not None and undone[0].verdict == "not_lesion"


async def test_long_names_keep_their_ends_and_the_why_line_wraps(queued):
    ws, cat = queued
    make_queue(cat, per_slide=3, seed=2)  # a newer queue, with "diverse" patches (every third)
    with cat.session() as s:
        for i, slide in enumerate(s.scalars(select(SlideRow).order_by(SlideRow.id))):
            slide.name = f"cmu-1-small-region-scan-2024-03-{i:02d}.svs"  # the same but for the end
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        while screen.current.reason != "diverse":  # the longest reason
            await pilot.press("space")
            await settle(pilot)
        info = screen.query_one("#triage-info")
        lines = ["".join(seg.text for seg in info.render_line(y)).rstrip() for y in range(info.size.height)]
        name = screen.current.slide_name
        slide_line = next(line for line in lines if line.startswith("slide"))
        assert "…" in slide_line and slide_line.endswith(name[-8:]) and name[:8] in slide_line
        why = lines.index(next(line for line in lines if line.startswith("why")))
        assert (lines[why] + " " + lines[why + 1].strip()).split(None, 1)[1] == "diverse (unlike the others)"
