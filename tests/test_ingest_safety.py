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
from PIL import Image, ImageDraw
from sqlalchemy import func, select

from slide_mutations import set_size, set_tag, truncate, zero_tile_bytecounts
from wsireview.catalog import FAILED, READY, Patch, Review, Slide
from wsireview.ingest import SlideJobs, add_paths
from wsireview.slides import examine as real_jobs
from wsireview.slides.isolated import ReaderLimits

CMU = "cmu-1-small-region.svs"
# Tests about what ingest decides (not about isolating the reader) read in process: no worker start-up.
IN_PROCESS = ReaderLimits(workers=0)


# -- test doubles: the real jobs, except on files whose name asks for trouble (module level: they
# run in spawned worker processes, which import this module) ----------------------------------------

def misbehave_by_name(path: Path, options):
    """The real ``examine``, except on a file named to segfault, hang or allocate 4 GB."""
    if "segv" in path.name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in path.name:
        time.sleep(600)
    if "greedy" in path.name:
        hog = np.ones(int(4e9), dtype=np.uint8)  # above the worker's address-space limit
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
    limits = ReaderLimits(workers=2, timeout_s=5, memory_gb=1.5)
    started = time.monotonic()
    report = add_paths(catalog, workspace, [batch], limits=limits, jobs=SlideJobs(examine=misbehave_by_name))
    assert time.monotonic() - started < 60  # the hang was cut at 5 s
    assert [r.outcome for r in report.results] == ["added", "failed", "failed", "failed", "added"]
    rows = slide_rows(catalog)
    assert rows["b-segv.svs"].status == FAILED
    assert rows["b-segv.svs"].reason == "the reader crashed: signal 11 (SIGSEGV)"
    assert rows["c-hang.svs"].reason == "timed out after 5 s"
    assert rows["d-greedy.svs"].reason == "out of memory: reading it needs more than 1.5 GB"
    assert rows["a-good.svs"].status == READY and rows["e-good.svs"].status == READY
    assert patch_count(catalog, rows["e-good.svs"].id) > 20

    # The crash is recorded: a second run goes through the same file again, to the end of the batch.
    again = [batch / "b-segv.svs", batch / "e-good.svs"]
    report = add_paths(catalog, workspace, again, limits=limits, jobs=SlideJobs(examine=misbehave_by_name))
    assert [r.outcome for r in report.results] == ["failed", "unchanged"]


def test_damaged_headers_fail_with_the_reason(catalog, workspace, real_slides, tmp_path):
    cmu = real_slides / CMU
    files = [
        set_size(cmu, tmp_path / "phantom-size.svs", 38_528, 38_528),
        zero_tile_bytecounts(cmu, tmp_path / "zeroed-tiles.svs"),
        truncate(cmu, tmp_path / "truncated.svs", 0.7),  # level 0 whole, the images after it cut off
        truncate(cmu, tmp_path / "truncated-level0.svs", 0.5),
        # One flipped bit made a tile 33 million px tall: OpenSlide asked GLib for 34 GB and aborted.
        set_tag(cmu, tmp_path / "tall-tiles.svs", "TileLength", 65_520),
    ]
    (tmp_path / "empty.svs").write_bytes(b"")
    files.append(tmp_path / "empty.svs")
    report = add_paths(catalog, workspace, files)
    assert [r.outcome for r in report.results] == ["failed"] * 6
    rows = slide_rows(catalog)
    assert rows["phantom-size.svs"].reason == ("image 0 declares 38,528 x 38,528 px (25,921 tiles) but holds 130 "
                                               "tiles: the header is damaged")
    assert "130 of 130 tiles hold no data" in rows["zeroed-tiles.svs"].reason
    assert rows["tall-tiles.svs"].reason == ("image 0 declares tiles of 240 x 65,520 px, larger than any scanner "
                                             "writes (over 16,384 px a side): the header is damaged")
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
    add_paths(catalog, workspace, [good], limits=IN_PROCESS)
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

    report = add_paths(catalog, workspace, [scrambled, blank, scrambled_svs], limits=IN_PROCESS)
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
    add_paths(catalog, workspace, [first], limits=IN_PROCESS)
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
    report = add_paths(catalog, workspace, [damaged], limits=IN_PROCESS)
    assert report.results[0].outcome == "failed"
    rows = slide_rows(catalog)
    assert "sampled tissue patches cannot be read" in rows["damaged-copy.tiff"].reason
    assert rows["first.tiff"].id == slide_id  # the known slide waits for its real file, reviews intact
    assert patch_count(catalog, slide_id) == n_patches

    intact = tmp_path / "moved" / "first.tiff"
    intact.parent.mkdir()
    shutil.copyfile(demo, intact)
    report = add_paths(catalog, workspace, [intact], limits=IN_PROCESS)
    assert report.results[0].outcome == "moved" and report.results[0].slide_id == slide_id
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1


