"""The review app driven with Pilot on the demo cohort: every binding, asserted on the catalog."""

from __future__ import annotations

import io
import shutil

import pytest
from rich.console import Console
from sqlalchemy import func, select, update
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from tui_support import fake_round, make_queue, palette_found, settle, wait_for
from wsireview.catalog import FAILED, MISSING, ModelVersion, Review, Slide, open_catalog
from wsireview.catalog.queries import queue_entries, review_summary, slides_overview
from wsireview.tui.app import ReviewApp
from wsireview.tui.widgets.slide_table import COLUMNS
from wsireview.workspace import Workspace

pytestmark = pytest.mark.asyncio
REVIEWER = "dr-test"


def reviews(catalog) -> list[Review]:
    with catalog.session() as session:
        return list(session.scalars(select(Review).order_by(Review.id)).all())


def app_for(workspace, catalog, start="review", slide_id=None, size=None) -> ReviewApp:
    return ReviewApp(workspace, catalog, reviewer=REVIEWER, start=start, slide_id=slide_id)


def text_of(widget) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


@pytest.fixture
def queued(demo_workspace, demo_catalog):
    version = make_queue(demo_catalog, per_slide=2, seed=1)
    return demo_workspace, demo_catalog, version


async def test_verdict_keys_write_at_once_with_reviewer_and_model(queued):
    ws, cat, version = queued
    queue = queue_entries(cat)
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key, n in (("y", 1), ("n", 2), ("u", 3), ("a", 4)):
            await pilot.press(key)
            assert len(reviews(cat)) == n  # committed by the keypress, before anything else happens
            await settle(pilot)
    rows = reviews(cat)
    assert [r.verdict for r in rows] == ["lesion", "not_lesion", "unsure", "artifact"]
    assert [r.patch_id for r in rows] == [e.patch_id for e in queue[:4]]
    assert {r.reviewer for r in rows} == {REVIEWER}
    assert {r.model_version_id for r in rows} == {version}
    assert all(r.seconds_taken is not None and 0 <= r.seconds_taken < 60 for r in rows)
    assert all(r.undone_at is None for r in rows)


async def test_undo_both_keys_and_skip_records_nothing(queued):
    ws, cat, _ = queued
    queue = queue_entries(cat)
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("space", "space")
        await settle(pilot)
        assert reviews(cat) == []
        assert app.screen.current.patch_id == queue[2].patch_id
        await pilot.press("y")
        await settle(pilot)
        await pilot.press("z")  # undo: the lesion verdict on queue[2] no longer counts, and it is shown again
        await settle(pilot)
        assert app.screen.current.patch_id == queue[2].patch_id
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("backspace")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
    rows = reviews(cat)
    assert [(r.patch_id, r.verdict, r.undone_at is not None) for r in rows] == [
        (queue[2].patch_id, "lesion", True),
        (queue[2].patch_id, "not_lesion", True),
        (queue[2].patch_id, "artifact", False),
    ]
    assert review_summary(cat, [r.id for r in rows]).by_verdict == {"artifact": 1}


