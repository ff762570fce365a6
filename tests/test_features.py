"""Encoders and the embedding loop, on real H&E pixels and the ingested demo cohort."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed
from sqlalchemy import delete, select

from torch_support import TinyEncoder
from wsireview.catalog import FeatureSet, Patch, Slide
from wsireview.features import effnet, embed, encoders, stain, store
from wsireview.features.embed import EMBEDDED, EMPTY, FAILED, embed_slides
from wsireview.files import ordinary_mode
from wsireview.features.encoders import Encoder, EncoderError, get_encoder
from wsireview.slides.reader import SlideFile
from wsireview.slides.reader import SlideError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def he_patches(real_slides) -> np.ndarray:
    """Twelve 224 px tissue patches (0.5 µm/px) of a real H&E scan."""
    patches = []
    with SlideFile(real_slides / "cmu-1-small-region.svs") as slide:
        width, height = slide.dimensions
        for y in range(0, height - 224, 224):
            for x in range(0, width - 224, 224):
                patch = slide.read_array(x, y, 224, 224)
                if patch.mean() < 200:  # mostly tissue, not glass
                    patches.append(patch)
    assert len(patches) >= 12, "the real slide should have at least 12 tissue patches"
    return np.stack(patches[:: max(1, len(patches) // 12)][:12])


# -- effnet-lite0 -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(he_patches) -> tuple[np.ndarray, effnet.EffNetLite0]:
    encoder = get_encoder("effnet-lite0", precision="fp32", runtime="eager", threads=1)
    return encoder.embed(he_patches), encoder


def test_effnet_loads_the_shipped_imagenet_weights(reference, he_patches):
    features, encoder = reference
    shipped = torch.load(effnet.weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(encoder.model.net._conv_stem.weight, shipped["_conv_stem.weight"])
    assert features.shape == (len(he_patches), 1280) and features.dtype == np.float32
    assert (features >= 0).all()  # ReLU6 then average pooling
    # Deterministic, and the pixels matter: tissue differs from glass and patches from each other.
    assert np.array_equal(encoder.embed(he_patches[:4]), features[:4])
    blank = encoder.embed(np.full((1, 224, 224, 3), 245, dtype=np.uint8))
    assert cosine(features, np.repeat(blank, len(features), 0)).max() < 0.9
    assert cosine(features[:1], features[1:2])[0] < 0.995


def test_onnx_runtime_matches_the_torch_model(reference, he_patches):
    features, _ = reference
    fast = get_encoder("effnet-lite0", precision="fp32", runtime="onnx", threads=1)
    assert fast.backend.startswith("onnxruntime fp32")
    out = fast.embed(he_patches)
    sims = cosine(out, features)
    assert sims.min() > 0.999, sims
    assert np.abs(out - features).max() < 1e-3 * np.abs(features).max() + 1e-4


def test_bf16_path_stays_close_to_fp32(reference, he_patches):
    features, _ = reference
    bf16 = get_encoder("effnet-lite0", precision="bf16", runtime="eager", threads=1)
    sims = cosine(bf16.embed(he_patches[:4]), features[:4])  # 4 patches: emulated bf16 is slow here
    assert sims.min() >= 0.99, sims


def test_runtime_follows_the_cpu(monkeypatch):
    has_bf16 = encoders.cpu_has_bf16()
    assert effnet.resolve("auto", "auto") == (("bf16", "compile") if has_bf16 else ("fp32", "onnx"))
    monkeypatch.setattr(effnet, "cpu_has_bf16", lambda: True)
    assert effnet.resolve("auto", "auto") == ("bf16", "compile")
    monkeypatch.setattr(effnet, "cpu_has_bf16", lambda: False)
    assert effnet.resolve("auto", "auto") == ("fp32", "onnx")
    monkeypatch.setattr(effnet, "onnxruntime_available", lambda: False)
    assert effnet.resolve("auto", "auto") == ("fp32", "eager")
    with pytest.raises(EncoderError):
        effnet.resolve("bf16", "onnx")
    with pytest.raises(EncoderError):
        get_encoder("effnet-lite0", precision="fp16")


def test_failed_compile_falls_back_to_eager(monkeypatch, reference, he_patches, caplog):
    features, _ = reference

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken_compile)
    encoder = get_encoder("effnet-lite0", precision="fp32", runtime="compile", threads=1)
    assert encoder.fixed_batch
    out = encoder.embed(he_patches[:3])  # a partial batch, padded for the static graph
    assert encoder.runtime == "eager" and "torch.compile failed" in caplog.text
    assert np.allclose(out, features[:3], atol=1e-5)


# -- stain-stats --------------------------------------------------------------------------------
def _hed_patch(rng, hematoxylin: bool) -> np.ndarray:
    """A synthetic H&E patch: eosin stroma, plus dense dark nuclei when ``hematoxylin``."""
    hed = np.zeros((224, 224, 3))
    hed[..., 1] = 0.25 + 0.1 * rng.random((224, 224))
    if hematoxylin:
        yy, xx = np.mgrid[:224, :224]
        for cx, cy in rng.integers(0, 224, size=(60, 2)):
            radius = rng.uniform(4, 8)
            hed[..., 0] += 0.9 * ((xx - cx) ** 2 + (yy - cy) ** 2 < radius**2)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)


def test_stain_stats_separates_hematoxylin_dense_from_eosin_only():
    rng = np.random.default_rng(0)
    dense = np.stack([_hed_patch(rng, True) for _ in range(6)])
    eosin = np.stack([_hed_patch(rng, False) for _ in range(6)])
    encoder = get_encoder("stain-stats")
    fd, fe = encoder.embed(dense), encoder.embed(eosin)
    assert fd.shape == (6, encoder.dim) and encoder.dim == len(stain.FEATURE_NAMES) >= 32
    assert np.isfinite(fd).all() and np.isfinite(fe).all()
    index = {name: i for i, name in enumerate(stain.FEATURE_NAMES)}
    for name in ("h_mean", "h_p90", "h_above_0.06", "nuclei_count", "nuclei_area_mean", "h_share"):
        assert fd[:, index[name]].min() > fe[:, index[name]].max(), name
    assert fd[:, index["nuclei_count"]].min() * 100 >= 20  # ~60 disks drawn, overlaps merge some
    # Deterministic, and independent of what else is in the batch.
    assert np.array_equal(encoder.embed(np.concatenate([eosin[:2], dense[:1]]))[2], fd[0])


def test_stain_stats_deconvolution_is_skimage_rgb2hed(he_patches):
    sums = stain.pooled_sums(he_patches[:2])
    expected = rgb2hed(sums.astype(np.float64) / (4 * 255.0), channel_axis=-1)
    assert np.allclose(stain.hed_of(sums), expected, atol=1e-5)


def test_stain_stats_on_real_tissue(he_patches):
    features = get_encoder("stain-stats").embed(he_patches)
    index = {name: i for i, name in enumerate(stain.FEATURE_NAMES)}
    assert features.shape == (len(he_patches), len(stain.FEATURE_NAMES))
    assert (features[:, index["nuclei_count"]] > 0).all()  # real H&E tissue has nuclei
    assert (features.std(0) > 0).sum() > 0.8 * features.shape[1]  # the features vary across patches


# -- torchscript --------------------------------------------------------------------------------
def test_torchscript_encoder_end_to_end(tiny_torchscript, demo_workspace, demo_catalog, he_patches):
    name = f"torchscript:{tiny_torchscript}"
    encoder = get_encoder(name)
    assert encoder.dim == 5 and encoder.name == name
    x = torch.from_numpy(encoders.imagenet_normalise(he_patches[:2]))
    assert np.allclose(encoder.embed(he_patches[:2]), TinyEncoder()(x).detach().numpy(), atol=1e-5)
    first = _ready_ids(demo_catalog)[:1]
    report = embed_slides(demo_catalog, demo_workspace, name, slide_ids=first)
    assert [r.outcome for r in report.results] == [EMBEDDED]
    row = store.feature_sets(demo_catalog, name)[first[0]]
    ids, features = store.load_features(demo_workspace, row)
    assert features.shape == (len(ids), 5) and row.dim == 5
    with pytest.raises(EncoderError, match="not found"):
        get_encoder("torchscript:/nonexistent/model.pt")


# -- embedding the catalog ----------------------------------------------------------------------
def _ready_ids(catalog) -> list[int]:
    with catalog.session() as session:
        return list(session.scalars(select(Slide.id).where(Slide.status == "ready").order_by(Slide.id)))


def _patch_ids(catalog, slide_id: int) -> np.ndarray:
    with catalog.session() as session:
        return np.asarray(session.scalars(select(Patch.id).where(Patch.slide_id == slide_id).order_by(Patch.id)).all())


def test_embed_writes_aligned_matrices_and_resumes(demo_workspace, demo_catalog):
    from wsireview.cli import main

    ready = _ready_ids(demo_catalog)
    assert len(ready) >= 4
    assert main(["--workspace", str(demo_workspace.root), "embed", "--encoder", "stain-stats", "--no-progress"]) == 0
    sets = store.feature_sets(demo_catalog, "stain-stats")
    assert sorted(sets) == ready
    with demo_catalog.session() as session:
        slides = {s.id: s for s in session.scalars(select(Slide)).all()}
    encoder = get_encoder("stain-stats")
    for slide_id, row in sets.items():
        ids, features = store.load_features(demo_workspace, row)
        assert np.array_equal(ids, _patch_ids(demo_catalog, slide_id))
        assert features.dtype == np.float16 and features.shape == (len(ids), encoder.dim) == (row.n_patches, row.dim)
        assert row.patch_size_px == slides[slide_id].patch_size_px and row.target_mpp == slides[slide_id].target_mpp
        assert not row.path.startswith("/")  # relative to the workspace
        assert np.isfinite(features.astype(np.float32)).all()
    # Row i really is patch i: re-read two patches of one slide and embed them directly.
    slide_id = ready[1]
    ids, features = store.load_features(demo_workspace, sets[slide_id])
    slide = slides[slide_id]
    with demo_catalog.session() as session:
        patches = {p.id: p for p in session.scalars(select(Patch).where(Patch.id.in_([int(ids[0]), int(ids[-1])])))}
    with SlideFile(demo_workspace.absolute(slide.path)) as reader:
        pixels = np.stack([reader.read_array(patches[i].x, patches[i].y, patches[i].size, slide.patch_size_px)
                           for i in (int(ids[0]), int(ids[-1]))])
    direct = encoder.embed(pixels)
    assert np.allclose(features[[0, -1]].astype(np.float32), direct, rtol=2e-3, atol=2e-3)
    assert store.features_status(demo_catalog)["stain-stats"] == {
        "slides": len(ready), "patches": sum(r.n_patches for r in sets.values()), "dim": encoder.dim}
    # Resume: nothing left to do, nothing rewritten.
    mtimes = {sid: demo_workspace.absolute(r.path).stat().st_mtime_ns for sid, r in sets.items()}
    again = embed_slides(demo_catalog, demo_workspace, "stain-stats")
    assert again.results == [] and again.already_done == len(ready)
    assert {sid: demo_workspace.absolute(r.path).stat().st_mtime_ns for sid, r in sets.items()} == mtimes


class _InterruptAfter(Encoder):
    """stain-stats that is interrupted (Ctrl-C) on its ``calls``-th batch."""

    def __init__(self, calls: int) -> None:
        self.inner = stain.StainStats()
        self.name, self.dim, self.input_px, self.batch_size = "stain-stats", self.inner.dim, None, 32
        self.calls = calls

    def _embed_chunk(self, batch):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return self.inner._embed_chunk(batch)


def test_interrupted_run_leaves_no_complete_looking_file(demo_workspace, demo_catalog, monkeypatch):
    first, second, third = _ready_ids(demo_catalog)[:3]
    batches_first = -(-len(_patch_ids(demo_catalog, first)) // 32)
    with pytest.raises(KeyboardInterrupt):
        embed_slides(demo_catalog, demo_workspace, _InterruptAfter(batches_first + 2),
                     slide_ids=[first, second, third])
    folder = store.features_path(demo_workspace, first, "stain-stats").parent
    assert sorted(store.feature_sets(demo_catalog, "stain-stats")) == [first]
    assert sorted(p.name for p in folder.iterdir()) == [f"slide-{first}.npy"]  # no partial file of the second
    # Interrupted while writing: neither file nor row.
    original = np.save

    def save_then_die(handle, array):
        original(handle, array)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(store.np, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            embed_slides(demo_catalog, demo_workspace, "stain-stats", slide_ids=[second])
    assert sorted(p.name for p in folder.iterdir()) == [f"slide-{first}.npy"]
    assert sorted(store.feature_sets(demo_catalog, "stain-stats")) == [first]
    # The next run does the rest and only the rest.
    report = embed_slides(demo_catalog, demo_workspace, "stain-stats", slide_ids=[first, second, third])
    assert [r.slide_id for r in report.results] == [second, third] and report.already_done == 1


def test_unreadable_slide_is_reported_and_skipped(demo_workspace, demo_catalog, monkeypatch):
    first, second, third = _ready_ids(demo_catalog)[:3]
    with demo_catalog.session() as session:
        bad_path = session.get(Slide, second).path
        session.execute(delete(Patch).where(Patch.slide_id == third))  # a slide with no patches
    real_read = embed._read_batch
    calls = {"n": 0}

    def flaky(slide_file, coords, out_px):
        if str(slide_file.path) == str(demo_workspace.absolute(bad_path)):
            calls["n"] += 1
            if calls["n"] >= 2:  # fails mid-way, after a first good batch
                raise SlideError("corrupt tile data: pixels cannot be read (test)")
        return real_read(slide_file, coords, out_px)

    monkeypatch.setattr(embed, "_read_batch", flaky)
    heard: list[tuple[str, float]] = []
    report = embed_slides(demo_catalog, demo_workspace, "stain-stats", slide_ids=[first, second, third],
                          batch_size=16, on_progress=lambda what, fraction: heard.append((what, fraction)))
    outcomes = {r.slide_id: r for r in report.results}
    # Progress through the one callback: never backwards (a failed slide counts as done), ends at 1,
    # and says which slide and how many patches.
    fractions = [f for _, f in heard]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    total = len(_patch_ids(demo_catalog, first)) + len(_patch_ids(demo_catalog, second))
    names = {r.name for r in report.results}
    assert all(any(w.startswith(f"embedding {n} with stain-stats:") for w, _ in heard) for n in names)
    assert heard[-2][0].endswith(f"{total:,} of {total:,} patches")
    assert heard[-1][0] == f"embedded 3 slides with stain-stats: {total:,} patches"
    assert outcomes[first].outcome == EMBEDDED
    assert outcomes[second].outcome == FAILED and "corrupt tile data" in outcomes[second].reason
    assert outcomes[third].outcome == EMPTY
    sets = store.feature_sets(demo_catalog, "stain-stats")
    assert sorted(sets) == [first, third]
    ids, features = store.load_features(demo_workspace, sets[third])
    assert ids.shape == (0,) and features.shape == (0, stain.StainStats.dim)
    with demo_catalog.session() as session:
        assert session.scalar(select(FeatureSet).where(FeatureSet.slide_id == second)) is None


def test_store_reads_older_npz_and_replaces_it_with_npy_records(demo_workspace, demo_catalog):
    """Workspaces made before the store moved to .npy records still load; re-embedding a slide
    writes the .npy and removes the old archive."""
    slide_id = _ready_ids(demo_catalog)[0]
    with demo_catalog.session() as session:
        slide = session.get(Slide, slide_id)
        session.expunge(slide)
    ids = _patch_ids(demo_catalog, slide_id)
    features = np.arange(ids.size * 3, dtype=np.float16).reshape(-1, 3)
    row = store.save_features(demo_catalog, demo_workspace, slide, "old-encoder", ids, features, 224)
    new_path = demo_workspace.absolute(row.path)
    assert new_path.suffix == ".npy"
    assert new_path.stat().st_mode & 0o777 == ordinary_mode()  # not mkstemp's private 0600
    records = np.load(new_path)
    assert np.array_equal(records["patch_id"], ids) and np.array_equal(records["features"], features)
    old_path = new_path.with_suffix(".npz")
    np.savez(old_path, patch_ids=ids, features=features)
    new_path.unlink()
    with demo_catalog.session() as session:
        session.get(FeatureSet, row.id).path = demo_workspace.relative(old_path)
    old_row = store.feature_sets(demo_catalog, "old-encoder")[slide_id]
    loaded_ids, loaded = store.load_features(demo_workspace, old_row)
    assert np.array_equal(loaded_ids, ids) and np.array_equal(loaded, features)
    store.save_features(demo_catalog, demo_workspace, slide, "old-encoder", ids, features + 1, 224)
    assert new_path.exists() and not old_path.exists()
    loaded_ids, loaded = store.load_features(demo_workspace, store.feature_sets(demo_catalog, "old-encoder")[slide_id])
    assert np.array_equal(loaded, features + 1)
