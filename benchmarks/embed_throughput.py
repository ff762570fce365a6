"""Embedding throughput: effnet-lite0 runtimes against the plain eager fp32 loop, in the same run.

1. Bare model on real H&E patches (cmu-1-small-region.svs from tests/data/slides): patches/s and
   cosine similarity of the features to eager fp32.
2. End to end (`embed_slides`: catalog, reading with the thread pool, model, atomic write) on a
   workspace with a generated demo cohort plus the real slide; reading alone is timed too, so the
   table says where the time goes.

    .venv/bin/python benchmarks/embed_throughput.py [--threads 2] [--compile] [--demo-slides 3]

The machine may be shared: the load average at the start is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from sqlalchemy import delete

from wsireview.catalog import FeatureSet, open_catalog
from wsireview.features import embed as embed_mod
from wsireview.features.encoders import Encoder, cpu_has_bf16, get_encoder
from wsireview.slides.reader import SlideFile
from wsireview.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
REAL_SLIDE = ROOT / "tests" / "data" / "slides" / "cmu-1-small-region.svs"
console = Console(width=130)


def real_patches(limit: int) -> tuple[np.ndarray, float, float]:
    """Tissue patches of the real slide (224 px, 0.5 µm/px, stride 112); reading rate on 1 and 2 threads."""
    with SlideFile(REAL_SLIDE) as slide:
        width, height = slide.dimensions
        coords = [(x, y) for y in range(0, height - 224, 112) for x in range(0, width - 224, 112)]
        started = time.perf_counter()
        pixels = [slide.read_array(x, y, 224, 224) for x, y in coords]
        one = len(coords) / (time.perf_counter() - started)
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            list(pool.map(lambda c: slide.read_array(c[0], c[1], 224, 224), coords))
            two = len(coords) / (time.perf_counter() - started)
    tissue = [p for p in pixels if p.mean() < 200]
    step = max(1, len(tissue) // limit)
    return np.stack(tissue[::step][:limit]), one, two


def timed(encoder: Encoder, patches: np.ndarray, warm: int) -> tuple[np.ndarray, float, float]:
    """Features, patches/s after warm-up, and the warm-up (first call, compile) seconds."""
    started = time.perf_counter()
    encoder.embed(patches[:warm])
    setup = time.perf_counter() - started
    started = time.perf_counter()
    out = encoder.embed(patches)
    return out, len(patches) / (time.perf_counter() - started), setup


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def bare_model(args) -> dict[str, float]:
    patches, read1, read2 = real_patches(args.patches)
    console.print(f"{len(patches)} real tissue patches; OpenSlide reads 224 px patches at "
                  f"{read1:,.0f}/s on 1 thread, {read2:,.0f}/s on 2")
    configs = [("eager", "fp32", 64), ("eager", "fp32", 8), ("onnx", "fp32", 8), ("onnx", "fp32", 16),
               ("eager", "bf16", 8)]
    if args.compile or cpu_has_bf16():
        configs.append(("compile", "bf16" if cpu_has_bf16() else "fp32", 8))
    table = Table(title=f"effnet-lite0, bare model, {args.threads} thread(s), real H&E patches")
    for col in ("runtime", "precision", "batch", "patches/s", "x baseline", "cos mean", "cos min", "setup s"):
        table.add_column(col, justify="right" if col not in ("runtime", "precision") else "left")
    reference, base = None, None
    rates: dict[str, float] = {}
    for runtime, precision, batch in configs:
        started = time.perf_counter()
        encoder = get_encoder("effnet-lite0", precision=precision, runtime=runtime, threads=args.threads,
                              batch_size=batch)
        build = time.perf_counter() - started
        sample = patches
        if precision == "bf16" and not cpu_has_bf16():
            sample = patches[:8]  # emulated bf16 is ~100x slower: a few patches tell enough
        out, rate, setup = timed(encoder, sample, warm=batch)
        if reference is None:
            reference, base = out, rate
        sims = cosine(out, reference[: len(out)])
        note = " (emulated: no native bf16)" if precision == "bf16" and not cpu_has_bf16() else ""
        table.add_row(runtime, precision + note, str(batch), f"{rate:,.1f}", f"{rate / base:.1f}x",
                      f"{sims.mean():.5f}", f"{sims.min():.5f}", f"{build + setup:.1f}")
        rates[f"{runtime}-{precision}-{batch}"] = rate
        encoder.close()
    stain = get_encoder("stain-stats")
    _, rate, setup = timed(stain, patches, warm=8)
    table.add_row("stain-stats", "fp32", str(stain.batch_size), f"{rate:,.1f}", f"{rate / base:.1f}x", "-", "-",
                  f"{setup:.1f}")
    console.print(table)
    return rates


class _NoModel(Encoder):
    """Reads only: zero features, to time the reading pipeline on its own."""

    name, dim, input_px, batch_size, backend = "no-model", 1, 224, 8, "none"

    def _embed_chunk(self, batch):
        return np.zeros((len(batch), 1), dtype=np.float32)


def end_to_end(args) -> None:
    from wsireview.demo import generate_cohort
    from wsireview.ingest import add_paths

    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    try:
        cohort = tmp / "cohort"
        generate_cohort(cohort, n_slides=args.demo_slides, size="small", seed=0)
        ws = Workspace.resolve(tmp / "ws").ensure()
        catalog = open_catalog(ws.db_url)
        add_paths(catalog, ws, [cohort, REAL_SLIDE])
        table = Table(title="end to end: embed_slides (catalog, threaded reading, model, atomic write)")
        for col in ("encoder", "backend", "batch", "slides", "patches", "patches/s", "model ready s"):
            table.add_column(col, justify="left" if col in ("encoder", "backend") else "right")
        runs = [("no-model (reading only)", _NoModel(), None),
                ("effnet-lite0 baseline", get_encoder("effnet-lite0", precision="fp32", runtime="eager",
                                                      threads=args.threads, batch_size=64), 64),
                ("effnet-lite0 auto", "effnet-lite0", None),
                ("stain-stats", "stain-stats", None)]
        for label, encoder, batch in runs:
            with catalog.session() as session:
                session.execute(delete(FeatureSet))
            shutil.rmtree(ws.features, ignore_errors=True)
            report = embed_mod.embed_slides(catalog, ws, encoder, batch_size=batch, workers=args.workers,
                                            threads=args.threads)
            table.add_row(label, report.backend, str(batch or "default"), str(len(report.results)),
                          f"{report.patches:,}", f"{report.patches_per_second:,.1f}", f"{report.load_seconds:.1f}")
        catalog.close()
        console.print(table)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="compute threads")
    parser.add_argument("--workers", type=int, default=2, help="reading threads (end to end)")
    parser.add_argument("--patches", type=int, default=64, help="real patches for the bare-model runs")
    parser.add_argument("--demo-slides", type=int, default=3, help="demo slides for the end-to-end run")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (default only on bfloat16 CPUs: it takes a minute or more)")
    parser.add_argument("--skip-e2e", action="store_true", help="bare model only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                  f"native bf16: {cpu_has_bf16()}, {os.cpu_count()} cores, load average {load:.2f} at start")
    bare_model(args)
    if not args.skip_e2e:
        end_to_end(args)


if __name__ == "__main__":
    main()