def test_two_dicom_series_in_one_folder_are_two_slides(catalog, workspace, real_slides, tmp_path):
    from dicom_slides import two_series_folder
    from wsireview.ingest import discover
    from wsireview.slides.reader import SlideFile

    with SlideFile(real_slides / CMU) as cmu:
        tissue = np.asarray(cmu.read_region(600, 900, 1024, 1024))  # real tissue, level 0
    files = two_series_folder(tmp_path / "dicom", tissue)
    # A second instance (a coarser level) of the first series: part of the same slide.
    import pydicom

    from dicom_slides import write_series

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    write_series(tmp_path / "dicom" / "series-0-level1.dcm", tissue[::4, ::4][:128, :128], first.SeriesInstanceUID,
                 first.StudyInstanceUID, first.FrameOfReferenceUID)
    assert discover([tmp_path / "dicom"]) == files
    report = add_paths(catalog, workspace, [tmp_path / "dicom"], limits=IN_PROCESS)
    assert [r.outcome for r in report.results] == ["added", "added"]
    rows = slide_rows(catalog)
    assert {name for name in rows} == {"series-0.dcm", "series-1.dcm"}
    for name in rows:
        assert rows[name].vendor == "dicom" and (rows[name].width, rows[name].height) == (512, 512)
        assert rows[name].mpp_x == pytest.approx(0.5)
    # Each slide shows its own series: different tissue, different content.
    assert rows["series-0.dcm"].content_hash != rows["series-1.dcm"].content_hash
    assert patch_count(catalog, rows["series-0.dcm"].id) + patch_count(catalog, rows["series-1.dcm"].id) > 0


def test_changed_grid_options_are_noticed_and_retile_keeps_reviewed_squares(catalog, workspace, real_slides,
                                                                              tmp_path):
    slide = tmp_path / "cmu.svs"
    shutil.copyfile(real_slides / CMU, slide)
    add_paths(catalog, workspace, [slide], limits=IN_PROCESS)
    with catalog.session() as session:
        row = session.scalar(select(Slide))
        before = {(p.x, p.y): p.id for p in session.scalars(select(Patch).where(Patch.slide_id == row.id))}
        reviewed = min(before.values())
        session.add(Review(patch_id=reviewed, verdict="lesion", reviewer="test"))
    assert row.min_tissue == 0.5 and row.patch_count == len(before)  # the count the slides screen shows

    # Other options on a known slide: the grid is kept, and the result says so.
    report = add_paths(catalog, workspace, [slide], min_tissue=0.2, limits=IN_PROCESS)
    result = report.results[0]
    assert result.outcome == "unchanged" and result.patches == len(before)
    assert "kept its grid (224 px at 0.5 µm/px, 50% tissue), not the 224 px at 0.5 µm/px, 20% tissue asked for: " \
           "add --retile to cut a new grid" in result.warning

    # Re-tiled with a lower tissue share: the same squares keep their ids (and the review), more join.
    report = add_paths(catalog, workspace, [slide], min_tissue=0.2, retile=True, limits=IN_PROCESS)
    assert report.results[0].outcome == "added"
    with catalog.session() as session:
        after = {(p.x, p.y): p.id for p in session.scalars(select(Patch).where(Patch.slide_id == row.id))}
        assert session.get(Slide, row.id).min_tissue == 0.2
        assert session.get(Slide, row.id).patch_count == len(after)
        assert session.scalar(select(func.count()).select_from(Review)) == 1
    assert len(after) > len(before)
    assert all(after[xy] == pid for xy, pid in before.items())

    # A grid of smaller patches would drop the reviewed patch: refused, the old grid stays.
    report = add_paths(catalog, workspace, [slide], patch_size=112, retile=True, limits=IN_PROCESS)
    result = report.results[0]
    assert result.outcome == "unchanged" and "1 reviewed patch would leave the grid" in result.warning
    with catalog.session() as session:
        assert {(p.x, p.y): p.id for p in session.scalars(select(Patch).where(Patch.slide_id == row.id))} == after
        assert session.get(Slide, row.id).patch_size_px == 224
        assert session.get(Slide, row.id).patch_count == len(after)


