"""`--device auto|cpu|cuda`: one rule picks the torch device; the CPU path is today's, unchanged."""

from __future__ import annotations

import shutil
from contextlib import closing

import numpy as np
import pytest
import torch
from sqlalchemy import select

from wsireview.catalog import Slide, open_catalog
from wsireview.cli import main
from wsireview.devices import CPU, DeviceError, fitted_batch_size, resolve_device
from wsireview.features import store
from wsireview.features.encoders import get_encoder
from wsireview.workspace import Workspace

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.fixture
def tiny_model(tiny_torchscript) -> str:
    return f"torchscript:{tiny_torchscript}"


@no_gpu
def test_auto_is_the_cpu_without_a_gpu():
    assert resolve_device("auto") == CPU == resolve_device("cpu")
    assert fitted_batch_size(CPU, 8, 1) == 8  # the CPU keeps the encoder's own batch
    with pytest.raises(DeviceError, match="--device cuda: torch sees no GPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize("command", [["embed", "--encoder", "stain-stats"], ["retrain", "--encoder", "stain-stats"]])
def test_cuda_without_a_gpu_is_one_line_and_exit_1(demo_workspace, capsys, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["--workspace", str(demo_workspace.root), *command, "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: --device cuda: torch sees no GPU") and "\n" not in err
    with closing(open_catalog(demo_workspace.db_url)) as catalog:  # refused before any work
        assert store.feature_sets(catalog, "stain-stats") == {}


def test_device_cpu_stores_the_same_features_as_the_default(demo_workspace, tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the default is the CPU on any machine
    other = tmp_path / "other"
    shutil.copytree(demo_workspace.root, other)
    with closing(open_catalog(demo_workspace.db_url)) as catalog, catalog.session() as session:
        first = session.scalars(select(Slide.id).where(Slide.status == "ready").order_by(Slide.id)).first()
    for root, extra in ((demo_workspace.root, []), (other, ["--device", "cpu"])):
        assert main(["--workspace", str(root), "embed", "--encoder", tiny_model, "--slide", str(first),
                     "--no-progress", *extra]) == 0
    matrices = []
    for root in (demo_workspace.root, other):
        workspace = Workspace.resolve(root)
        with closing(open_catalog(workspace.db_url)) as catalog:
            ids, features = store.load_features(workspace, store.feature_sets(catalog, tiny_model)[first])
        assert features.shape == (len(ids), 5) and len(ids) > 0 and np.abs(features).sum() > 0
        matrices.append((ids, features))
    assert np.array_equal(matrices[0][0], matrices[1][0])
    assert matrices[0][1].tobytes() == matrices[1][1].tobytes()  # bit for bit


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_encoder_and_training_match_the_cpu(tiny_model):
    from wsireview.learn.train import TrainParams, fit, make_bag, predict

    gpu = resolve_device("cuda")
    patches = np.random.default_rng(0).integers(0, 256, (40, 224, 224, 3), dtype=np.uint8)
    on_gpu = get_encoder(tiny_model, device="cuda")
    assert on_gpu.batch_size >= 16
    assert np.allclose(on_gpu.embed(patches), get_encoder(tiny_model, device="cpu").embed(patches), atol=1e-4)
    rng = np.random.default_rng(1)
    bags = [make_bag(i, torch.from_numpy(rng.normal(float(i % 2), 1, (30, 8)).astype(np.float32)), float(i % 2),
                     np.zeros(0, dtype=np.int64), np.zeros(0)) for i in range(12)]
    params = TrainParams(max_epochs=5, min_epochs=5)
    cpu_model, _ = fit(bags, params, seed=0, epochs=5)
    gpu_model, _ = fit(bags, params, seed=0, epochs=5, device=gpu)
    assert next(gpu_model.parameters()).device == CPU  # back on the CPU for the checkpoint
    cpu_p = [p.slide_probability for p in predict(cpu_model, bags)]
    gpu_p = [p.slide_probability for p in predict(gpu_model, bags, device=gpu)]
    assert np.allclose(cpu_p, gpu_p, atol=1e-3)
