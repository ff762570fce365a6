"""Bring your own encoder: a TorchScript module (e.g. a pathology foundation model exported with torch.jit).

Contract: the module takes a float32 batch ``N x 3 x H x W``, RGB scaled to 0..1 then normalised
with the ImageNet mean and std, and returns ``N x D``. Patches are given at 224 px.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from wsireview.features.encoders import Encoder, EncoderError, imagenet_normalise


class TorchScriptEncoder(Encoder):
    input_px = 224
    batch_size = 16
    backend = "torchscript fp32"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.name = f"torchscript:{path}"  # as given: the catalog keys feature sets by this name
        if not self.path.is_file():
            raise EncoderError(f"TorchScript model not found: {self.path}")
        try:
            with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location="cpu").eval()
        except Exception as error:
            raise EncoderError(f"cannot load TorchScript model {self.path}: {error}") from error
        probe = self._run(np.full((1, self.input_px, self.input_px, 3), 255, dtype=np.uint8))
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise EncoderError(f"{self.path} must return N x D features; it returned shape {tuple(probe.shape)}")
        self.dim = int(probe.shape[1])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(imagenet_normalise(batch)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float().numpy()

    def _embed_chunk(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)