def whole_level_thumbnail(path: Path):
    """The thumbnail as OpenSlide makes it: the best level read whole (the way ingest used to)."""
    import openslide

    return openslide.OpenSlide(str(path)).get_thumbnail((1024, 1024)).size


def test_a_large_single_level_slide_is_thumbnailed_within_the_memory_limit(catalog, workspace, real_slides, tmp_path):
    from slide_mutations import large_single_level
    from wsireview.slides.isolated import JobFailed, ReaderPool
    from wsireview.slides.reader import SlideFile

    with SlideFile(real_slides / CMU) as cmu:
        tissue = np.asarray(cmu.read_region(512, 1024, 1024, 1024))
    big = large_single_level(tissue, tmp_path / "large.tiff", side=8192)  # 67 Mpx, 268 MB as RGBA
    # A worker holds about 0.4 GB once it has imported its readers; 0.75 GB leaves less than the
    # level needs whole (plus its RGB copy), and far more than a region at a time needs.
    limits = ReaderLimits(workers=1, memory_gb=0.75, timeout_s=120)
    with ReaderPool(limits) as pool:  # read whole, the level alone fills the limit
        pool.submit("whole", whole_level_thumbnail, big)
        [(_, outcome)] = list(pool.results())
    assert isinstance(outcome, JobFailed), outcome

    report = add_paths(catalog, workspace, [big], limits=limits)
    assert report.results[0].outcome == "added", report.results[0].reason
    row = slide_rows(catalog)["large.tiff"]
    assert row.level_count == 1 and row.width == 8192
    # The tissue band is the middle third of the slide, and the thumbnail shows it there.
    from PIL import Image

    mask = np.asarray(Image.open(workspace.absolute(row.mask_path))) > 0
    assert mask.shape == (1024, 1024)
    rows_with_tissue = np.flatnonzero(mask.mean(axis=1) > 0.2)
    assert 300 < rows_with_tissue.min() and rows_with_tissue.max() < 700
    assert patch_count(catalog, row.id) > 200


def test_labels_csv_in_latin1_or_binary_is_refused_with_one_line(tmp_path):
    from wsireview.ingest import LabelsError, read_labels

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("slide,label\nbiopsie-é.svs,lésion\n".encode("latin-1"))
    with pytest.raises(LabelsError, match=r"latin1.csv: not UTF-8 text \(byte 0xe9 at offset 20\): save it as a UTF-8 CSV"):
        read_labels(latin1)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"slide,label\nx\x00y,lesion\n")
    with pytest.raises(LabelsError, match=r"binary.csv: not a CSV text file \(it holds NUL bytes: a binary file\)"):
        read_labels(binary)


def test_a_slide_unreadable_in_embed_is_marked_failed(catalog, workspace, real_slides, tmp_path):
    from slide_mutations import scramble_tiles, tile_table
    from wsireview.features.embed import embed_slides

    slide = tmp_path / "cmu.svs"
    shutil.copyfile(real_slides / CMU, slide)
    add_paths(catalog, workspace, [slide], limits=ReaderLimits(workers=0))
    scramble_tiles(real_slides / CMU, slide, list(range(len(tile_table(real_slides / CMU)[0]))))  # damaged later
    report = embed_slides(catalog, workspace, encoder="stain-stats")
    assert [r.outcome for r in report.results] == ["failed"]
    row = slide_rows(catalog)["cmu.svs"]
    assert row.status == FAILED and row.reason.startswith("unreadable while embedding: corrupt tile data")
    assert patch_count(catalog, row.id) > 0  # its patches (and any reviews) stay