async def test_context_view_and_help(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pid = app.screen.current.patch_id
        view = app.screen.query_one("#patch")
        home = app.screen.current_view()
        assert view.shown_key == ("view", pid, home, view.pixel_box)
        await pilot.press("c")
        await settle(pilot)
        assert app.screen.current_view().downsample == pytest.approx(8 * home.downsample)
        assert view.shown_key == ("view", pid, app.screen.current_view(), view.pixel_box)
        await pilot.press("c")
        await settle(pilot)
        assert view.shown_key == ("view", pid, home, view.pixel_box)
        await pilot.press("question_mark")
        await settle(pilot)
        text = " ".join(text_of(s) for s in app.screen.query("Static"))
        for words in ("Lesion", "Not lesion", "Unsure", "Artifact", "Undo", "Skip", "Context"):
            assert words in text
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen"
    assert reviews(cat) == []


async def test_patch_lines_are_the_patch(queued):
    """What the half-block view draws is the patch read from the slide, not a blank box."""
    ws, cat, _ = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        entry = app.screen.current
        view = app.screen.query_one("#patch")
        w, h = view.box
        colours = set()
        for y in range(h):
            for seg in view.render_line(y):
                if seg.text.startswith("▀"):
                    colours.add(seg.style.color.get_truecolor())
        assert len(colours) > 50  # tissue texture, not one flat colour
        image = app.source.patch(entry)
        assert image.size == (224, 224)


async def test_queue_end_summary_then_retrain_refreshes_queue(queued, monkeypatch):
    ws, cat, version = queued
    n = len(queue_entries(cat))

    def fake_retrain(catalog, workspace, **kwargs):  # the real round is tested by its own issue
        return fake_round(catalog, parent_id=version, seed=2)

    monkeypatch.setattr("wsireview.learn.round.retrain", fake_retrain)
    app = app_for(ws, cat)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        for i in range(n):
            await pilot.press("y" if i % 2 else "n")
            await settle(pilot)
        assert type(app.screen).__name__ == "SummaryScreen"
        summary = text_of(app.screen.query_one("#summary"))
        assert "lesion" in summary and "wsireview" in summary and "retrain" in summary
        await pilot.press("r")  # asks first: n keeps the summary and the model
        await settle(pilot)
        assert type(app.screen).__name__ == "ConfirmRetrainScreen"
        await pilot.press("n")
        await settle(pilot)
        assert type(app.screen).__name__ == "SummaryScreen"
        with cat.session() as session:
            assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
        await pilot.press("r", "enter")
        await settle(pilot)
        await settle(pilot)
        assert type(app.screen).__name__ == "RetrainScreen"  # the new version's metrics, until enter
        shown = text_of(app.screen.query_one("#retrain-log"))
        assert f"v{version + 1} metrics vs v{version}" in shown and "AUC" in shown and "accuracy" in shown
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen"
        assert app.screen.current.model_version_id != version
        assert len(app.screen.entries) == 6
    counts = review_summary(cat, [r.id for r in reviews(cat)])
    assert counts.by_verdict == {"lesion": n // 2, "not_lesion": n - n // 2}
    with cat.session() as session:
        assert session.scalar(select(ModelVersion.parent_id).order_by(ModelVersion.id.desc()).limit(1)) == version


async def test_slides_screen_keys(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#slide-table")
        assert table.row_count == 6
        await pilot.press("slash", *"lesion", "enter")
        await settle(pilot)
        assert table.row_count == 3  # filtered by label
        await pilot.press("escape")
        await settle(pilot)
        assert table.row_count == 6
        thumb = app.screen.query_one("#slide-thumb")
        assert thumb.shown_key[2] == "plain"
        for overlay in ("tissue", "attention", "plain"):
            await pilot.press("t")
            await settle(pilot)
            assert thumb.shown_key[2] == overlay
        await pilot.press("s")  # sort by status, then by size ...
        await settle(pilot)
        assert table.sort_key == "status"
        await pilot.press("m")
        await settle(pilot)
        assert type(app.screen).__name__ == "ModelScreen"
        await pilot.press("escape", "r")
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen" and app.screen.slide_id is None
        await pilot.press("escape")
        await settle(pilot)
        first = table.selected_id
        await pilot.press("enter")  # the slide view, then its queue
        await settle(pilot)
        assert type(app.screen).__name__ == "SlideScreen" and app.screen.slide_id == first
        await pilot.press("r")
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen" and app.screen.slide_id == first
        await pilot.press("y")
        await settle(pilot)
    rows = reviews(cat)
    assert len(rows) == 1
    with cat.session() as session:
        slide_of = session.scalar(select(Slide.id).join(Slide.patches).where(Slide.patches.any(id=rows[0].patch_id)))
    assert slide_of == first
    assert next(s for s in slides_overview(cat) if s.id == first).reviewed == 1


async def test_resize_renders_again(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = app.screen.query_one("#patch")
        small = view.box
        await pilot.resize_terminal(140, 44)
        await settle(pilot)
        assert view.box != small
        assert len(view._strips) == view.box[1]
        assert all(s.cell_length == view.box[0] for s in view._strips)


async def test_opens_on_empty_workspace(workspace, catalog):
    app = app_for(workspace, catalog, start="slides")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = text_of(app.screen.query_one("#empty"))
        assert "wsireview add" in text
        await pilot.press("t", "r")
        await settle(pilot)
        assert "Nothing queued" in " ".join(str(l.text) for l in
                                           [app.screen.query_one("#patch").render_line(y) for y in range(22)])
        await pilot.press("escape", "m")
        await settle(pilot)
        assert "No model yet" in text_of(app.screen.query_one("#model-detail"))


async def test_failed_missing_and_vanished_slides(real_slides, demo_cohort, tmp_path):
    """Failed and missing slides say why; a slide file deleted after ingest shows a placeholder."""
    from wsireview.ingest import add_paths

    ws = Workspace.resolve(tmp_path / "ws").ensure()
    cat = open_catalog(ws.db_url)
    doomed = tmp_path / "doomed.tiff"
    shutil.copy(demo_cohort / "demo-001.tiff", doomed)
    add_paths(cat, ws, [real_slides / "corrupt-truncated.svs", doomed])
    with cat.session() as session:
        session.add(Slide(name="gone.svs", path=str(tmp_path / "gone.svs"), status=MISSING))
    make_queue(cat, per_slide=2)
    doomed.unlink()
    statuses = {s.name: s.status for s in slides_overview(cat)}
    assert statuses == {"corrupt-truncated.svs": FAILED, "doomed.tiff": "ready", "gone.svs": MISSING}

    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        seen = {}
        for _ in range(3):
            slide = app.screen.selected
            thumb = app.screen.query_one("#slide-thumb")
            seen[slide.name] = (thumb.shown_key, thumb._message, text_of(app.screen.query_one("#slide-info")))
            await pilot.press("down")
            await settle(pilot)
        assert "failed" in seen["corrupt-truncated.svs"][1]
        assert "file missing" in seen["gone.svs"][1]
        assert seen["doomed.tiff"][0] is not None  # its thumbnail lives in the workspace
        assert "not found" in seen["doomed.tiff"][2]
        assert "truncated" in seen["corrupt-truncated.svs"][2] or "cannot" in seen["corrupt-truncated.svs"][2]
        await pilot.press("r")
        await settle(pilot)
        patch = app.screen.query_one("#patch")
        assert "not found" in patch._message
        await pilot.press("y")  # no verdict on a patch nobody could see
        await settle(pilot)
        assert reviews(cat) == []
        await pilot.press("space")
        await settle(pilot)
        assert app.screen.current is not None
    cat.close()


async def test_full_collections_deferred_while_the_app_runs(queued):
    import gc

    from wsireview.tui.gc_policy import FULL_COLLECTION_EVERY

    ws, cat, _ = queued
    before = gc.get_threshold()
    app = app_for(ws, cat)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: app.collector.started, what="the collector (it starts a second after mount)")
        assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY
        assert gc.get_freeze_count() > 0
        await pilot.press("y")
        assert app.collector.clock() - app.collector.last_input < 1.0  # the key counted as input
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_palette_lists_keys_once(queued):
    """Textual's own "Keys" command (its side help panel) is dropped for ours (the help screen)."""
    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert titles.count("Keys") == 1
        await pilot.press("ctrl+p", *"keys")
        await wait_for(pilot, lambda: palette_found(app, "keys"), what="the palette's search")
        options = app.screen.query_one("CommandList").options
        assert sum(1 for o in options if o.prompt.plain.splitlines()[0] == "Keys") == 1
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "HelpScreen"


async def test_help_lists_each_key_once(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        lines = text_of(app.screen.query_one("#help-keys")).splitlines()
        keys = [k for line in lines[1:] if line.strip() for k in line.split("  ")[0].strip().split(" / ")]
        assert keys.count("ctrl+p") == 1
        assert len(keys) == len(set(keys))
        assert any("command palette" in line for line in lines)


async def test_slides_thumbnail_loaded_once_per_selection(queued, monkeypatch):
    """A reload (and every fill, filter and sort of the table) loads the selected thumbnail once."""
    from wsireview.tui.messages import CatalogChanged
    from wsireview.tui.screens.slides import SlidesScreen

    loads: list[tuple[int, str]] = []
    original = SlidesScreen.load_thumbnail

    def counting(self, view, slide, overlay):
        loads.append((slide.id, overlay))
        return original(self, view, slide, overlay)

    monkeypatch.setattr(SlidesScreen, "load_thumbnail", counting)
    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        screen = app.screen
        first = screen.selected.id
        assert loads == [(first, "plain")]  # mounting is a reload too
        loads.clear()
        screen.post_message(CatalogChanged())
        await settle(pilot)
        assert loads == [(first, "plain")]
        await pilot.press("down", "down")
        await settle(pilot)
        third = screen.selected.id
        assert loads[-1] == (third, "plain") and len(loads) == 3
        loads.clear()
        screen.post_message(CatalogChanged())  # the cursor is restored to the third row
        await settle(pilot)
        assert loads == [(third, "plain")]
        loads.clear()
        await pilot.press("t")
        await settle(pilot)
        assert loads == [(third, "tissue")]
        loads.clear()
        await pilot.press("s")  # a sort keeps the selected slide: nothing to load
        await settle(pilot)
        assert loads == [] and screen.selected.id == third
        assert screen.query_one("#slide-thumb").shown_key[:3] == ("slide-thumb", third, "tissue")


def assert_table_fits(table, wide: bool) -> None:
    """Wide: every column on screen. Narrow: the less important columns are hidden, and the columns
    shown (at least slide, status, label, P and queue) are all on screen, names at least 12 cells."""
    shown = table.scrollable_content_region.width
    widths = {str(key.value): column.get_render_width(table) for key, column in table.columns.items()}
    assert sum(widths.values()) <= shown
    if wide:
        assert list(widths) == [c.key for c in COLUMNS]
    else:
        assert {"name", "status", "label", "prob", "queued"} <= set(widths)
        assert table.columns["name"].width >= 12


async def test_slide_table_fits(queued):
    """All columns fit at 140 x 44 (the demo's names whole), even with a name too long to show and a
    vertical scrollbar; at 80 x 24 the important columns fit; resizing fits the table again."""
    ws, cat, _ = queued
    for extra in (False, True):
        if extra:
            with cat.session() as session:
                session.add(Slide(name="TCGA-A1-A0SB-01Z-00-DX1.8AC4AFE4-3B6C.svs", path="/nowhere/long.svs",
                                  status=MISSING))
                for i in range(60):
                    session.add(Slide(name=f"slide-{i:03d}.svs", path=f"/nowhere/{i}.svs", status=MISSING))
        app = app_for(ws, cat, start="slides")
        async with app.run_test(size=(140, 44)) as pilot:
            await settle(pilot)
            table = app.screen.query_one("#slide-table")
            assert table.show_vertical_scrollbar == extra
            assert_table_fits(table, wide=True)
            if not extra:
                assert table.columns["name"].width >= max(len(s.name) for s in table.slides)
            for size, wide in (((80, 24), False), ((140, 44), True)):
                await pilot.resize_terminal(*size)
                await settle(pilot)
                assert_table_fits(table, wide)


def visible_columns(table) -> list[str]:
    """The titles of a DataTable's columns that are wholly on screen (sort arrows removed)."""
    room, x, titles = table.scrollable_content_region.width, 0, []
    for column in table.columns.values():
        x += column.get_render_width(table)
        if x <= room:
            titles.append(column.label.plain.rstrip("↑↓"))
    return titles


def footer_keys(screen) -> list[str]:
    """The footer's keys wholly on screen (left of the palette key), as "key description"."""
    footer = screen.query_one(Footer)
    keys = list(footer.query(FooterKey))
    right = min([k.region.x for k in keys if k.has_class("-command-palette")] or [footer.region.right])
    return [f"{k.key_display} {k.description}" for k in keys
            if not k.has_class("-command-palette") and k.region.right <= right]


def line(widget, y: int = 0) -> str:
    """One line of a widget as drawn: cut at the widget's width."""
    return "".join(segment.text for segment in widget.render_line(y))


async def test_everything_essential_fits_80x24(queued):
    """At 80 x 24: the slides table shows slide, status, label, P and queue (names whole), the
    header keeps the reviewer, side-panel rows do not wrap, and every footer keeps ? Keys (and
    q Quit where it has one). At 120 x 36 the queue column is on screen too."""
    from wsireview.tui.widgets.slide_info import describe

    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#slide-table")
        assert {"slide", "status", "label", "P", "queue"} <= set(visible_columns(table))
        assert table.columns["name"].width >= max(len(s.name) for s in table.slides)
        assert {"? Keys", "q Quit"} <= set(footer_keys(screen))
        assert REVIEWER in line(screen.query_one("#title"))
        info = screen.query_one("#slide-info")
        drawn = [line(info, y) for y in range(info.size.height)]
        assert sum(1 for text in drawn if text.strip()) == describe(screen.selected).row_count  # one line a row
        assert "queued" in "".join(drawn)

        await pilot.press("m")
        await settle(pilot)
        model_table = app.screen.query_one("#model-table")
        assert {"version", "slide AUC", "slide accuracy", "queued", "verdicts"} <= set(visible_columns(model_table))
        assert {"? Keys", "q Quit"} <= set(footer_keys(app.screen))

        await pilot.press("escape", "r")
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen"
        shown = footer_keys(app.screen)
        assert {"y Lesion", "n Not lesion", "u Unsure", "a Artifact", "esc Slides", "? Keys"} <= set(shown)

        await pilot.press("escape")
        await pilot.resize_terminal(120, 36)
        await settle(pilot)
        assert {"slide", "status", "tissue", "label", "P", "patches", "done", "queue"} <= set(visible_columns(table))


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_sort_arrow_visible_on_every_column(queued, size):
    """Whichever column sorts, its header shows the arrow; `s` cycles through the columns on screen."""
    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#slide-table")
        titles = {c.key: c.label for c in COLUMNS}
        keys = [str(key.value) for key in table.columns]  # the columns on screen at this width
        for key in keys:
            for reverse, arrow in ((False, "↑"), (True, "↓")):
                table.sort_by(key, reverse)
                await pilot.pause()
                assert f"{titles[key]}{arrow}" in line(table), (key, line(table))
        table.sort_by("name", False)
        seen = []
        for _ in keys:
            await pilot.press("s")
            await pilot.pause()
            seen.append(table.sort_key)
            assert titles[table.sort_key] in line(table)
        assert sorted(seen) == sorted(keys)


async def test_filter_without_matches_says_so(queued):
    ws, cat, _ = queued
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one("#slide-table")
        await pilot.press("slash", *"zzz", "enter")
        await settle(pilot)
        empty = screen.query_one("#empty")
        assert empty.display and not table.display
        assert "no slides match 'zzz' (esc clears)" in text_of(empty)
        assert text_of(screen.query_one("#slide-info")).strip() == ""
        assert screen.query_one("#slide-thumb").shown_key is None
        assert "0 of 6 slides" in line(screen.query_one("#title"))
        await pilot.press("escape")
        await settle(pilot)
        assert table.display and not empty.display and table.row_count == 6
        assert "6 slides" in line(screen.query_one("#title")) and " of " not in line(screen.query_one("#title"))
        assert screen.selected.name in text_of(screen.query_one("#slide-info"))
        await pilot.press("slash", *"lesion", "enter")
        await settle(pilot)
        assert "3 of 6 slides" in line(screen.query_one("#title"))


async def test_palette_model_opens_model_screen_and_retrain_asks_first(queued, monkeypatch):
    """"model" + enter in the palette opens the model versions, not a retrain; the palette's retrain
    (like the summary's r) waits for enter or y, and esc or n cancels it."""
    ws, cat, version = queued
    calls = []

    def fake_retrain(catalog, workspace, **kwargs):
        calls.append(kwargs)
        return fake_round(catalog, parent_id=version, seed=3)

    monkeypatch.setattr("wsireview.learn.round.retrain", fake_retrain)
    app = app_for(ws, cat, start="slides")

    async def palette(query: str) -> None:
        await pilot.press("ctrl+p", *query)
        await wait_for(pilot, lambda: palette_found(app, query), what="the palette's search")
        await pilot.press("enter")
        await settle(pilot)

    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await palette("model")
        assert type(app.screen).__name__ == "ModelScreen"
        await pilot.press("escape")
        for cancel in ("escape", "n"):
            await palette("retrain")
            assert type(app.screen).__name__ == "ConfirmRetrainScreen"
            queued_now = sum(s.queued for s in slides_overview(cat))
            assert f"{queued_now} patches still queued" in " ".join(text_of(w) for w in app.screen.query("Static"))
            await pilot.press(cancel)
            await settle(pilot)
            assert type(app.screen).__name__ == "SlidesScreen" and calls == []
        await palette("retrain")
        await pilot.press("y")
        for _ in range(3):
            await settle(pilot)
        assert len(calls) == 1 and type(app.screen).__name__ == "RetrainScreen"  # its metrics table
        assert "AUC" in text_of(app.screen.query_one("#retrain-log"))
        await pilot.press("enter")  # then the new queue
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen" and app.screen.slide_id is None
        assert app.screen.current.model_version_id == version + 1
    with cat.session() as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 2


async def test_model_screen_words_and_zero_changes(demo_workspace, demo_catalog):
    """A metric that did not change shows +0.000 (a count +0), as the CLI prints it; label-count
    keys read as words."""
    counts = {"slides": {"positive": 3, "negative": 3, "unlabelled": 0}, "slide_labels": {"lesion": 3, "normal": 3},
              "patches": {"lesion": 0, "not_lesion": 0}, "reviewed_patches": 0}
    first = make_queue(demo_catalog, per_slide=1, seed=1, metrics={"slide_auc": 0.75, "cv_folds": 3},
                       label_counts=counts)
    make_queue(demo_catalog, per_slide=1, seed=2, parent_id=first, metrics={"slide_auc": 0.75, "cv_folds": 3},
               label_counts={**counts, "patches": {"lesion": 2, "not_lesion": 5}})
    app = app_for(demo_workspace, demo_catalog, start="slides")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        table = app.screen.query_one("#model-table")
        assert "slide AUC" in visible_columns(table)
        assert table.get_row_at(0)[1].plain == "0.750 +0.000"
        detail = text_of(app.screen.query_one("#model-detail"))
        for words in ("slide AUC", "CV folds", "positive slides", "slides labelled lesion", "not lesion patches",
                      "reviewed patches", "+0.000", "+0", "+5"):
            assert words in detail, words
        for raw in ("slide_auc", "slides.positive", "slide_labels", "not_lesion", "-0.000"):
            assert raw not in detail, raw


async def test_retrain_dialog_shows_the_current_phase_only(queued, monkeypatch):
    """The status line under the bar is the phase the round reports, with no stale "starting ..."."""
    import threading

    ws, cat, version = queued
    gate = threading.Event()

    def fake_retrain(catalog, workspace, on_progress=None, **kwargs):
        on_progress("cross-validating", 0.2)
        gate.wait(20)
        return fake_round(catalog, parent_id=version, seed=4)

    monkeypatch.setattr("wsireview.learn.round.retrain", fake_retrain)
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.start_retrain()
        try:
            await wait_for(  # not settle(): the round is still running
                pilot, lambda: type(app.screen).__name__ == "RetrainScreen"
                and "cross" in text_of(app.screen.query_one("#retrain-phase")), what="the round's phase")
            dialog = " ".join(text_of(w) for w in app.screen.query("Static"))
            assert text_of(app.screen.query_one("#retrain-phase")).strip() == "cross-validating"
            assert "starting" not in dialog
        finally:
            gate.set()
        for _ in range(3):
            await settle(pilot)
        assert "enter" in text_of(app.screen.query_one("#retrain-phase"))
        await pilot.press("escape")
        await settle(pilot)
        assert type(app.screen).__name__ == "TriageScreen"


async def test_attention_thumbnail_redrawn_after_retrain_in_the_app(queued, monkeypatch):
    """The attention overlay shows the new model's attention once a retrain from the app is done,
    not the picture cached for the old model."""
    ws, cat, version = queued

    def fake_retrain(catalog, workspace, **kwargs):
        return fake_round(catalog, parent_id=version, seed=5)

    monkeypatch.setattr("wsireview.learn.round.retrain", fake_retrain)
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        thumb = app.screen.query_one("#slide-thumb")
        await pilot.press("t", "t")
        await settle(pilot)
        assert thumb.shown_key[2] == "attention"
        before_key = thumb.shown_key
        before = [list(thumb.render_line(y)) for y in range(thumb.size.height)]
        done = []
        app.start_retrain(done.append)
        for _ in range(3):
            await settle(pilot)
        await pilot.press("enter")  # closes the metrics
        await settle(pilot)
        assert done == [True] and type(app.screen).__name__ == "SlidesScreen"
        assert thumb.shown_key[:3] == before_key[:3] and thumb.shown_key != before_key
        after = [list(thumb.render_line(y)) for y in range(thumb.size.height)]
        assert after != before  # the new model's attention, drawn again


async def test_app_retrain_continues_the_latest_round_spec(workspace, catalog):
    """After `retrain --positive normal` (a round of the command line), the app's retrain trains on
    'normal' too, with the same encoder, budget and seed: the spec is stored with the version."""
    from wsireview.learn.round import retrain
    from wsireview.learn.spec import RoundSpec
    from wsireview.learn.synthetic import make_synthetic_cohort

    make_synthetic_cohort(catalog, workspace, "synthetic", n_slides=8, n_patches=60, dim=16, seed=2)
    first = retrain(catalog, workspace, RoundSpec(encoder="synthetic", positive="normal", budget=4, seed=7))
    app = app_for(workspace, catalog, start="slides")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        done = []
        app.start_retrain(done.append)
        await wait_for(pilot, lambda: not app.screen.running, timeout=60,  # the real round, on a shared machine
                       what="the round")
        await pilot.press("enter")  # closes the new version's metrics
        await settle(pilot)
        assert done == [True]
    with catalog.session() as session:
        latest = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).first()
    assert latest.id != first.model_version_id and latest.parent_id == first.model_version_id
    assert latest.positive_label == "normal" and latest.label_counts["slides"] == {
        "positive": 4, "negative": 4, "unlabelled": 0}
    assert latest.params["spec"] == first.spec.as_dict()


async def test_app_retrain_refused_for_mixed_grids_offers_m_to_train_on_them(queued, monkeypatch):
    """One slide re-tiled at 1.0 µm/px: the app's retrain is refused with the grids named (as the
    command refuses it), and `m` runs the round again as `retrain --mixed-grids`."""
    from wsireview.status import refuse_mixed_grids

    ws, cat, version = queued
    with cat.session() as session:
        session.execute(update(Slide).where(Slide.id == session.scalar(select(func.min(Slide.id))))
                        .values(target_mpp=1.0))
    calls = []

    def fake_retrain(catalog, workspace, mixed_grids=False, **kwargs):
        calls.append(mixed_grids)
        if not mixed_grids:
            refuse_mixed_grids(catalog)  # the real rule on the real catalog
        return fake_round(catalog, parent_id=version, seed=6)

    monkeypatch.setattr("wsireview.learn.round.retrain", fake_retrain)
    app = app_for(ws, cat, start="slides")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        done = []
        app.start_retrain(done.append)
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RetrainScreen" and app.screen.refused_mixed,
                       what="the refusal")
        shown = text_of(app.screen.query_one("#retrain-log"))
        assert "slides differ in patch resolution (5 at 224 px / 0.5 µm/px, 1 at 224 px / 1.0 µm/px)" in shown
        assert "m: train on them as they are" in shown and "Traceback" not in shown
        with cat.session() as session:
            assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1  # nothing trained
        await pilot.press("m")
        await wait_for(pilot, lambda: app.screen.ok, what="the mixed-grid round")
        assert calls == [False, True]
        assert f"v{version + 1} metrics vs v{version}" in text_of(app.screen.query_one("#retrain-log"))
        await pilot.press("m")  # no longer offered: nothing runs again
        await settle(pilot)
        assert calls == [False, True]
        await pilot.press("enter")
        await settle(pilot)
        assert done == [True]
