"""Which torch device embedding and training run on: one setting (``--device``) and one rule.

``auto`` is CUDA when torch sees a GPU, else the CPU; ``cpu`` is today's path, unchanged; ``cuda``
without a GPU is refused in one line. The device never changes what a result means: training
keeps its batch sizes and seeds (only how fast it runs differs), and results come back to the
CPU as numpy arrays.
"""

from __future__ import annotations

from typing import Literal

import torch

from wsireview.errors import WsireviewError

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[DeviceName, ...] = ("auto", "cpu", "cuda")
DEFAULT_DEVICE: DeviceName = "auto"

CPU = torch.device("cpu")
GPU_BATCH_CAP = 256  # patches per model call on a GPU: past this the throughput no longer grows
GPU_MEMORY_SHARE = 0.5  # of the free GPU memory a batch may take (the rest: weights, workspace, other jobs)


class DeviceError(WsireviewError):
    """A device that cannot be used here (unknown name, CUDA without a GPU)."""


def resolve_device(name: str = DEFAULT_DEVICE) -> torch.device:
    """The torch device for ``name``: ``auto`` = CUDA when ``torch.cuda.is_available()``, else CPU."""
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cpu":
        return CPU
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise DeviceError("--device cuda: torch sees no GPU (torch.cuda.is_available() is False); "
                          "use --device cpu or auto")
    return CPU


def fitted_batch_size(device: torch.device, cpu_batch: int, bytes_per_item: int, cap: int = GPU_BATCH_CAP) -> int:
    """The batch to run on ``device``: ``cpu_batch`` on the CPU; on a GPU as many items as
    ``GPU_MEMORY_SHARE`` of its free memory holds at ``bytes_per_item``, at least ``cpu_batch``,
    at most ``cap``. Only for inference, where the batch size does not change the numbers."""
    if device.type != "cuda":
        return cpu_batch
    free, _total = torch.cuda.mem_get_info(device)
    fits = int(free * GPU_MEMORY_SHARE) // max(1, bytes_per_item)
    return max(cpu_batch, min(cap, fits))