def test_a_full_disk_stops_the_batch_with_one_line_and_fails_no_slide(catalog, workspace, real_slides, tmp_path,
                                                                      monkeypatch, capsys):
    import errno

    import wsireview.ingest as ingest
    from wsireview.cli import main

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingest, "_write_images", full_disk)
    code = main(["--workspace", str(workspace.root), "add", "--workers", "0", str(real_slides / CMU)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"the disk holding the workspace {workspace.root} is full: free some space and run add again" in err
    assert "Traceback" not in err
    assert not any(row.status == FAILED for row in slide_rows(catalog).values())  # the slide is not to blame


def test_names_with_markup_or_terminal_escapes_are_shown_literally(real_slides, tmp_path, capsys):
    from wsireview.cli import main

    folder = tmp_path / "in [" / "] here"  # a path holding "[/]"
    folder.mkdir(parents=True)
    odd = [folder / "a[reverse]b.svs", folder / "x\x1b]0;PWNED\x07y.svs"]
    for path in odd:
        shutil.copyfile(real_slides / "tiny-aperio.svs", path)
    odd[1].write_bytes(odd[1].read_bytes() + b"\0")  # not a duplicate of the first
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "add", "--workers", "0", str(folder)]) == 0
    assert main(["--workspace", str(ws), "status"]) == 0
    out = capsys.readouterr().out
    assert "a[reverse]b.svs" in out and "x\\x1b]0;PWNED\\x07y.svs" in out
    assert "\x1b]0;" not in out and "\x07" not in out


