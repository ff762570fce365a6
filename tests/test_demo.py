"""The demo cohort: real OpenSlide-readable pyramids, H&E-like pixels, and ground truth that holds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.draw import polygon as fill_polygon
from sqlalchemy import func, select

from wsireview.catalog import open_catalog
from wsireview.catalog.models import Patch, Slide
from wsireview.cli import main as cli_main
from wsireview.demo import DemoError, generate_cohort, parse_size, read_mask

from conftest import DEMO_SEED, DEMO_SLIDES


def _manifest(cohort: Path) -> dict:
    return json.loads((cohort / "truth" / "cohort.json").read_text())


def _polygons(cohort: Path, stem: str) -> list[list[list[list[float]]]]:
    doc = json.loads((cohort / f"{stem}.geojson").read_text())
    assert doc["type"] == "FeatureCollection"
    assert all(f["geometry"]["type"] == "Polygon" for f in doc["features"])
    return [f["geometry"]["coordinates"] for f in doc["features"]]


def _rasterise(polygons, shape: tuple[int, int], downsample: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for rings in polygons:
        for k, ring in enumerate(rings):
            pts = np.asarray(ring) / downsample - 0.5
            rr, cc = fill_polygon(pts[:, 1], pts[:, 0], shape)
            mask[rr, cc] = k == 0  # exterior fills, holes clear
    return mask


def _nuclear_fraction(rgb: np.ndarray) -> float:
    """Share of pixels with hematoxylin-dominated optical density (nuclei)."""
    hed = rgb2hed(rgb)
    return float((hed[..., 0] > 0.08).mean())


def _slides(cohort: Path) -> list[Path]:
    return sorted(cohort.glob("demo-*.tiff"))


def test_cohort_has_lesion_normal_and_artifact_slides(demo_cohort):
    with open(demo_cohort / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["slide", "label"]
    labels = dict(rows[1:])
    assert sorted(labels) == [p.name for p in _slides(demo_cohort)]
    assert len(labels) == DEMO_SLIDES
    assert set(labels.values()) == {"lesion", "normal"}
    manifest = _manifest(demo_cohort)
    assert manifest["seed"] == DEMO_SEED
    kinds = {kind for s in manifest["slides"] for kind in s["artifacts"]}
    assert kinds == {"pen", "dust", "fold"}
    for entry in manifest["slides"]:
        artifacts = read_mask(demo_cohort / entry["artifact_mask"])
        # Pen and dust are really drawn into the truth; a fold is tissue, not an artifact mask entry.
        assert artifacts.any() == bool({"pen", "dust"} & set(entry["artifacts"])), entry["name"]


def test_openslide_reads_pyramid_with_mpp(demo_cohort):
    for path in _slides(demo_cohort):
        with openslide.OpenSlide(str(path)) as slide:
            assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)
            assert slide.dimensions == parse_size("small")
            assert slide.level_count >= 3
            assert slide.level_downsamples[1] == pytest.approx(4.0)

            # A level read at 1/4 matches level 0 averaged 4 x 4, on a region with tissue in it.
            tissue = read_mask(demo_cohort / "truth" / f"{path.stem}.tissue.png")
            ds = _manifest(demo_cohort)["truth_downsample"]
            rows, cols = np.nonzero(tissue)
            cx, cy = int(np.median(cols) * ds) // 4 * 4, int(np.median(rows) * ds) // 4 * 4
            x, y = cx - 512, cy - 512
            full = np.asarray(slide.read_region((x, y), 0, (1024, 1024)).convert("RGB"), dtype=np.float32)
            expected = full.reshape(256, 4, 256, 4, 3).mean(axis=(1, 3))
            level1 = np.asarray(slide.read_region((x, y), 1, (256, 256)).convert("RGB"), dtype=np.float32)
            assert expected.std() > 15, "the compared region must hold tissue, not blank glass"
            # Both went through JPEG (q85, 4:2:0 chroma), so compare closely, not exactly.
            assert np.abs(level1 - expected).mean() < 6.0
            assert np.abs(level1.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 2.0
            assert np.corrcoef(level1.mean(axis=2).ravel(), expected.mean(axis=2).ravel())[0, 1] > 0.9


def test_tissue_looks_like_h_and_e(demo_cohort):
    path = _slides(demo_cohort)[0]
    tissue = read_mask(demo_cohort / "truth" / f"{path.stem}.tissue.png")
    with openslide.OpenSlide(str(path)) as slide:
        thumb = np.asarray(slide.get_thumbnail((1024, 1024)).convert("RGB"), dtype=np.float32)
    mask = np.asarray(Image.fromarray(tissue).resize((thumb.shape[1], thumb.shape[0]), Image.Resampling.NEAREST))
    r, g, b = thumb[mask].mean(axis=0)
    assert r > b > g, "stained tissue is pink-purple: red above blue above green"
    glass = thumb[~mask]
    assert glass.mean() > 235 and glass.std() < 8, "the background is white glass with slight noise"


def test_lesion_share_and_polygons_inside_tissue(demo_cohort):
    manifest = _manifest(demo_cohort)
    ds = manifest["truth_downsample"]
    for entry in manifest["slides"]:
        stem = Path(entry["path"]).stem
        tissue = read_mask(demo_cohort / entry["tissue_mask"])
        polygons = _polygons(demo_cohort, stem)
        if entry["label"] == "normal":
            assert polygons == []
            continue
        assert 1 <= len(polygons) <= 4
        lesion = _rasterise(polygons, tissue.shape, ds)
        share = lesion.sum() / tissue.sum()
        assert 0.002 <= share <= 0.05, f"{stem}: lesion share {share:.4f}"
        assert (lesion & tissue).sum() >= 0.99 * lesion.sum(), f"{stem}: lesion outside tissue"
        for rings in polygons:
            pts = np.asarray(rings[0])
            extent = pts.max(axis=0) - pts.min(axis=0)
            assert extent.min() >= 100, f"{stem}: lesion of {extent} px is smaller than ~100 px"


def test_lesions_are_drawn_where_the_ground_truth_says(demo_cohort):
    manifest = _manifest(demo_cohort)
    ds = manifest["truth_downsample"]
    checked = 0
    for entry in manifest["slides"]:
        if entry["label"] != "lesion":
            continue
        stem = Path(entry["path"]).stem
        tissue = read_mask(demo_cohort / entry["tissue_mask"])
        polygons = _polygons(demo_cohort, stem)
        near_lesion = _rasterise(polygons, tissue.shape, ds)
        far = tissue & ~ndimage.binary_dilation(near_lesion, iterations=80)
        far = ndimage.binary_erosion(far, iterations=40)
        with openslide.OpenSlide(str(demo_cohort / entry["path"])) as slide:
            for rings in polygons:
                # The lesion's pole of inaccessibility: deepest point inside it, at truth scale.
                own = _rasterise([rings], tissue.shape, ds)
                depth = ndimage.distance_transform_edt(own)
                row, col = np.unravel_index(np.argmax(depth), depth.shape)
                lesion_px = np.asarray(slide.read_region((int(col * ds) - 56, int(row * ds) - 56), 0, (112, 112)).convert("RGB"))
                rows, cols = np.nonzero(far)
                k = len(rows) // 2
                normal_px = np.asarray(slide.read_region((int(cols[k] * ds) - 56, int(rows[k] * ds) - 56), 0, (112, 112)).convert("RGB"))
                lesion_nuclei, normal_nuclei = _nuclear_fraction(lesion_px), _nuclear_fraction(normal_px)
                assert lesion_nuclei > 2.5 * normal_nuclei, (stem, lesion_nuclei, normal_nuclei)
                assert lesion_nuclei > 0.3
                checked += 1
    assert checked >= 2


def test_same_seed_same_pixels_other_seed_differs(demo_cohort, tmp_path):
    again = generate_cohort(tmp_path / "again", n_slides=1, size="small", seed=DEMO_SEED, workers=1)
    other = generate_cohort(tmp_path / "other", n_slides=1, size="small", seed=DEMO_SEED + 1, workers=1)
    original = demo_cohort / "demo-000.tiff"

    def pixels(path: Path, level: int) -> np.ndarray:
        with openslide.OpenSlide(str(path)) as slide:
            return np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))

    for level in (0, 1):
        assert np.array_equal(pixels(original, level), pixels(again.paths[0], level))
    assert (demo_cohort / "demo-000.geojson").read_text() == (again.out_dir / "demo-000.geojson").read_text()
    assert np.abs(pixels(original, 1).astype(int) - pixels(other.paths[0], 1).astype(int)).mean() > 10
    truth = read_mask(demo_cohort / "truth" / "demo-000.tissue.png")
    assert (truth != read_mask(other.out_dir / "truth" / "demo-000.tissue.png")).mean() > 0.05


def test_ingest_finds_the_generators_tissue_and_no_artifact(demo_workspace, demo_cohort):
    manifest = {Path(s["path"]).name: s for s in _manifest(demo_cohort)["slides"]}
    catalog = open_catalog(demo_workspace.db_url)
    try:
        with catalog.session() as session:
            slides = session.scalars(select(Slide)).all()
            assert sorted(s.name for s in slides) == sorted(manifest)
            for slide in slides:
                entry = manifest[slide.name]
                assert slide.status == "ready", (slide.name, slide.reason)
                assert slide.label == entry["label"]
                assert slide.mpp_x == pytest.approx(0.5)
                mask = np.asarray(Image.open(demo_workspace.absolute(slide.mask_path)).convert("L")) > 127
                size = (mask.shape[1], mask.shape[0])
                truth = np.asarray(Image.fromarray(read_mask(demo_cohort / entry["tissue_mask"])).resize(size, Image.Resampling.NEAREST))
                artifacts = np.asarray(Image.fromarray(read_mask(demo_cohort / entry["artifact_mask"])).resize(size, Image.Resampling.NEAREST))
                dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
                assert dice >= 0.9, (slide.name, dice)
                # Not one artifact pixel in the mask, away from a 2 px band that resizing may shift.
                inner = ndimage.binary_erosion(artifacts, iterations=2)
                assert not (mask & inner).any(), f"{slide.name}: artifact counted as tissue"
                patches = session.scalar(select(func.count()).select_from(Patch).where(Patch.slide_id == slide.id))
                assert 120 <= patches <= 350, (slide.name, patches)
                # Every lesion lies under the patch grid, so the model can find it.
                boxes = session.execute(select(Patch.x, Patch.y, Patch.size).where(Patch.slide_id == slide.id)).all()
                for rings in _polygons(demo_cohort, Path(slide.name).stem):
                    cx, cy = np.asarray(rings[0]).mean(axis=0)
                    assert any(x <= cx < x + s and y <= cy < y + s for x, y, s in boxes), slide.name
    finally:
        catalog.close()


def test_cli_writes_a_cohort(tmp_path, capsys):
    out = tmp_path / "cohort"
    code = cli_main(["--workspace", str(tmp_path / "ws"), "demo", "--out", str(out), "--slides", "2",
                     "--size", "2048x1536", "--seed", "3", "--workers", "1"])
    assert code == 0
    assert sorted(p.name for p in out.glob("*.tiff")) == ["demo-000.tiff", "demo-001.tiff"]
    with openslide.OpenSlide(str(out / "demo-001.tiff")) as slide:
        assert slide.dimensions == (2048, 1536)
        assert slide.level_count == 3
    assert f"Next: wsireview --workspace {tmp_path / 'ws'} add {out}" in capsys.readouterr().out
    assert cli_main(["--workspace", str(tmp_path / "ws"), "demo", "--size", "huge"]) == 2

    # A smaller run into the same folder leaves no stale slide behind for `add` to pick up.
    assert cli_main(["--workspace", str(tmp_path / "ws"), "demo", "--out", str(out), "--slides", "1",
                     "--size", "2048x1536", "--seed", "3", "--workers", "1"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["demo-000.geojson", "demo-000.tiff", "labels.csv"]
    assert sorted(p.name for p in (out / "truth").iterdir()) == [
        "cohort.json", "demo-000.artifacts.png", "demo-000.tissue.png"]
    with open(out / "labels.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["slide", "label"], ["demo-000.tiff", "normal"]]


def test_parse_size():
    assert parse_size("small") == (4480, 3360)
    assert parse_size("large") == (40000, 30000)
    assert parse_size("8000x6000") == (8000, 6000)
    with pytest.raises(DemoError, match="at least 1024 px a side, got 10x10"):
        parse_size("10x10")
    with pytest.raises(DemoError, match="size must be small, large or WxH"):
        parse_size("wide")


# -- difficulty ---------------------------------------------------------------------------------

# sha256 of the plan of slides 0-2 (seed 7, small) as the generator wrote them before difficulties existed.
EASY_PLANS = [
    "28425e1c946392e7cd5ab678b74b0ddc6b52d69db59b52b736d55bf82f562758",
    "d30f25cf8d4b6abd6ee230cadec1761a8d44b4dad777966526599f38d0471faa",
    "42b3af7e82a6044afe36d599d3daf2499e80a175fc7722aa81968ed82bd8de05",
]


def _plan_digest(spec) -> str:
    import hashlib

    text = repr((spec.label, spec.keys, spec.pieces, spec.outline_cells, spec.outline_amp, spec.lesions,
                 spec.lesion_cells, spec.fold, spec.pens, spec.specks, spec.artifacts))
    return hashlib.sha256(text.encode()).hexdigest()


def test_easy_is_the_original_generator():
    from wsireview.demo.difficulty import LesionStyle
    from wsireview.demo.layout import plan_slide

    for index, digest in enumerate(EASY_PLANS):
        spec = plan_slide(DEMO_SEED, index, *parse_size("small"))
        assert _plan_digest(spec) == digest
        assert spec.mimics == () and spec.lesion_style == LesionStyle()
        # A harder cohort with the same seed keeps the tissue layout and adds mimics.
        hard = plan_slide(DEMO_SEED, index, *parse_size("small"), "hard")
        assert hard.pieces == spec.pieces and hard.label == spec.label and len(hard.mimics) >= 2
    with pytest.raises(ValueError, match="difficulty must be one of easy, medium, hard"):
        plan_slide(DEMO_SEED, 0, 2048, 1536, "brutal")


@pytest.fixture(scope="module")
def hard_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hard") / "cohort"
    generate_cohort(out, n_slides=2, size="2560x1920", seed=3, workers=2, difficulty="hard")
    return out


def test_harder_cohorts_are_deterministic(hard_cohort, tmp_path):
    again = generate_cohort(tmp_path / "again", n_slides=1, size="2560x1920", seed=3, workers=1, difficulty="hard")
    medium = generate_cohort(tmp_path / "medium", n_slides=1, size="2560x1920", seed=3, workers=1, difficulty="medium")

    def pixels(path: Path) -> np.ndarray:
        with openslide.OpenSlide(str(path)) as slide:
            return np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")).astype(int)

    first = pixels(hard_cohort / "demo-000.tiff")
    assert np.array_equal(first, pixels(again.paths[0]))
    for name in ("demo-000.geojson", "truth/demo-000.mimics.geojson"):
        assert (hard_cohort / name).read_text() == (again.out_dir / name).read_text()
    assert np.abs(first - pixels(medium.paths[0])).mean() > 1.0
    assert _manifest(hard_cohort)["difficulty"] == "hard"


def test_mimics_are_in_the_truth_as_not_lesion_and_look_suspicious(hard_cohort, demo_cohort):
    from wsireview.learn.truth import lesion_share, read_polygons

    manifest = _manifest(hard_cohort)
    ds = manifest["truth_downsample"]
    kinds: set[str] = set()
    fractions: dict[str, list[float]] = {"lesion": [], "inflammatory": [], "crushed": [], "normal": []}
    for entry in manifest["slides"]:
        stem = Path(entry["path"]).stem
        doc = json.loads((hard_cohort / entry["mimics_geojson"]).read_text())
        assert len(doc["features"]) >= 2
        assert {f["properties"]["label"] for f in doc["features"]} == {"not lesion"}
        kinds |= {f["properties"]["kind"] for f in doc["features"]}
        tissue = read_mask(hard_cohort / entry["tissue_mask"])
        lesions = _rasterise(_polygons(hard_cohort, stem), tissue.shape, ds)
        # Clusters and crush lie clear of the lesions; inflamed stroma may surround them.
        discrete = [f for f in doc["features"] if f["properties"]["kind"] != "inflamed stroma"]
        mimics = _rasterise([f["geometry"]["coordinates"] for f in discrete], tissue.shape, ds)
        assert mimics.sum() > 0 and not (mimics & lesions).any(), stem
        # The oracle (lesion polygons of <stem>.geojson) calls every patch on a mimic not lesion.
        lesion_polys = read_polygons(hard_cohort / f"{stem}.geojson")
        with openslide.OpenSlide(str(hard_cohort / entry["path"])) as slide:
            for feature in discrete + json.loads((hard_cohort / f"{stem}.geojson").read_text())["features"]:
                own = _rasterise([feature["geometry"]["coordinates"]], tissue.shape, ds)
                row, col = np.unravel_index(np.argmax(ndimage.distance_transform_edt(own)), own.shape)
                x, y = int(col * ds) - 112, int(row * ds) - 112
                kind = feature["properties"].get("kind", "lesion")
                if kind != "lesion":
                    assert lesion_share(lesion_polys, np.array([x]), np.array([y]), 224)[0] == 0.0
                px = np.asarray(slide.read_region((x + 56, y + 56), 0, (112, 112)).convert("RGB"))
                fractions[kind].append(_nuclear_fraction(px))
            far = tissue & ~ndimage.binary_dilation(lesions | mimics, iterations=60)
            rows, cols = np.nonzero(ndimage.binary_erosion(far, iterations=30))
            k = len(rows) // 2
            px = np.asarray(slide.read_region((int(cols[k] * ds) - 56, int(rows[k] * ds) - 56), 0, (112, 112)).convert("RGB"))
            fractions["normal"].append(_nuclear_fraction(px))
    assert kinds == {"inflammatory", "crushed", "inflamed stroma"}
    mean = {k: float(np.mean(v)) for k, v in fractions.items() if v}
    # Hard lesions are milder than easy ones (> 0.3, test above) yet still more nuclear than normal
    # tissue; both mimics are at least as nuclear-dense as a hard lesion: they draw attention.
    assert mean["normal"] < mean["lesion"] < 0.3, mean
    assert min(mean["inflammatory"], mean["crushed"]) > mean["lesion"], mean
