"""The slide view, the history screen and label editing, driven with Pilot on the demo cohort and
asserted on the catalog and on what is drawn."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from test_tui import REVIEWER, app_for, reviews, text_of
from tui_support import make_queue, settle
from wsireview.catalog import Slide
from wsireview.catalog.queries import queue_entries
from wsireview.export.selection import Selection, select_patches
from wsireview.learn.labels import instance_targets, slide_targets
from wsireview.tui.imaging import MARK_COLOUR, VERDICT_COLOURS

pytestmark = pytest.mark.asyncio


@pytest.fixture
def queued(demo_workspace, demo_catalog):
    version = make_queue(demo_catalog, per_slide=2, seed=1)
    return demo_workspace, demo_catalog, version


def drawn_colours(view) -> set[tuple[int, int, int]]:
    """Every colour the half-block view draws (upper and lower pixels of each cell)."""
    colours = set()
    for y in range(view.box[1]):
        for segment in view.render_line(y):
            if segment.text.startswith("▀") and segment.style:
                colours.add(segment.style.color.get_truecolor())
                colours.add(segment.style.bgcolor.get_truecolor())
    return {tuple(c) for c in colours}


def screen_name(app) -> str:
    return type(app.screen).__name__


async def test_slide_view_shows_layers_patches_and_opens_the_queue(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat, start="review")
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        first = app.screen.current
        await pilot.press("y")  # a lesion verdict on this slide's first queued patch
        await settle(pilot)
        await pilot.press("escape", "enter")
        await settle(pilot)
        screen = app.screen
        assert screen_name(app) == "SlideScreen"
        slide_id = screen.slide_id
        queue = [e.patch_id for e in queue_entries(cat, slide_id=slide_id)]
        assert [p.patch_id for p in screen.patches] == queue  # its queued patches, in queue order
        states = [text_of_cell(screen, i) for i in range(len(queue))]
        assert any(s.startswith("queued #") for s in states)
        if first.slide_id == slide_id:
            assert "lesion" in states
        view = screen.query_one("#slide-view-picture")
        colours = drawn_colours(view)
        assert tuple(MARK_COLOUR) in colours  # the selected patch's box
        legend = text_of(screen.query_one("#slide-view-legend"))
        assert "attention low" in legend and "not lesion" in legend and "queued" in legend
        key = view.shown_key
        await pilot.press("t")
        await settle(pilot)
        assert view.shown_key != key and "tissue" in text_of(screen.query_one("#slide-view-legend"))
        await pilot.press("a", "v")
        await settle(pilot)
        assert "attention" not in text_of(screen.query_one("#slide-view-legend"))
        assert tuple(MARK_COLOUR) in drawn_colours(view)  # the selection stays boxed without the layers
        await pilot.press("down")
        await settle(pilot)
        assert screen.selected.patch_id == queue[1]
        await pilot.press("r")
        await settle(pilot)
        assert screen_name(app) == "TriageScreen" and app.screen.slide_id == slide_id


def text_of_cell(screen, row: int) -> str:
    return str(screen.query_one("#slide-view-patches").get_row_at(row)[0])


async def test_s_in_triage_shows_the_patch_on_its_slide(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat, start="review")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        lesion_patch = reviews(cat)[0].patch_id
        await pilot.press("z")  # back to that patch, then give it the verdict again
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        entry = app.screen.current
        await pilot.press("s")
        await settle(pilot)
        screen = app.screen
        assert screen_name(app) == "SlideScreen"
        assert (screen.slide_id, screen.focus_patch_id) == (entry.slide_id, entry.patch_id)
        assert screen.selected.patch_id == entry.patch_id
        colours = drawn_colours(screen.query_one("#slide-view-picture"))
        assert tuple(MARK_COLOUR) in colours
        if any(p.patch_id == lesion_patch for p in screen.patches):  # the verdict drawn in its colour
            assert tuple(VERDICT_COLOURS["lesion"]) in colours
        await pilot.press("escape")
        await settle(pilot)
        assert screen_name(app) == "TriageScreen" and app.screen.current.patch_id == entry.patch_id


async def test_history_changes_and_withdraws_verdicts(queued):
    ws, cat, version = queued
    queue = queue_entries(cat)
    app = app_for(ws, cat, start="review")
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        for key in ("y", "n", "a"):
            await pilot.press(key)
            await settle(pilot)
        await pilot.press("escape", "h")
        await settle(pilot)
        screen = app.screen
        assert screen_name(app) == "HistoryScreen"
        assert [e.patch_id for e in screen.entries] == [queue[2].patch_id, queue[1].patch_id, queue[0].patch_id]
        assert "3 patches" in text_of(screen.query_one("#history-title"))
        assert screen.query_one("#history-patch").shown_key == ("history-patch", queue[2].patch_id)
        await pilot.press("down", "down", "n")  # the first verdict, lesion, becomes not lesion
        await settle(pilot)
        assert [e.patch_id for e in screen.entries][2] == queue[0].patch_id  # the row stayed where it was
        assert screen.selected.verdict == "not_lesion" and screen.selected.earlier == ("lesion",)
        await pilot.press("up", "w")  # withdraw the not-lesion verdict on the second patch
        await settle(pilot)
        await pilot.press("v")  # only lesion verdicts: none left
        await settle(pilot)
        assert screen.entries == [] and "No verdicts match" in text_of(screen.query_one("#history-detail"))
        for _ in range(4):  # ... not lesion, unsure, artifact, withdrawn
            await pilot.press("v")
            await settle(pilot)
        assert [e.patch_id for e in screen.entries] == [queue[1].patch_id]
        await pilot.press("v", "slash", *queue[2].slide_name[-7:])
        await settle(pilot)
        assert {e.slide_name for e in screen.entries} == {queue[2].slide_name}
        await pilot.press("escape", "escape")
        await settle(pilot)
        assert screen_name(app) == "SlidesScreen"
    rows = reviews(cat)
    assert [(r.patch_id, r.verdict, r.undone_at is not None) for r in rows] == [
        (queue[0].patch_id, "lesion", False),  # superseded, kept
        (queue[1].patch_id, "not_lesion", True),  # withdrawn
        (queue[2].patch_id, "artifact", False),
        (queue[0].patch_id, "not_lesion", False),  # the change: appended
    ]
    assert rows[3].model_version_id == version and rows[3].reviewer == REVIEWER
    assert instance_targets(cat) == {queue[0].patch_id: 0}
    labelled = {p.patch_id: p.label for p in select_patches(cat, Selection()).patches}
    assert labelled == {queue[0].patch_id: "not_lesion", queue[2].patch_id: "artifact"}


async def test_labels_set_in_the_app_with_the_known_labels_offered(queued):
    ws, cat, _ = queued
    with cat.session() as session:  # an unlabelled cohort
        for slide in session.scalars(select(Slide)):
            slide.label = None
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        first_step = screen.query_one("#first-step")
        assert first_step.display and "press l" in text_of(first_step)
        app.confirm_retrain()  # nothing to learn from: it says what comes first instead of asking
        await settle(pilot)
        assert screen_name(app) == "SlidesScreen"
        slide = screen.selected
        await pilot.press("l")
        await settle(pilot)
        assert screen_name(app) == "LabelScreen"
        options = text_of_options(app.screen)
        assert options == ["1 lesion suggested", "2 normal suggested"]  # what retrain expects
        await pilot.press("1")
        await settle(pilot)
        assert screen_name(app) == "SlidesScreen" and not first_step.display
        assert "lesion (dr-test)" in text_of(screen.query_one("#slide-info"))
        await pilot.press("down", "l")
        await settle(pilot)
        assert text_of_options(app.screen) == ["1 lesion 1 slide", "2 normal suggested"]
        await pilot.press("tab", *"tumour", "enter")  # a new label, typed
        await settle(pilot)
        second = screen.selected
        assert label_of(cat, second.id) == ("tumour", REVIEWER)
        await pilot.press("l", "escape")  # cancelled: unchanged
        await settle(pilot)
        assert label_of(cat, second.id) == ("tumour", REVIEWER)
        await pilot.press("up", "l", "down", "enter")  # lesion is highlighted (the label now); down: tumour
        await settle(pilot)
        assert label_of(cat, slide.id) == ("tumour", REVIEWER)
        await pilot.press("l", "x")  # cleared
        await settle(pilot)
    assert label_of(cat, slide.id) == (None, REVIEWER)
    with cat.session() as session:
        assert session.get(Slide, slide.id).label_set_at is not None
    assert slide_targets(cat, "tumour")[0] == {second.id: 1}  # what the next retrain trains on


def label_of(catalog, slide_id: int) -> tuple[str | None, str | None]:
    with catalog.session() as session:
        slide = session.get(Slide, slide_id)
        return slide.label, slide.label_set_by


def text_of_options(screen) -> list[str]:
    options = screen.query_one("#label-options")
    return [" ".join(options.get_option_at_index(i).prompt.plain.split()) for i in range(options.option_count)]


async def test_help_lists_only_the_apps_keys(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        for keys, screen, words in ((("enter",), "SlideScreen", ("Review", "Label", "History", "Tissue layer")),
                                    (("escape", "h"), "HistoryScreen", ("Withdraw", "Change to lesion")),
                                    (("escape",), "SlidesScreen", ("Filter", "Label", "Models", "History"))):
            await pilot.press(*keys)
            await settle(pilot)
            assert screen_name(app) == screen
            await pilot.press("question_mark")
            await settle(pilot)
            shown = text_of(app.screen.query_one("#help-keys"))
            for word in words:
                assert word in shown, (screen, word)
            for generic in ("Focus Next", "Focus Previous", "Copy selected text", "Cursor", "Select", "Scroll"):
                assert generic not in shown, (screen, generic)
            assert "command palette" in shown
            await pilot.press("escape")
            await settle(pilot)


async def test_names_with_markup_and_escape_sequences_show_literally_everywhere(queued):
    ws, cat, _ = queued
    with cat.session() as session:  # every slide named like a hostile file
        for slide in session.scalars(select(Slide)):
            slide.name = f"s{slide.id}[/]\x1b]0;x\x07[reverse]"

    def names_shown(app) -> int:
        """How many names the screen shows as the app must draw them: markup as text, escapes
        escaped (both ends, since narrow columns drop the middle)."""
        svg = app.export_screenshot()  # what the terminal shows, one <text> per styled run
        assert "\x1b" not in svg and "\x07" not in svg
        text = html.unescape(re.sub(r"<[^>]+>|\n", "", svg.split("</style>")[-1])).replace("\xa0", " ")
        return len(re.findall(r"s\d+\[/\]\\x1b\][^ ]*?\[reverse\]", text))

    app = app_for(ws, cat, start="review")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        assert screen_name(app) == "TriageScreen" and names_shown(app) >= 1  # the side panel
        await pilot.press("y", "escape")
        await settle(pilot)
        assert screen_name(app) == "SlidesScreen" and names_shown(app) >= 7  # 6 in the table, 1 in the panel
        await pilot.press("enter")
        await settle(pilot)
        assert screen_name(app) == "SlideScreen" and names_shown(app) >= 1
        await pilot.press("r")
        await settle(pilot)
        assert screen_name(app) == "TriageScreen" and names_shown(app) >= 2  # title and panel
        await pilot.press("escape", "escape")
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        assert screen_name(app) == "HistoryScreen" and names_shown(app) >= 2  # table and detail
