"""SVG snapshots of the app's screens at 80 x 24 and 140 x 44 on the demo cohort.

Update after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`, and
look at the SVGs in tests/__snapshots__ before committing them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from tui_support import make_queue, settle
from wsireview.catalog import Review, Slide
from wsireview.catalog.queries import queue_entries
from wsireview.tui.app import ReviewApp

SIZES = [(80, 24), (140, 44)]


@pytest.fixture
def app_factory(demo_workspace, demo_catalog):
    make_queue(demo_catalog, per_slide=3, seed=5)
    make_queue(demo_catalog, per_slide=3, seed=6, parent_id=1,
               metrics={"slide_auc": 0.81, "slide_accuracy": 0.74, "instance_auc": 0.7},
               label_counts={"slides": {"lesion": 3, "normal": 3}, "patches": {"lesion": 4, "not_lesion": 9}})

    def make(start: str = "slides") -> ReviewApp:
        return ReviewApp(demo_workspace, demo_catalog, reviewer="dr-snapshot", start=start)

    return make


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_slides_screen(app_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("down", "t")  # second slide, tissue overlay
        await settle(pilot)

    assert snap_compare(app_factory("slides"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_triage_screen(app_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("space")  # (a verdict would show its seconds, which vary)
        await settle(pilot)

    assert snap_compare(app_factory("review"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_model_screen(app_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)

    assert snap_compare(app_factory("slides"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_screen(app_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(app_factory("review"), terminal_size=size, run_before=run_before)


SCREEN_SIZES = [(80, 24), (120, 35)]
FIXED = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def reviewed_factory(app_factory, demo_catalog):
    """The snapshot cohort with a few verdicts (one changed, one withdrawn) and labels set at fixed times."""
    entries = queue_entries(demo_catalog)
    with demo_catalog.session() as session:
        for slide in session.scalars(select(Slide)):
            slide.label_set_at = FIXED
        for i, (entry, verdict) in enumerate(zip(entries, ("lesion", "not_lesion", "artifact", "lesion"))):
            session.add(Review(patch_id=entry.patch_id, verdict=verdict, reviewer="dr-snapshot", seconds_taken=2.0,
                               created_at=FIXED + timedelta(minutes=i), model_version_id=entry.model_version_id,
                               undone_at=FIXED + timedelta(minutes=9) if i == 2 else None))
        session.add(Review(patch_id=entries[0].patch_id, verdict="unsure", reviewer="dr-snapshot",
                           created_at=FIXED + timedelta(minutes=8), model_version_id=entries[0].model_version_id))
    return app_factory


@pytest.mark.parametrize("size", SCREEN_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_slide_view(reviewed_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(reviewed_factory("slides"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SCREEN_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_screen(reviewed_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)

    assert snap_compare(reviewed_factory("slides"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SCREEN_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_label_dialog(reviewed_factory, snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)

    assert snap_compare(reviewed_factory("slides"), terminal_size=size, run_before=run_before)


ZOOM_STEPS = {
    "full-res-panned": ("space", "plus", "plus", "plus", "plus", "right"),  # level 0, a quarter field right
    "context": ("space", "c"),  # 8 patch fields, the patch outlined in the middle
    "fill": ("space", "plus", "f"),  # the image on the whole terminal, the field in the caption
}


@pytest.mark.parametrize("size", SCREEN_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("state", list(ZOOM_STEPS))
def test_triage_zoom(app_factory, snap_compare, size, state):
    async def run_before(pilot):
        await settle(pilot)
        for key in ZOOM_STEPS[state]:
            await pilot.press(key)
            await settle(pilot)

    assert snap_compare(app_factory("review"), terminal_size=size, run_before=run_before)