def test_retile_command_recuts_named_slides_and_refuses_one_that_would_drop_reviews(workspace, real_slides,
                                                                                   tmp_path, capsys):
    from wsireview.catalog import open_catalog
    from wsireview.cli import main

    slides = []
    for name in ("a.svs", "b.svs"):
        slides.append(tmp_path / name)
        shutil.copyfile(real_slides / CMU, slides[-1])
    ws = ["--workspace", str(workspace.root)]
    assert main(ws + ["add", "--workers", "0", str(slides[0]), str(slides[1])]) == 0
    catalog = open_catalog(workspace.db_url)
    with catalog.session() as session:
        ids = {s.name: s.id for s in session.scalars(select(Slide))}
        b_before = {(p.x, p.y): p.id for p in session.scalars(select(Patch).where(Patch.slide_id == ids["b.svs"]))}
        session.add(Review(patch_id=min(b_before.values()), verdict="lesion", reviewer="test"))

    # Only the named slide gets the new grid; the other keeps its own.
    assert main(ws + ["retile", "a.svs", "--min-tissue", "0.2", "--workers", "0"]) == 0
    with catalog.session() as session:
        assert session.get(Slide, ids["a.svs"]).min_tissue == 0.2
        assert session.get(Slide, ids["b.svs"]).min_tissue == 0.5

    # Every ready slide: a.svs takes smaller patches, b.svs is refused (a reviewed patch would go).
    capsys.readouterr()
    assert main(ws + ["retile", "--patch-size", "112", "--workers", "0"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "1 reviewed patch would leave the grid" in out, out
    with catalog.session() as session:
        assert session.get(Slide, ids["a.svs"]).patch_size_px == 112
        assert session.get(Slide, ids["b.svs"]).patch_size_px == 224
        b_after = {(p.x, p.y): p.id for p in session.scalars(select(Patch).where(Patch.slide_id == ids["b.svs"]))}
    assert b_after == b_before

    assert main(ws + ["retile", "nope.svs"]) == 1
    assert "not in the catalog: nope.svs" in capsys.readouterr().err


def test_round_refuses_mixed_grids_unless_told(catalog, workspace, real_slides, tmp_path):
    from wsireview.learn.round import NothingToLearn, retrain
    from wsireview.learn.spec import RoundSpec
    from wsireview.status import MixedGrids

    add_paths(catalog, workspace, [real_slides / CMU], limits=IN_PROCESS)
    add_paths(catalog, workspace, [real_slides / "tiny-aperio.svs"], patch_size=112, limits=IN_PROCESS)
    spec = RoundSpec(encoder="stain-stats", budget=0, seed=0)
    with pytest.raises(MixedGrids, match=r"\(1 at 112 px / 0.5 µm/px, 1 at 224 px / 0.5 µm/px\)"):
        retrain(catalog, workspace, spec)
    # Told to mix: the round goes on (here to its next refusal: no slide has a label).
    with pytest.raises(NothingToLearn):
        retrain(catalog, workspace, spec, mixed_grids=True)


def test_a_different_file_at_a_catalogued_path_never_inherits_its_reviews(catalog, workspace, demo_cohort, tmp_path):
    """A reviewed slide whose file is replaced by another slide is failed with what to do, its
    reviews and patches kept, until the original is put back; an unreviewed one is catalogued anew
    (old patches and label dropped, said so); a file that comes back different is not made ready
    by the missing-file check either."""
    from wsireview.learn.reviews import record_verdict
    from wsireview.status import mark_missing

    folder = tmp_path / "cases"
    folder.mkdir()
    reviewed, unreviewed = folder / "reviewed.tiff", folder / "unreviewed.tiff"
    shutil.copy(demo_cohort / "demo-000.tiff", reviewed)
    shutil.copy(demo_cohort / "demo-001.tiff", unreviewed)
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,label\nreviewed.tiff,lesion\nunreviewed.tiff,normal\n")
    add_paths(catalog, workspace, [folder], labels_csv=labels, limits=IN_PROCESS)
    before = slide_rows(catalog)
    ids = {name: before[name].id for name in before}
    old_patches = {name: patch_count(catalog, ids[name]) for name in ids}
    with catalog.session() as session:
        patch_id = session.scalars(select(Patch.id).where(Patch.slide_id == ids["reviewed.tiff"])).first()
    record_verdict(catalog, patch_id, "lesion", "alice")

    shutil.copy(demo_cohort / "demo-002.tiff", reviewed)
    shutil.copy(demo_cohort / "demo-003.tiff", unreviewed)
    report = add_paths(catalog, workspace, [folder], limits=IN_PROCESS)
    outcome = {r.path.name: r for r in report.results}
    assert outcome["reviewed.tiff"].outcome == FAILED
    assert outcome["reviewed.tiff"].reason.startswith("not the file that was catalogued at this path")
    assert "1 review belong to the original's pixels" in outcome["reviewed.tiff"].reason
    assert "put the original file back" in outcome["reviewed.tiff"].reason
    assert outcome["unreviewed.tiff"].outcome == "added"
    assert outcome["unreviewed.tiff"].warning.startswith(
        f"not the file that was catalogued at this path (its content changed): catalogued anew, the old "
        f"{old_patches['unreviewed.tiff']} patches and its label 'normal' dropped")
    rows = slide_rows(catalog)
    assert rows["reviewed.tiff"].status == FAILED and rows["reviewed.tiff"].label == "lesion"
    assert patch_count(catalog, ids["reviewed.tiff"]) == old_patches["reviewed.tiff"]
    assert rows["unreviewed.tiff"].status == READY and rows["unreviewed.tiff"].label is None
    assert rows["unreviewed.tiff"].id == ids["unreviewed.tiff"]
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1
        new_grid = session.scalars(select(Patch.x).where(Patch.slide_id == ids["unreviewed.tiff"])).all()
    assert patch_count(catalog, ids["unreviewed.tiff"]) == len(new_grid) != old_patches["unreviewed.tiff"]
    # Refused again on every run; the original back is accepted as it was, its review on its patch.
    assert add_paths(catalog, workspace, [reviewed], limits=IN_PROCESS).results[0].outcome == FAILED
    shutil.copy(demo_cohort / "demo-000.tiff", reviewed)
    assert add_paths(catalog, workspace, [reviewed], limits=IN_PROCESS).results[0].outcome == "added"
    assert slide_rows(catalog)["reviewed.tiff"].status == READY
    with catalog.session() as session:
        assert session.scalar(select(Review.patch_id)) == patch_id
        assert session.get_one(Patch, patch_id).slide_id == ids["reviewed.tiff"]
    # Gone, then back as another file: the missing-file check does not make it ready.
    reviewed.unlink()
    mark_missing(catalog)
    assert slide_rows(catalog)["reviewed.tiff"].status == "missing"
    shutil.copy(demo_cohort / "demo-004.tiff", reviewed)
    mark_missing(catalog)
    row = slide_rows(catalog)["reviewed.tiff"]
    assert row.status == FAILED and "not the one catalogued" in row.reason
    shutil.copy(demo_cohort / "demo-000.tiff", reviewed)
    reviewed.unlink()
    mark_missing(catalog)
    shutil.copy(demo_cohort / "demo-000.tiff", reviewed)
    mark_missing(catalog)  # the same bytes back: ready again, as before
    assert slide_rows(catalog)["reviewed.tiff"].status == READY


def test_declared_sizes_of_png_jpeg_and_dicom_are_checked_against_their_bytes(catalog, workspace, real_slides,
                                                                              tmp_path):
    """Headers of plain images and DICOM declaring more pixels than their bytes can hold fail with
    that reason; the same files undamaged are added."""
    import struct
    import zlib

    import pydicom
    from pydicom.uid import generate_uid

    from dicom_slides import write_series
    from wsireview.slides.reader import SlideFile

    with SlideFile(real_slides / CMU) as cmu:
        tissue = np.asarray(cmu.read_region(0, 1024, 1024, 1024))
    good = {"good.jpg": tmp_path / "good.jpg", "good.png": tmp_path / "good.png"}
    Image.fromarray(tissue).save(good["good.jpg"], quality=90)
    Image.fromarray(tissue).save(good["good.png"])
    jpeg = bytearray(good["good.jpg"].read_bytes())
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 40_000, 40_000)  # height, width
    (tmp_path / "tall.jpg").write_bytes(jpeg)
    png = bytearray(good["good.png"].read_bytes())
    png[16:24] = struct.pack(">II", 40_000, 40_000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))  # a valid header chunk, lying
    (tmp_path / "tall.png").write_bytes(png)
    dicom = write_series(tmp_path / "good.dcm", tissue[:512, :512], generate_uid(), generate_uid(), generate_uid())
    ds = pydicom.dcmread(dicom)
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = 5120
    (tmp_path / "few-frames").mkdir()
    ds.save_as(tmp_path / "few-frames" / "few-frames.dcm", enforce_file_format=True)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cut.dcm").write_bytes(dicom.read_bytes()[:dicom.stat().st_size // 3])
    damaged = [tmp_path / "tall.jpg", tmp_path / "tall.png", tmp_path / "few-frames" / "few-frames.dcm",
               tmp_path / "cut" / "cut.dcm"]
    report = add_paths(catalog, workspace, [*good.values(), dicom, *damaged], limits=IN_PROCESS)
    outcome = {r.path.name: r for r in report.results}
    assert [outcome[n].outcome for n in ("good.jpg", "good.png", "good.dcm")] == ["added"] * 3
    reasons = {p.name: outcome[p.name].reason for p in damaged}
    assert {outcome[p.name].outcome for p in damaged} == {FAILED}
    assert reasons["tall.jpg"].startswith("the header declares 40,000 x 40,000 px but the JPEG holds ")
    assert reasons["tall.jpg"].endswith("fewer than any encoding of that many pixels needs (over 1,024 px a byte): "
                                        "the header is damaged or the file truncated")
    assert reasons["tall.png"].startswith("the header declares 40,000 x 40,000 px (4,800,040,000 bytes of rows) "
                                          "but the PNG holds ")
    assert reasons["few-frames.dcm"] == ("the header declares 5,120 x 5,120 px in 128 x 128 px tiles (1,600 tiles) "
                                         "but holds 16 frames: the header is damaged")
    assert reasons["cut.dcm"].startswith("truncated file: its 16 frames of 128 x 128 px need 786,432 bytes "
                                         "uncompressed but it holds ")


