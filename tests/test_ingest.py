"""Ingest on the real slides in tests/data/slides: metadata, masks, patch grid, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from wsireview.catalog import FAILED, MISSING, READY, Patch, Slide
from wsireview.ingest import LabelsError, add_paths

BROKEN = {
    "unreadable-tile.svs": "corrupt tile data",
    "unsupported-compression.tiff": "unsupported compression",
    "corrupt-truncated.svs": "not a slide",
}


def slide_by_name(catalog, name: str) -> Slide:
    with catalog.session() as session:
        return session.scalar(select(Slide).where(Slide.name == name))


def patches_of(catalog, slide_id: int) -> list[Patch]:
    with catalog.session() as session:
        return list(session.scalars(select(Patch).where(Patch.slide_id == slide_id)))


@pytest.fixture(scope="module")
def real(real_slides, tmp_path_factory):
    """All the real slides ingested once for this module: (report, catalog, workspace)."""
    from wsireview.catalog import open_catalog
    from wsireview.workspace import Workspace

    ws = Workspace.resolve(tmp_path_factory.mktemp("real") / "ws").ensure()
    cat = open_catalog(ws.db_url)
    report = add_paths(cat, ws, [real_slides])
    yield report, cat, ws
    cat.close()


def test_svs_metadata_mask_and_grid(real):
    _, catalog, workspace = real
    slide = slide_by_name(catalog, "cmu-1-small-region.svs")
    assert slide.status == READY
    assert (slide.width, slide.height) == (2220, 2967)
    assert slide.mpp_x == pytest.approx(0.499)
    assert slide.vendor == "aperio"
    assert slide.objective_power == 20
    assert slide.resolution_source == "mpp"
    assert slide.content_hash.startswith("quickhash1:")
    # 224 px at 0.5 µm/px on a 0.499 µm/px scan is 224 level-0 px.
    assert slide.patch_size_level0 == 224
    # The tissue strip fills about a third of the field (looked at: the overlay PNG).
    assert 0.2 < slide.tissue_fraction < 0.45

    thumb = Image.open(workspace.absolute(slide.thumbnail_path))
    assert max(thumb.size) == 1024
    mask = np.asarray(Image.open(workspace.absolute(slide.mask_path))) > 0
    assert mask.shape == (thumb.size[1], thumb.size[0])
    assert mask.mean() == pytest.approx(slide.tissue_fraction, abs=1e-6)
    # Tissue is stained (saturated) and background is bright glass.
    rgb = np.asarray(thumb.convert("RGB")).astype(float)
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    assert sat[mask].mean() > 3 * sat[~mask].mean()

    patches = patches_of(catalog, slide.id)
    # A 2220 x 2967 field holds 9 x 13 = 117 non-overlapping 224 px cells; about a third is tissue.
    assert 25 <= len(patches) <= 70
    scale = mask.shape[1] / slide.width
    for p in patches:
        assert p.size == 224
        assert 0 <= p.x and p.x + p.size <= slide.width and 0 <= p.y and p.y + p.size <= slide.height
        assert p.tissue_fraction >= 0.5
        cell = mask[int(p.y * scale): int((p.y + p.size) * scale), int(p.x * scale): int((p.x + p.size) * scale)]
        assert cell.mean() >= 0.4  # on tissue, read back from the mask PNG itself


def test_plain_image_fallback_keeps_dust_out(real):
    _, catalog, workspace = real
    slide = slide_by_name(catalog, "kidney-48-5.tif")
    assert slide.status == READY
    assert slide.vendor == "image"
    assert slide.mpp_x is None and slide.objective_power is None  # unknown, never invented
    assert slide.resolution_source == "level0-pixels"
    assert "no mpp" in slide.warning
    # Its patches are sized in level-0 pixels, and the zero-patch warning says so (not "at 0.5 µm/px").
    assert "no 224 px patch of level-0 pixels is 50% tissue" in slide.warning and "µm/px" not in slide.warning
    mask = np.asarray(Image.open(workspace.absolute(slide.mask_path))) > 0
    assert 0.0005 < slide.tissue_fraction < 0.01
    # The tissue is one fragment left of centre; dust, smudges and the fibre elsewhere are not tissue.
    from skimage.measure import label, regionprops

    regions = regionprops(label(mask))
    assert len(regions) == 1
    cy, cx = regions[0].centroid
    h, w = mask.shape
    assert 0.15 * w < cx < 0.3 * w and 0.5 * h < cy < 0.7 * h
    # The grey smudge at the top right and the fibre at the top left are outside the mask.
    assert not mask[: int(0.3 * h)].any()


def test_broken_files_fail_with_specific_reasons(real):
    ingested, catalog, _ = real
    for name, reason in BROKEN.items():
        slide = slide_by_name(catalog, name)
        assert slide.status == FAILED, name
        assert reason in slide.reason, (name, slide.reason)
        assert patches_of(catalog, slide.id) == []
    assert ingested.failed == 3
    assert ingested.count("added") == 4
    ready = {r.path.name for r in ingested.results if r.outcome == "added"}
    assert ready == {"cmu-1-small-region.svs", "kidney-48-5.tif", "boxes-pyramid.tiff", "tiny-aperio.svs"}


def test_zero_patch_slides_say_why(real):
    _, catalog, _ = real
    tiny = slide_by_name(catalog, "tiny-aperio.svs")
    assert tiny.status == READY and patches_of(catalog, tiny.id) == []
    assert "smaller than one patch" in tiny.warning
    boxes = slide_by_name(catalog, "boxes-pyramid.tiff")
    assert boxes.level_count == 4 and boxes.vendor == "generic-tiff"
    assert "implausible" in boxes.warning  # a 72-dpi TIFF default is not a microscope's mpp


def test_status_marks_an_mpp_it_did_not_use(real):
    from wsireview.cli.status_cmd import _mpp_cell
    from wsireview.status import slide_rows

    _, catalog, workspace = real
    rows = {r["name"]: r for r in slide_rows(catalog, workspace)}
    assert _mpp_cell(rows["boxes-pyramid.tiff"]) == "[strike]352.8[/] [dim](not used)[/]"
    assert _mpp_cell(rows["cmu-1-small-region.svs"]) == "0.499"
    assert _mpp_cell(rows["kidney-48-5.tif"]) == "unknown"


def test_idempotent_moved_and_missing(catalog, workspace, real_slides, tmp_path):
    src = tmp_path / "in" / "cmu.svs"
    src.parent.mkdir()
    shutil.copy(real_slides / "cmu-1-small-region.svs", src)
    first = add_paths(catalog, workspace, [src])
    assert [r.outcome for r in first.results] == ["added"]
    with catalog.session() as session:
        n_patches = session.scalar(select(func.count()).select_from(Patch))
        slide_id = session.scalar(select(Slide.id))

    again = add_paths(catalog, workspace, [src.parent])
    assert [r.outcome for r in again.results] == ["unchanged"]
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Slide)) == 1
        assert session.scalar(select(func.count()).select_from(Patch)) == n_patches

    moved = tmp_path / "elsewhere" / "renamed.svs"
    moved.parent.mkdir()
    src.rename(moved)
    report = add_paths(catalog, workspace, [moved])
    assert [r.outcome for r in report.results] == ["moved"]
    slide = slide_by_name(catalog, "renamed.svs")
    assert slide.id == slide_id and slide.path == str(moved) and slide.status == READY
    assert len(patches_of(catalog, slide_id)) == n_patches  # patches (and their reviews) kept

    moved.unlink()
    report = add_paths(catalog, workspace, [])
    assert report.missing == ["renamed.svs"]
    slide = slide_by_name(catalog, "renamed.svs")
    assert slide.status == MISSING and "not found" in slide.reason
    assert len(patches_of(catalog, slide_id)) == n_patches  # marked, never deleted


def test_labels_csv(catalog, workspace, real_slides, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,label\ncmu-1-small-region.svs,lesion\nkidney-48-5,normal\nnot-here.svs,lesion\n")
    report = add_paths(catalog, workspace, [real_slides / "cmu-1-small-region.svs",
                                            real_slides / "kidney-48-5.tif"], labels_csv=labels)
    assert slide_by_name(catalog, "cmu-1-small-region.svs").label == "lesion"
    assert slide_by_name(catalog, "kidney-48-5.tif").label == "normal"
    assert report.unmatched_labels == [(4, "not-here.svs", "lesion")]


def test_labels_csv_checked_before_ingest_empty_cells_kept_and_spellings_flagged(catalog, workspace, demo_cohort,
                                                                               tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("slide;label\ndemo-000.tiff;lesion\n")
    with pytest.raises(LabelsError, match=r"bad.csv:1: .*semicolon"):
        add_paths(catalog, workspace, [demo_cohort / "demo-000.tiff"], labels_csv=bad)
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Slide)) == 0  # refused before any ingest

    first = tmp_path / "first.csv"
    first.write_text("slide,label\ndemo-000.tiff,lesion\ndemo-001.tiff,normal\n")
    add_paths(catalog, workspace, [demo_cohort / "demo-000.tiff", demo_cohort / "demo-001.tiff"], labels_csv=first)
    second = tmp_path / "second.csv"
    second.write_text("demo-000.tiff,\ndemo-001.tiff,Lesion\n")
    report = add_paths(catalog, workspace, [], labels_csv=second)
    assert report.empty_labels == [(1, "demo-000.tiff")]
    assert report.labels_applied == 1
    assert slide_by_name(catalog, "demo-000.tiff").label == "lesion"  # an empty cell never erases a label
    assert report.similar_labels == [("Lesion", "lesion")]


def test_cli_add_json_and_exit_code(tmp_path, real_slides):
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "wsireview", "--workspace", str(ws), "add", "--json",
           str(real_slides / "cmu-1-small-region.svs"), str(real_slides / "corrupt-truncated.svs")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr  # something failed
    doc = json.loads(result.stdout)
    by_name = {s["name"]: s for s in doc["slides"]}
    assert by_name["corrupt-truncated.svs"]["status"] == "failed"
    good = by_name["cmu-1-small-region.svs"]
    for key in ("name", "path", "status", "reason", "width", "height", "mpp", "tissue_fraction",
                "patches", "label", "thumbnail", "mask"):
        assert key in good
    assert good["patches"] > 0 and (ws / "thumbs").is_dir()
    assert doc["totals"]["slides"] == 2 and doc["added"]["failed"] == 1

    status = subprocess.run([sys.executable, "-m", "wsireview", "--workspace", str(ws), "status", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0
    assert json.loads(status.stdout)["totals"]["patches"] == good["patches"]


def test_slide_ids_follow_the_order_of_the_files_whatever_worker_finishes_first(catalog, workspace, real_slides):
    """Two workers finish in any order (the big SVS last); the catalog is written in file order,
    so ids, and every list ordered by id, are the same on every run."""
    files = [real_slides / name for name in
             ("cmu-1-small-region.svs", "boxes-pyramid.tiff", "corrupt-truncated.svs", "kidney-48-5.tif")]
    report = add_paths(catalog, workspace, files)
    assert [r.path.name for r in report.results] == [f.name for f in files]
    with catalog.session() as session:
        names = session.scalars(select(Slide.name).order_by(Slide.id)).all()
    assert names == [f.name for f in files]
