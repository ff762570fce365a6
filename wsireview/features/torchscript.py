"""Bring your own encoder: a TorchScript module (e.g. a pathology foundation model exported with torch.jit).

Contract: the module takes a float32 batch ``N x 3 x H x W``, RGB scaled to 0..1 then normalised
with the ImageNet mean and std, and returns ``N x D``. Patches are given at 224 px.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from wsireview.devices import CPU, fitted_batch_size
from wsireview.features.encoders import Encoder, EncoderError, imagenet_normalise

GPU_BYTES_PER_PATCH = 64 * 2**20  # an unknown model: room for a ViT-sized one's activations per 224 px patch


class TorchScriptEncoder(Encoder):
    input_px = 224
    batch_size = 16
    backend = "torchscript fp32"

    def __init__(self, path: str | Path, device: torch.device = CPU) -> None:
        self.device = device
        self.path = Path(path).expanduser()
        self.name = f"torchscript:{path}"  # as given: the catalog keys feature sets by this name
        if not self.path.is_file():
            raise EncoderError(f"TorchScript model not found: {self.path}")
        try:
            with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as error:
            raise EncoderError(f"cannot load TorchScript model {self.path}: {error}") from error
        probe = self._run(np.full((1, self.input_px, self.input_px, 3), 255, dtype=np.uint8))
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise EncoderError(f"{self.path} must return N x D features; it returned shape {tuple(probe.shape)}")
        self.dim = int(probe.shape[1])
        if device.type == "cuda":
            self.batch_size = fitted_batch_size(device, self.batch_size, GPU_BYTES_PER_PATCH)
            self.backend = f"torchscript fp32 on {torch.cuda.get_device_name(device)}, batch {self.batch_size}"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(imagenet_normalise(batch))
            out = self.module(x.to(self.device) if self.device.type != "cpu" else x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().cpu().numpy()

    def _embed_chunk(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)