def test_a_large_plain_jpeg_is_reduced_as_it_is_decoded_and_one_too_large_refused(tmp_path):
    """A 20,000 x 20,000 px JPEG (400 MB decoded, 1.6 GB as OpenSlide's plain-image thumbnail copies
    it) is added by a reader limited to 2 GB, its thumbnail decoded at 1/8 scale; with 0.5 GB the
    same file is refused, before it is decoded, with the reason and what to do."""
    from wsireview.catalog import open_catalog
    from wsireview.workspace import Workspace

    big = tmp_path / "big.jpg"
    image = Image.new("L", (20_000, 20_000), 250)
    ImageDraw.Draw(image).ellipse((5_000, 6_000, 14_000, 12_000), fill=90)
    image.save(big, quality=50)
    del image
    outcomes = []
    for name, limits in (("roomy", ReaderLimits(workers=1, memory_gb=2)), ("tight", ReaderLimits(workers=1, memory_gb=0.5))):
        ws = Workspace.resolve(tmp_path / name).ensure()
        cat = open_catalog(ws.db_url)
        try:
            outcomes.append(add_paths(cat, ws, [big], limits=limits).results[0])
            thumb = ws.thumbs / "slide-1.png"
            if outcomes[-1].outcome == "added":
                with Image.open(thumb) as shown:
                    assert shown.size == (1024, 1024)
                    dark = np.asarray(shown.convert("L")) < 170
                # the disc, where it is: 9,000 x 6,000 px of 20,000 px at 1024 px a side
                assert abs(dark.mean() - np.pi / 4 * 0.45 * 0.30) < 0.01
                assert dark[460, 487] and not dark[100, 100]
        finally:
            cat.close()
    roomy, tight = outcomes
    assert roomy.outcome == "added", roomy.reason
    assert tight.outcome == FAILED
    assert tight.reason == ("a plain JPEG of 20,000 x 20,000 px is decoded whole to read any part of it (0.373 GB), "
                            "more than the 0.25 GB a reader may use: convert it to a tiled pyramidal TIFF (e.g. "
                            "`vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg`) and add that")


