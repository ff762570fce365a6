"""A tiny TorchScript encoder for the tests that bring their own model (`torchscript:PATH`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


class TinyEncoder(torch.nn.Module):
    """5 features per patch: one strided convolution, averaged; its weights are fixed by seed 0."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 5, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def save_tiny_torchscript(path: Path) -> Path:
    with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated; users still bring it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyEncoder()).save(str(path))
    return path
