"""Ingest that no file can break: isolated readers, bounded memory, declared sizes checked against
the file, pixels verified before a slide is ready. Damaged files are made from the real slides here."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from slide_mutations import flip_header_field, set_size, truncate, zero_tile_bytecounts
from wsireview.catalog import FAILED, READY, Patch, Review, Slide
from wsireview.ingest import SlideJobs, add_paths
from wsireview.slides import examine as real_jobs
from wsireview.slides.isolated import ReaderLimits

CMU = "cmu-1-small-region.svs"


# -- test doubles: the real jobs, except on files whose name asks for trouble (module level: they
# run in spawned worker processes, which import this module) ----------------------------------------

def crash_on_segv_name(path: Path, options):
    if "segv" in path.name:
        os.kill(os.getpid(), signal.SIGSEGV)
    return real_jobs.examine(path, options)


def hang_on_hang_name(path: Path, options):
    if "hang" in path.name:
        time.sleep(600)
    return real_jobs.examine(path, options)


def allocate_on_greedy_name(path: Path, options):
    if "greedy" in path.name:
        hog = np.ones(int(4e9), dtype=np.uint8)  # 4 GB: above the worker's address-space limit
        return hog.sum()
    return real_jobs.examine(path, options)


def slide_rows(catalog) -> dict[str, Slide]:
    with catalog.session() as session:
        rows = session.scalars(select(Slide)).all()
        session.expunge_all()
    return {row.name: row for row in rows}


def patch_count(catalog, slide_id: int) -> int:
    with catalog.session() as session:
        return session.scalar(select(func.count()).select_from(Patch).where(Patch.slide_id == slide_id))


@pytest.fixture
def batch(real_slides, tmp_path) -> Path:
    """A folder of copies of cmu-1 named for each double, between two good ones."""
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a-good.svs", "b-segv.svs", "c-hang.svs", "d-greedy.svs", "e-good.svs"):
        # Each copy differs in one trailing byte, so none is a duplicate of another.
        data = (real_slides / CMU).read_bytes() + name.encode()
        (folder / name).write_bytes(data)
    return folder


def test_crash_hang_and_memory_blowup_fail_one_slide_each_and_the_batch_goes_on(catalog, workspace, batch):
    jobs = SlideJobs(examine=crash_on_segv_name)
    limits = ReaderLimits(workers=2, timeout_s=30, memory_gb=1.5)
    report = add_paths(catalog, workspace, [batch / "a-good.svs", batch / "b-segv.svs", batch / "e-good.svs"],
                       limits=limits, jobs=jobs)
    assert [r.outcome for r in report.results] == ["added", "failed", "added"]
    rows = slide_rows(catalog)
    assert rows["b-segv.svs"].status == FAILED
    assert rows["b-segv.svs"].reason == "the reader crashed: signal 11 (SIGSEGV)"
    assert rows["a-good.svs"].status == READY and rows["e-good.svs"].status == READY
    assert patch_count(catalog, rows["e-good.svs"].id) > 20

    started = time.monotonic()
    report = add_paths(catalog, workspace, [batch / "c-hang.svs"], jobs=SlideJobs(examine=hang_on_hang_name),
                       limits=ReaderLimits(workers=1, timeout_s=4))
    assert time.monotonic() - started < 30
    assert slide_rows(catalog)["c-hang.svs"].reason == "timed out after 4 s"

    report = add_paths(catalog, workspace, [batch / "d-greedy.svs", batch / "e-good.svs"],
                       jobs=SlideJobs(examine=allocate_on_greedy_name), limits=ReaderLimits(workers=1, memory_gb=1.5))
    greedy = slide_rows(catalog)["d-greedy.svs"]
    assert greedy.status == FAILED and greedy.reason.startswith("out of memory"), greedy.reason
    assert "1.5 GB" in greedy.reason
    assert [r.outcome for r in report.results] == ["failed", "unchanged"]  # the parent lived on


def test_damaged_headers_fail_with_the_reason(catalog, workspace, real_slides, tmp_path):
    cmu = real_slides / CMU
    files = [
        set_size(cmu, tmp_path / "phantom-size.svs", 38_528, 38_528),
        zero_tile_bytecounts(cmu, tmp_path / "zeroed-tiles.svs"),
        truncate(cmu, tmp_path / "truncated.svs", 0.7),  # level 0 whole, the images after it cut off
        truncate(cmu, tmp_path / "truncated-level0.svs", 0.5),
    ]
    (tmp_path / "empty.svs").write_bytes(b"")
    files.append(tmp_path / "empty.svs")
    report = add_paths(catalog, workspace, files)
    assert [r.outcome for r in report.results] == ["failed"] * 5
    rows = slide_rows(catalog)
    assert rows["phantom-size.svs"].reason == ("image 0 declares 38,528 x 38,528 px (25,921 tiles) but holds 130 "
                                               "tiles: the header is damaged")
    assert "130 of 130 tiles hold no data" in rows["zeroed-tiles.svs"].reason
    assert rows["empty.svs"].reason == "empty file (0 bytes)"
    assert rows["truncated.svs"].reason == ("truncated or damaged file: its chain of images points to offset "
                                            "1474362, past its end (1,357,268 bytes)")
    assert rows["truncated-level0.svs"].reason.startswith("truncated file: ")
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Patch)) == 0


def test_unreadable_or_blank_tissue_is_never_ready(catalog, workspace, real_slides, demo_cohort, tmp_path):
    import tifffile

    from slide_mutations import redirect_tiles, scramble_tiles, tile_table

    # A pyramid whose level-0 tiles under the tissue read back as glass (their table entries point at
    # a glass tile), while the level the thumbnail comes from still shows the tissue.
    good = tmp_path / "good.tiff"
    shutil.copyfile(demo_cohort / "demo-000.tiff", good)
    add_paths(catalog, workspace, [good])
    with catalog.session() as session:
        good_row = session.scalar(select(Slide).where(Slide.name == "good.tiff"))
        positions = session.execute(select(Patch.x, Patch.y, Patch.size).where(Patch.slide_id == good_row.id)).all()
    with tifffile.TiffFile(good) as tif:
        page = tif.pages[0]
        tile, cols, n_tiles = page.tilewidth, -(-page.imagewidth // page.tilewidth), len(page.dataoffsets)
    under_tissue = sorted({(y + dy) // tile * cols + (x + dx) // tile for x, y, size in positions
                           for dx in (0, size - 1) for dy in (0, size - 1)})
    glass = next(i for i in range(n_tiles) if i not in under_tissue)
    blank = redirect_tiles(good, tmp_path / "blank-tissue.tiff", under_tissue, to=glass)
    # Level-0 tiles garbage but for the first, middle and last: reading three patches could miss it.
    keep = (0, n_tiles // 2, n_tiles - 1)
    scrambled = scramble_tiles(good, tmp_path / "scrambled.tiff", [i for i in range(n_tiles) if i not in keep])
    # A single-level slide's thumbnail is its level 0: damage there shows while the thumbnail is read.
    cmu = real_slides / CMU
    scrambled_svs = scramble_tiles(cmu, tmp_path / "scrambled.svs", list(range(len(tile_table(cmu)[0]))))

    report = add_paths(catalog, workspace, [scrambled, blank, scrambled_svs])
    assert [r.outcome for r in report.results] == ["failed", "failed", "failed"]
    rows = slide_rows(catalog)
    sampled = min(len(positions), max(16, int(np.ceil(np.sqrt(len(positions))))))
    assert rows["scrambled.tiff"].reason.startswith(f"{sampled} of {sampled} sampled tissue patches cannot be read: "
                                                    "corrupt tile data")
    assert rows["scrambled.svs"].reason.startswith("corrupt tile data: pixels cannot be read (Corrupt JPEG data")
    assert rows["blank-tissue.tiff"].reason == (f"{sampled} of {sampled} sampled tissue patches are blank glass where "
                                                "the thumbnail shows tissue: the full-resolution tile data is missing or "
                                                "damaged")
    for name in ("scrambled.tiff", "blank-tissue.tiff", "scrambled.svs"):
        assert patch_count(catalog, rows[name].id) == 0


def test_a_moved_file_is_accepted_only_when_its_pixels_read(catalog, workspace, demo_cohort, tmp_path):
    from slide_mutations import scramble_tiles, tile_table

    demo = demo_cohort / "demo-001.tiff"
    first = tmp_path / "first.tiff"
    shutil.copyfile(demo, first)
    add_paths(catalog, workspace, [first])
    # A catalog written before the sampled hash knew this slide by OpenSlide's quickhash alone, which
    # a copy with damaged level-0 tiles shares (for a generic TIFF it covers the smallest level only).
    with catalog.session() as session:
        row = session.scalar(select(Slide))
        row.content_hash = row.content_hash.split("+")[0]
        slide_id, n_patches = row.id, patch_count(catalog, row.id)
        patch = session.scalar(select(Patch).where(Patch.slide_id == row.id))
        session.add(Review(patch_id=patch.id, verdict="lesion", reviewer="test"))
    first.unlink()
    damaged = scramble_tiles(demo, tmp_path / "damaged-copy.tiff", list(range(len(tile_table(demo)[0]))))
    report = add_paths(catalog, workspace, [damaged])
    assert report.results[0].outcome == "failed"
    rows = slide_rows(catalog)
    assert "sampled tissue patches cannot be read" in rows["damaged-copy.tiff"].reason
    assert rows["first.tiff"].id == slide_id  # the known slide waits for its real file, reviews intact
    assert patch_count(catalog, slide_id) == n_patches

    intact = tmp_path / "moved" / "first.tiff"
    intact.parent.mkdir()
    shutil.copyfile(demo, intact)
    report = add_paths(catalog, workspace, [intact])
    assert report.results[0].outcome == "moved" and report.results[0].slide_id == slide_id
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1