def test_a_damaged_but_plausible_mpp_is_flagged_and_the_grid_follows_the_objective(catalog, workspace, real_slides,
                                                                                   demo_cohort, tmp_path, capsys):
    """cmu-1 with its Aperio MPP damaged from 0.499 to 4.99 µm/px (still plausible for a microscope,
    but 10x from its 20x objective): added with a warning naming both values, in `add` and `status`,
    and cut into the same grid as the intact file. The real slides and the demo cohort raise no flag."""
    from wsireview.cli import main
    from wsireview.slides.reader import SlideFile, judge_mpp

    damaged = tmp_path / "damaged-mpp.svs"
    damaged.write_bytes((real_slides / CMU).read_bytes().replace(b"MPP = 0.4990", b"MPP = 4.9900"))
    report = add_paths(catalog, workspace, [real_slides / CMU, damaged], limits=IN_PROCESS)
    intact, flagged = report.results
    assert intact.outcome == flagged.outcome == "added"
    assert intact.warning is None
    assert flagged.warning == ("patch size from objective-power: recorded mpp 4.99 µm/px disagrees with the "
                               "objective power 20x (about 0.5 µm/px): one of them is damaged; sizes follow the "
                               "objective; check the file")
    rows = slide_rows(catalog)
    assert rows["damaged-mpp.svs"].mpp_x == 4.99  # what the file says is kept, and not used
    assert rows["damaged-mpp.svs"].patch_size_level0 == 224 and rows[CMU].patch_size_level0 == 224  # 224 at 0.499
    assert flagged.patches == intact.patches > 20
    capsys.readouterr()
    assert main(["--workspace", str(workspace.root), "status"]) == 0
    assert "disagrees with the objective power 20x" in capsys.readouterr().out.replace("\n", " ")
    for path in [*sorted(real_slides.glob("*.svs")), *sorted(real_slides.glob("*.tif*")),
                 *sorted(demo_cohort.glob("*.tiff"))]:
        try:
            with SlideFile(path) as slide:
                level0, _, note = judge_mpp(slide.mpp_x, slide.objective_power, slide.dimensions)
        except Exception:
            continue  # the deliberately broken files
        assert note is None or "implausible" in note, (path.name, note)  # boxes-pyramid's 72 dpi
