"""`wsireview export`: every format read back with an independent reader and checked against the catalog.

One real slide (cmu-1-small-region.svs) is ingested once per module; three reviewers give verdicts
with agreements, a tie, a disagreement, a change of mind, an abstention and an undone verdict.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
from PIL import Image
from sqlalchemy import func, select, update

from wsireview.catalog import ModelVersion, Patch, Review, Slide, open_catalog
from wsireview.catalog.score_files import write_scores
from wsireview.cli import main
from wsireview.export import ExportError, ExportOptions, Selection, run_export
from wsireview.export import imagefolder
from wsireview.export.naming import anonymous_name, safe_stem
from wsireview.export.selection import Vote, label_patches
from wsireview.files import ordinary_mode
from wsireview.learn.reviews import record_verdict, undo_last
from wsireview.workspace import Workspace

SLIDE = "cmu-1-small-region.svs"
FIXTURES = Path(__file__).parent / "fixtures"
OLD = datetime(2020, 1, 1, tzinfo=timezone.utc)

# (patch index, [(reviewer, verdict), ...]) in the order given; carol's verdicts are back-dated to 2020.
SCRIPT = [
    (0, [("alice", "lesion"), ("bob", "lesion"), ("carol", "lesion")]),
    (1, [("alice", "lesion"), ("bob", "lesion"), ("carol", "not_lesion")]),
    (2, [("alice", "lesion"), ("bob", "not_lesion")]),  # tie
    (3, [("alice", "not_lesion"), ("bob", "lesion"), ("alice", "lesion")]),  # alice changes her mind
    (4, [("alice", "artifact")]),
    (5, [("alice", "unsure")]),
    (6, [("alice", "unsure"), ("bob", "not_lesion")]),  # unsure abstains
    (8, [("bob", "not_lesion"), ("carol", "not_lesion")]),
    (9, [("carol", "lesion")]),
]
UNDONE = 7  # alice's lesion on patch 7 is undone


@pytest.fixture(scope="module")
def reviewed(real_slides, tmp_path_factory) -> Workspace:
    """The real slide ingested and reviewed (read-only: copy it before changing it)."""
    from wsireview.ingest import add_paths

    ws = Workspace.resolve(tmp_path_factory.mktemp("export") / "ws").ensure()
    cat = open_catalog(ws.db_url)
    add_paths(cat, ws, [real_slides / SLIDE])
    with cat.session() as s:
        ids = s.scalars(select(Patch.id).order_by(Patch.y, Patch.x)).all()
        model = ModelVersion(encoder="stain-stats", positive_label="lesion")
        s.add(model)
        s.flush()
        ranks = np.array([1, 2, 3])  # the model scored a few patches
        scored = write_scores(ws.models, model.id, patch_ids=np.array(ids[:3]), slide_ids=np.ones(3, int),
                              attention=1.0 / ranks, attention_rank=ranks, probability=0.9 - 0.1 * ranks,
                              uncertainty=np.full(3, 0.1))
        model.scores_path = ws.relative(scored)
        model_id = model.id
    for idx, votes in SCRIPT:
        for reviewer, verdict in votes:
            record_verdict(cat, ids[idx], verdict, reviewer, seconds_taken=2.0,
                           model_version_id=model_id if idx in (0, 1, 2) else None)
        if idx == 6:
            record_verdict(cat, ids[UNDONE], "lesion", "alice")
            undo_last(cat, "alice")
    with cat.session() as s:
        s.execute(update(Review).where(Review.reviewer == "carol").values(created_at=OLD))
    cat.close()
    assert patch_ids(ws) == ids
    return ws


@pytest.fixture
def ws(reviewed, tmp_path) -> Workspace:
    """A private copy of the reviewed workspace."""
    target = tmp_path / "ws"
    shutil.copytree(reviewed.root, target)
    return Workspace.resolve(target)


def export(ws: Workspace, out: Path, fmt: str = "csv", *extra: str) -> int:
    return main(["--workspace", str(ws.root), "export", str(out), "--format", fmt, *extra])


def manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def patch_ids(ws: Workspace) -> list[int]:
    """The slide's patch ids in reading order: SCRIPT's indices point into this list."""
    with closing(open_catalog(ws.db_url)) as cat, cat.session() as s:
        return list(s.scalars(select(Patch.id).order_by(Patch.y, Patch.x)))


def labels_by_index(ws: Workspace, rows: list[dict]) -> dict[int, str]:
    index = {pid: i for i, pid in enumerate(patch_ids(ws))}
    return {index[int(r["patch_id"])]: r["label"] for r in rows}


# -- which patches, which labels ---------------------------------------------------------------

CASES = {
    (): {0: "lesion", 1: "lesion", 3: "lesion", 4: "artifact", 6: "not_lesion", 8: "not_lesion", 9: "lesion"},
    ("--consensus", "unanimous"): {0: "lesion", 3: "lesion", 4: "artifact", 6: "not_lesion", 8: "not_lesion", 9: "lesion"},
    ("--consensus", "latest"): {0: "lesion", 1: "lesion", 2: "not_lesion", 3: "lesion", 4: "artifact",
                                6: "not_lesion", 8: "not_lesion", 9: "lesion"},
    ("--include-unsure",): {0: "lesion", 1: "lesion", 3: "lesion", 4: "artifact", 5: "unsure", 8: "not_lesion", 9: "lesion"},
    ("--reviewer", "bob"): {0: "lesion", 1: "lesion", 2: "not_lesion", 3: "lesion", 6: "not_lesion", 8: "not_lesion"},
    ("--since", "2021-01-01"): {0: "lesion", 1: "lesion", 3: "lesion", 4: "artifact", 6: "not_lesion", 8: "not_lesion"},
    ("--label", "lesion", "artifact"): {0: "lesion", 1: "lesion", 3: "lesion", 4: "artifact", 9: "lesion"},
}
DROPS = {
    (): {"tie": 1, "unsure": 1, "undone": 1},
    ("--consensus", "unanimous"): {"disagreement": 2, "unsure": 1, "undone": 1},
    ("--consensus", "latest"): {"unsure": 1, "undone": 1},
    ("--include-unsure",): {"tie": 2, "undone": 1},
    ("--reviewer", "bob"): {"other reviewers": 3, "undone": 1},
    ("--since", "2021-01-01"): {"before --since": 1, "tie": 1, "unsure": 1, "undone": 1},
    ("--label", "lesion", "artifact"): {"label not selected": 2, "tie": 1, "unsure": 1, "undone": 1},
}


@pytest.mark.parametrize("args", list(CASES), ids=lambda a: " ".join(a) or "default")
def test_consensus_rules_on_disagreeing_reviewers(reviewed, tmp_path, args):
    out = tmp_path / "out"
    assert export(reviewed, out, "csv", *args) == 0
    rows = manifest(out)
    assert labels_by_index(reviewed, rows) == CASES[args]
    summary = json.loads((out / "export.json").read_text())
    assert summary["dropped"] == DROPS[args]
    assert summary["reviewed_patches"] == 10
    assert summary["exported_patches"] == len(rows)


def test_votes_reviewers_and_scores_in_manifest(reviewed, tmp_path):
    out = tmp_path / "out"
    assert export(reviewed, out, "csv") == 0
    rows = {i: r for i, r in zip(labels_by_index(reviewed, manifest(out)), manifest(out))}
    assert rows[1]["reviewers"] == "alice;bob" and rows[1]["votes"] == "lesion=2;not_lesion=1"
    assert rows[3]["reviewers"] == "alice;bob" and rows[3]["votes"] == "lesion=2"  # alice's first verdict superseded
    assert rows[0]["attention_rank"] == "1" and float(rows[0]["probability"]) == pytest.approx(0.8)
    assert rows[4]["attention_rank"] == "" and rows[4]["model_version"] == ""  # no flagging model: empty
    assert rows[9]["reviewed_at"].startswith("2020-01-01")
    assert rows[6]["reviewers"] == "bob"  # alice's unsure is an abstention
    assert rows[0]["file"] == ""  # csv: the manifest alone, no image files
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "manifest.csv"]


def test_decide_rules_unit():
    t = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def v(i, who, verdict, minute):
        return Vote(i, who, verdict, t.replace(minute=minute), None)

    rows = {
        1: [(v(1, "a", "lesion", 0), False), (v(2, "a", "not_lesion", 1), True)],  # undo restores "lesion"
        2: [(v(3, "a", "lesion", 0), True)],
        3: [(v(4, "a", "lesion", 0), False), (v(5, "b", "unsure", 1), False)],
    }
    labels, dropped = label_patches(rows, Selection())
    assert {k: lab for k, (lab, _) in labels.items()} == {1: "lesion", 3: "lesion"}
    assert dropped == {"undone": 1}
    labels, dropped = label_patches(rows, Selection(consensus="unanimous", include_unsure=True))
    assert set(labels) == {1} and dropped == {"undone": 1, "disagreement": 1}
    with pytest.raises(ExportError, match="unknown verdict label 'tumour'"):
        Selection(labels=("tumour",))


# -- imagefolder -------------------------------------------------------------------------------

def test_imagefolder_pixels_equal_openslide(reviewed, real_slides, tmp_path):
    out = tmp_path / "out"
    assert export(reviewed, out, "imagefolder") == 0
    rows = manifest(out)
    assert len(rows) == len(CASES[()])
    osr = openslide.OpenSlide(str(real_slides / SLIDE))
    with closing(open_catalog(reviewed.db_url)) as cat, cat.session() as s:
        geometry = {p.id: (p.x, p.y, p.size) for p in s.scalars(select(Patch))}
    for r in rows:
        x, y, size = geometry[int(r["patch_id"])]
        assert (int(r["x"]), int(r["y"]), int(r["size_level0"])) == (x, y, size)
        assert r["file"].startswith(r["label"] + "/")
        png = Image.open(out / r["file"])
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (224, 224)
        assert not png.info.get("dpi") and not any(k for k in png.info if k not in ("dpi", "gamma"))
        region = osr.read_region((x, y), 0, (size, size))
        reference = Image.new("RGB", region.size, (255, 255, 255))
        reference.paste(region, mask=region.getchannel("A"))
        got = np.asarray(png)
        assert np.array_equal(got, np.asarray(reference))
        assert got.std() > 5  # real tissue, not a blank tile
        assert float(r["mpp"]) == pytest.approx(0.499)
    # Image-folder readers: class = sub-folder, every file in it an image; nothing else is a folder.
    classes = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert classes == sorted(set(CASES[()].values()))
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == len(rows)
    assert {p.relative_to(out).as_posix() for p in pngs} == {r["file"] for r in rows}
    # The slide's associated images (label, macro: patient data) exist but are never written.
    assert {"label", "macro"} <= set(osr.associated_images)
    assert all(Image.open(p).size == (224, 224) for p in pngs)
    osr.close()


def test_patch_size_and_mpp_override_keep_centre(reviewed, real_slides, tmp_path):
    out = tmp_path / "out"
    assert export(reviewed, out, "imagefolder", "--patch-size", "64", "--mpp", "1.0", "--label", "lesion") == 0
    rows = manifest(out)
    size0 = round(64 * 1.0 / 0.499)
    with closing(open_catalog(reviewed.db_url)) as cat, cat.session() as s:
        geometry = {p.id: (p.x, p.y, p.size) for p in s.scalars(select(Patch))}
    for r in rows:
        x, y, size = geometry[int(r["patch_id"])]
        assert int(r["size_level0"]) == size0 and int(r["patch_px"]) == 64
        assert int(r["x"]) + size0 / 2 == pytest.approx(x + size / 2, abs=1)
        assert float(r["mpp"]) == pytest.approx(0.499 * size0 / 64)
        assert Image.open(out / r["file"]).size == (64, 64)


# -- qupath ------------------------------------------------------------------------------------

def _schema(node):
    """The shape of a JSON value: keys and types, numbers as one type."""
    if isinstance(node, dict):
        return {k: _schema(v) for k, v in node.items() if k != "measurements"}
    if isinstance(node, list):
        return ["list", _schema(node[0]) if node else None]
    return "number" if isinstance(node, (int, float)) and not isinstance(node, bool) else type(node).__name__


def test_qupath_geojson_schema_and_coordinates(reviewed, tmp_path):
    out = tmp_path / "out"
    assert export(reviewed, out, "qupath") == 0
    rows = {int(r["patch_id"]): r for r in manifest(out)}
    files = list(out.glob("*.geojson"))
    assert [f.name for f in files] == ["cmu-1-small-region.geojson"]
    doc = json.loads(files[0].read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(rows)
    pinned = json.loads((FIXTURES / "qupath_feature.json").read_text())
    ids = set()
    for feature in doc["features"]:
        assert _schema(feature) == _schema(pinned)
        uuid.UUID(feature["id"])
        ids.add(feature["id"])
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        match = [r for r in rows.values() if (int(r["x"]), int(r["y"])) == (min(xs), min(ys))]
        assert len(match) == 1
        r = match[0]
        assert max(xs) - min(xs) == max(ys) - min(ys) == int(r["size_level0"])
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] == r["label"]
        assert len(props["classification"]["color"]) == 3
        assert all(isinstance(v, (int, float)) for v in props["measurements"].values())
        if r["attention_rank"]:
            assert props["measurements"]["attention rank"] == int(r["attention_rank"])
            assert props["measurements"]["probability"] == pytest.approx(float(r["probability"]))
        else:
            assert "attention" not in props["measurements"]  # absent, never NaN (not JSON)
    assert len(ids) == len(rows)
    # Ids are stable across exports (uuid5 of the slide's pseudonym and the square).
    again = tmp_path / "again"
    assert export(reviewed, again, "qupath", "--anonymize", "--object-type", "annotation") == 0
    doc2 = json.loads(next(again.glob("*.geojson")).read_text())
    assert {f["id"] for f in doc2["features"]} == ids
    assert {f["properties"]["objectType"] for f in doc2["features"]} == {"annotation"}


# -- clam-h5 -----------------------------------------------------------------------------------

def test_clam_h5_layout_and_reads(reviewed, real_slides, tmp_path):
    out = tmp_path / "out"
    assert export(reviewed, out, "clam-h5", "--include-unsure") == 0
    rows = manifest(out)
    path = out / "patches" / "cmu-1-small-region.h5"
    with h5py.File(path, "r") as h5:
        assert set(h5.keys()) == {"coords", "labels"}
        coords = h5["coords"][:]
        attrs = dict(h5["coords"].attrs)
        names = [n.decode() if isinstance(n, bytes) else n for n in h5["labels"].attrs["label_names"]]
        labels = [names[c] for c in h5["labels"][:]]
    assert coords.dtype.kind == "i" and coords.shape == (len(rows), 2)
    assert sorted(zip(coords[:, 0].tolist(), coords[:, 1].tolist(), labels)) == sorted(
        (int(r["x"]), int(r["y"]), r["label"]) for r in rows)
    assert "unsure" in labels
    # ... and with the catalog itself: the expected patches at their catalogued level-0 corners.
    ids = patch_ids(reviewed)
    with closing(open_catalog(reviewed.db_url)) as cat, cat.session() as s:
        corners = {p.id: (p.x, p.y) for p in s.scalars(select(Patch))}
    expected = CASES[("--include-unsure",)]
    assert sorted(zip(coords[:, 0].tolist(), coords[:, 1].tolist(), labels)) == sorted(
        (*corners[ids[i]], label) for i, label in expected.items())
    osr = openslide.OpenSlide(str(real_slides / SLIDE))
    assert attrs["patch_size"] == 224 and attrs["patch_level"] == 0 and attrs["name"] == "cmu-1-small-region"
    assert tuple(attrs["level_dim"]) == tuple(attrs["downsampled_level_dim"]) == osr.level_dimensions[0]
    assert tuple(attrs["downsample"]) == (1.0, 1.0)
    assert attrs["patch_size_level0"] == 224 and attrs["overlap"] == 0
    assert attrs["level0_magnification"] == 20 and attrs["target_magnification"] == 20
    assert (attrs["level0_width"], attrs["level0_height"]) == osr.dimensions
    # A CLAM reader reads patch_size at patch_level: the same pixels as the PNG export would hold.
    x, y = coords[0]
    tile = osr.read_region((int(x), int(y)), int(attrs["patch_level"]), (int(attrs["patch_size"]),) * 2)
    assert np.asarray(tile)[..., 3].min() == 255 and np.asarray(tile)[..., :3].std() > 5
    osr.close()


@pytest.mark.parametrize("mpp, magnification", [(0.25, 40), (0.5, 20), (1.0, 10)])
def test_clam_h5_target_magnification_is_the_grids(reviewed, real_slides, tmp_path, mpp, magnification):
    """TRIDENT reads ``patch_size`` x level-0 / target magnification level-0 px and resizes them to
    ``patch_size``: read that way, the h5 gives the exported square at the exported resolution."""
    h5_out, png_out = tmp_path / "h5", tmp_path / "png"
    assert export(reviewed, h5_out, "clam-h5", "--mpp", str(mpp)) == 0
    assert export(reviewed, png_out, "imagefolder", "--mpp", str(mpp)) == 0
    with h5py.File(h5_out / "patches" / "cmu-1-small-region.h5", "r") as h5:
        coords = h5["coords"][:]
        attrs = dict(h5["coords"].attrs)
    rows = {(int(r["x"]), int(r["y"])): r for r in manifest(png_out)}
    size0 = round(224 * mpp / 0.499)
    assert attrs["target_magnification"] == pytest.approx(magnification, rel=0.005)
    assert attrs["target_mpp"] == pytest.approx(mpp, rel=0.005)
    assert attrs["level0_magnification"] == 20 and attrs["patch_size"] == 224
    assert attrs["patch_size_level0"] == size0
    span = round(attrs["patch_size"] * attrs["level0_magnification"] / attrs["target_magnification"])
    assert span == size0
    osr = openslide.OpenSlide(str(real_slides / SLIDE))
    for x, y in coords.tolist():
        region = osr.read_region((x, y), 0, (span, span)).convert("RGB")
        trident = np.asarray(region.resize((attrs["patch_size"],) * 2, Image.Resampling.LANCZOS), dtype=float)
        png = np.asarray(Image.open(png_out / rows[(x, y)]["file"]), dtype=float)
        assert int(rows[(x, y)]["size_level0"]) == size0
        assert np.abs(trident - png).mean() < 2 and png.std() > 5
    osr.close()


# -- safety ------------------------------------------------------------------------------------

def _all_bytes(folder: Path) -> bytes:
    chunks = []
    for path in sorted(folder.rglob("*")):
        chunks.append(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)


def test_anonymize_leaves_no_slide_name(reviewed, tmp_path):
    outs = []
    for fmt in ("imagefolder", "qupath", "clam-h5", "csv"):
        out = tmp_path / f"out-{fmt}"
        assert export(reviewed, out, fmt, "--anonymize") == 0
        outs.append(out)
        blob = _all_bytes(out).lower()  # (3-byte strings turn up in compressed pixels by chance)
        assert b"cmu-1" not in blob and b"small-region" not in blob and b"small_region" not in blob
        assert b"/shared/" not in blob and b".svs" not in blob  # no path either
    with closing(open_catalog(reviewed.db_url)) as cat, cat.session() as s:
        slide = s.scalars(select(Slide)).one()
        pseudonym = anonymous_name(slide.content_hash, slide.path)
    assert {r["slide"] for r in manifest(outs[0])} == {pseudonym}
    assert (outs[2] / "patches" / f"{pseudonym}.h5").exists()
    with h5py.File(outs[2] / "patches" / f"{pseudonym}.h5", "r") as h5:
        assert h5["coords"].attrs["name"] == pseudonym
    assert (outs[1] / f"{pseudonym}.geojson").exists()
    assert all(p.name.startswith(pseudonym) for p in outs[0].rglob("*.png"))


def test_odd_slide_name_stays_inside_out(ws, tmp_path):
    cat = open_catalog(ws.db_url)
    with cat.session() as s:
        s.execute(update(Slide).values(name="../evil name?.svs"))
    cat.close()
    before = set(tmp_path.iterdir())
    for fmt in ("imagefolder", "qupath", "clam-h5"):
        out = tmp_path / "exports" / fmt
        assert export(ws, out, fmt) == 0
        for path in out.rglob("*"):
            assert path.resolve().is_relative_to(out.resolve())
            assert re.fullmatch(r"[A-Za-z0-9._-]+", path.name) and not path.name.startswith(".")
            if path.suffix in (".png", ".geojson", ".h5"):
                assert path.name.startswith("evil_name")
        assert set((tmp_path / "exports").iterdir()) <= {tmp_path / "exports" / f for f in ("imagefolder", "qupath", "clam-h5")}
    assert set(tmp_path.iterdir()) == before | {tmp_path / "exports"}
    assert safe_stem("../evil name?.svs") == "evil_name"
    assert safe_stem("..") == "slide" and safe_stem("CON.svs") == "slide_CON"
    assert safe_stem("a/b/../../c d.tiff") == "c_d" and safe_stem("..\\..\\x:*.svs") == "x"


def test_interrupted_export_leaves_no_out(reviewed, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = imagefolder.save_png

    def failing(image, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        real(image, path)

    monkeypatch.setattr(imagefolder, "save_png", failing)
    out = tmp_path / "out"
    with closing(open_catalog(reviewed.db_url)) as cat:
        with pytest.raises(OSError, match="simulated"):
            run_export(cat, reviewed, out, ExportOptions(format="imagefolder"))
        assert not out.exists()
        assert list(tmp_path.iterdir()) == []  # no partial folder left beside it either
        # With --force over an earlier export, the earlier one survives a failed replacement.
        out.mkdir()
        (out / "previous.txt").write_text("keep me")
        calls["n"] = 0
        with pytest.raises(OSError):
            run_export(cat, reviewed, out, ExportOptions(format="imagefolder", force=True))
        assert [p.name for p in out.iterdir()] == ["previous.txt"]
        assert [p.name for p in tmp_path.iterdir()] == ["out"]


KILL_AT_THIRD_PNG = """
import os, signal, sys
from wsireview.cli import main
from wsireview.export import imagefolder
real, calls = imagefolder.save_png, [0]
def save_then_die(image, path):
    real(image, path)
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
imagefolder.save_png = save_then_die
main(sys.argv[1:])
"""


def test_killed_export_leftovers_are_removed_by_the_next_export(reviewed, tmp_path):
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILL_AT_THIRD_PNG, "--workspace", str(reviewed.root),
                             "export", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [leftover] = tmp_path.glob(".out.partial-*")
    assert not out.exists() and len(list(leftover.rglob("*.png"))) == 3  # named after the slide
    # A folder that a running export holds (its lock) is not a leftover.
    running = tmp_path / ".out.partial-running"
    running.mkdir()
    fd = os.open(running, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert export(reviewed, out, "imagefolder") == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-running", "out"]
        assert len(manifest(out)) == len(CASES[()])
    finally:
        os.close(fd)
    shutil.rmtree(out)
    assert export(reviewed, out, "csv") == 0  # released: now it is a leftover too
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_progress_through_one_callback_and_bad_options_refused_in_domain_words(reviewed, tmp_path, capsys):
    heard: list[tuple[str, float]] = []
    with closing(open_catalog(reviewed.db_url)) as cat:
        report = run_export(cat, reviewed, tmp_path / "out", ExportOptions(format="qupath"),
                            on_progress=lambda what, fraction: heard.append((what, fraction)))
    n = len(report.patches)
    assert n == len(CASES[()]) and heard[0] == (f"export qupath: 0 of {n} patches", 0.0)
    assert heard[-1] == (f"export qupath: {n} of {n} patches", 1.0)
    assert [f for _, f in heard] == sorted(f for _, f in heard)
    for option, says in ((("--mpp", "-1"), "an export resolution must be a positive number of µm per pixel, not -1"),
                         (("--patch-size", "4"), "an exported patch must be at least 8 px a side, not 4")):
        assert export(reviewed, tmp_path / "refused", "csv", *option) == 2
        assert capsys.readouterr().err.strip() == f"error: {says}"
    assert not (tmp_path / "refused").exists()


def test_non_empty_out_refused_without_force(reviewed, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export(reviewed, out, "csv") == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert export(reviewed, out, "csv", "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "manifest.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(reviewed, empty, "csv") == 0  # an empty folder is fine
    # Readable by whoever shares the machine, like any other file the tool writes (not mkdtemp's 0700).
    assert empty.stat().st_mode & 0o777 == ordinary_mode(directory=True)
    assert (empty / "manifest.csv").stat().st_mode & 0o777 == ordinary_mode()
    # --force never replaces the workspace (it holds the catalog).
    with closing(open_catalog(reviewed.db_url)) as cat:
        with pytest.raises(ExportError, match="refusing"):
            run_export(cat, reviewed, reviewed.root, ExportOptions(format="csv", force=True))
    assert (reviewed.root / "catalog.sqlite").exists()


def test_missing_slide_file_is_reported_not_hidden(ws, tmp_path, capsys):
    cat = open_catalog(ws.db_url)
    with cat.session() as s:
        s.execute(update(Slide).values(path=str(tmp_path / "gone.svs")))
    cat.close()
    out = tmp_path / "out"
    assert export(ws, out, "imagefolder") == 1  # exit 1: some patches could not be exported
    assert "slide unreadable" in capsys.readouterr().err
    assert manifest(out) == [] and not list(out.rglob("*.png"))
    assert json.loads((out / "export.json").read_text())["dropped"]["slide unreadable"] == len(CASES[()])
    # Coordinates need no pixels: the other formats still export every patch.
    assert export(ws, tmp_path / "h5", "clam-h5") == 0
    with h5py.File(tmp_path / "h5" / "patches" / "cmu-1-small-region.h5", "r") as h5:
        assert len(h5["coords"]) == len(CASES[()]) and tuple(h5["coords"].attrs["level_dim"]) == (2220, 2967)


def test_slides_unreadable_in_export_are_marked_failed_and_the_rest_exported(demo_workspace, tmp_path, capsys):
    """Two demo slides reviewed; after ingest one file is truncated and one removed: the export
    writes the third slide's patches, marks the truncated slide failed (the gone one missing) with
    the reason, and says so in one line with exit code 1."""
    with closing(open_catalog(demo_workspace.db_url)) as cat:
        with cat.session() as s:
            slides = s.scalars(select(Slide).order_by(Slide.id)).all()[:3]
            firsts = [s.scalars(select(Patch.id).where(Patch.slide_id == sl.id).order_by(Patch.id)).first()
                      for sl in slides]
            copies = []
            for sl in slides[:2]:  # private copies of the shared cohort's files, to damage
                copy = tmp_path / Path(sl.path).name
                shutil.copy(sl.path, copy)
                sl.path = str(copy)
                copies.append(copy)
            ids = [sl.id for sl in slides]
        for pid in firsts:
            record_verdict(cat, pid, "lesion", "alice")
    with open(copies[0], "r+b") as handle:
        handle.truncate(copies[0].stat().st_size // 3)
    copies[1].unlink()
    out = tmp_path / "out"
    assert export(demo_workspace, out, "imagefolder") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("warning: 2 slides unreadable, 2 patches not exported, the slides marked failed")
    assert copies[0].name in err and copies[1].name in err
    assert [int(r["patch_id"]) for r in manifest(out)] == [firsts[2]]
    assert len(list(out.rglob("*.png"))) == 1
    with closing(open_catalog(demo_workspace.db_url)) as cat, cat.session() as s:
        status = {sid: (s.get_one(Slide, sid).status, s.get_one(Slide, sid).reason) for sid in ids}
        assert s.scalar(select(func.count()).select_from(Review)) == 3  # reviews stay
    assert status[ids[0]][0] == "failed" and status[ids[0]][1].startswith("unreadable while exporting: ")
    assert status[ids[1]] == ("missing", f"file not found: {copies[1]}")
    assert status[ids[2]] == ("ready", None)


def test_a_full_disk_during_export_is_one_line_and_leaves_no_half_export(reviewed, tmp_path, monkeypatch, capsys):
    import errno

    real, calls = imagefolder.save_png, [0]

    def fills_up(image, path):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(image, path)

    monkeypatch.setattr(imagefolder, "save_png", fills_up)
    out = tmp_path / "out"
    assert export(reviewed, out, "imagefolder") == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"error: disk full: the export to {out} could not be written (No space left on "
                                    "device); nothing was left at OUT: free space and re-run")
    assert "Traceback" not in captured.out + captured.err
    assert list(tmp_path.iterdir()) == []  # neither OUT nor its hidden partial folder
