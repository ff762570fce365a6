"""Generate a cohort of demo slides with their labels and ground truth.

Layout of ``out_dir``::

    demo-000.tiff ...        the slides (pyramidal, tiled, JPEG, 0.5 µm/px)
    demo-000.geojson ...     lesion polygons in level-0 px (an empty FeatureCollection on normal slides)
    labels.csv               slide,label  (lesion | normal)
    truth/demo-000.tissue.png     the generator's tissue mask (folds count as tissue; pen and dust do not)
    truth/demo-000.artifacts.png  where pen and dust lie
    truth/demo-000.mimics.geojson  medium and hard: the mimics (classified "Mimic", label "not lesion")
    truth/cohort.json        seed, difficulty, size, truth downsample, and per-slide facts (lesion share, artifacts...)
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from wsireview.demo.difficulty import DEFAULT_DIFFICULTY, difficulty as check_difficulty
from wsireview.demo.layout import plan_slide
from wsireview.demo.render import render_region
from wsireview.demo.spec import SlideSpec
from wsireview.demo.tiff import TILE, tile_grid, write_pyramid_tiff
from wsireview.demo.truth import (
    coarse_masks, lesion_polygons, mimic_polygons, polygon_area, truth_downsample, write_geojson, write_mask,
    write_mimics_geojson,
)
from wsireview.errors import WsireviewError

SIZES: dict[str, tuple[int, int]] = {
    # 20 x 15 patches of 224 px at 0.5 µm/px; tissue covers ~55%, so ~150-250 tissue patches.
    "small": (4480, 3360),
    # A realistic biopsy-slide size, for benchmarks.
    "large": (40000, 30000),
}
MPP = 0.5
TRUTH_DIR = "truth"
MANIFEST = "cohort.json"
# Slides with more level-0 tiles than this are rendered tile-parallel rather than slide-parallel.
TILE_PARALLEL_ABOVE = 400

Progress = Callable[[int], None]


@dataclass
class DemoSlide:
    """One generated slide and where its ground truth is."""

    name: str
    path: Path
    label: str
    width: int
    height: int
    levels: list[tuple[int, int]]
    geojson: Path
    tissue_mask: Path
    artifact_mask: Path
    artifacts: list[str]
    lesions: int
    lesion_area: float  # level-0 px^2 of the ground-truth polygons
    tissue_area: float  # level-0 px^2 of tissue in the generator's mask
    seconds: float
    mimics: dict[str, int] = field(default_factory=dict)  # mimic regions (polygons) per kind (medium and hard)
    mimics_geojson: Path | None = None

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def lesion_share(self) -> float:
        return self.lesion_area / self.tissue_area if self.tissue_area else 0.0


@dataclass
class DemoCohort:
    out_dir: Path
    seed: int
    size: tuple[int, int]
    truth_downsample: int
    labels_csv: Path
    slides: list[DemoSlide] = field(default_factory=list)
    difficulty: str = DEFAULT_DIFFICULTY

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.slides]


class DemoError(WsireviewError):
    """A demo cohort the options cannot make (a size too small, say): a usage mistake, exit code 2."""

    code = 2


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """``small``, ``large`` or ``WxH`` (level-0 pixels) as (width, height)."""
    if isinstance(size, tuple):
        width, height = size
    elif size in SIZES:
        width, height = SIZES[size]
    else:
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(size))
        if not match:
            raise DemoError(f"size must be small, large or WxH (e.g. 8000x6000), not {size!r}")
        width, height = int(match.group(1)), int(match.group(2))
    if min(width, height) < 1024:
        raise DemoError(f"a demo slide needs at least 1024 px a side, got {width}x{height}")
    return int(width), int(height)


def slide_name(index: int) -> str:
    return f"demo-{index:03d}.tiff"


def generate_cohort(
    out_dir: str | os.PathLike,
    n_slides: int = 12,
    size: str | tuple[int, int] = "small",
    seed: int = 0,
    workers: int | None = None,
    progress: Progress | None = None,
    difficulty: str = DEFAULT_DIFFICULTY,
) -> DemoCohort:
    """Write ``n_slides`` demo slides, ``labels.csv`` and the ground truth into ``out_dir``.

    Slide ``i`` depends only on (seed, i, size, difficulty): a smaller cohort with the same seed
    holds the same first slides. ``progress`` is called with the number of level-0 tiles just written.
    """
    if n_slides < 1:
        raise ValueError("n_slides must be at least 1")
    check_difficulty(difficulty)
    width, height = parse_size(size)
    out = Path(out_dir)
    (out / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, 8))
    tiles_per_slide = len(tile_grid(width, height))
    jobs = [(str(out), seed, i, width, height, difficulty) for i in range(n_slides)]

    slides: list[DemoSlide] = []
    if tiles_per_slide > TILE_PARALLEL_ABOVE or workers == 1 or n_slides == 1:
        for job in jobs:
            slides.append(generate_slide(*job, workers=workers, progress=progress))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, n_slides), mp_context=_context(), initializer=_init_worker) as pool:
            futures = [pool.submit(generate_slide, *job) for job in jobs]
            for future in as_completed(futures):
                slides.append(future.result())
                if progress:
                    progress(tiles_per_slide)
    slides.sort(key=lambda s: s.name)
    _remove_stale(out, slides)

    cohort = DemoCohort(out, seed, (width, height), truth_downsample(width, height), out / "labels.csv", slides,
                        difficulty)
    _write_labels(cohort)
    _write_manifest(cohort)
    return cohort


def generate_slide(
    out_dir: str, seed: int, index: int, width: int, height: int, difficulty: str = DEFAULT_DIFFICULTY,
    workers: int = 1, progress: Progress | None = None,
) -> DemoSlide:
    """Render slide ``index`` of the cohort with ``seed`` and write it with its ground truth."""
    start = time.perf_counter()
    out = Path(out_dir)
    spec = plan_slide(seed, index, width, height, difficulty)
    path = out / slide_name(index)
    description = f"wsireview demo slide (synthetic H&E) seed={seed} index={index}"
    if difficulty != DEFAULT_DIFFICULTY:
        description += f" difficulty={difficulty}"
    with threadpool_limits(1):  # same arithmetic in a worker or here, and no spinning BLAS threads
        tiles = _tiles(spec, workers, progress)
        levels = write_pyramid_tiff(path, width, height, tiles, mpp=MPP, description=description)
        ds = truth_downsample(width, height)
        tissue, artifacts = coarse_masks(spec, ds)
    tissue_path = out / TRUTH_DIR / f"{path.stem}.tissue.png"
    artifact_path = out / TRUTH_DIR / f"{path.stem}.artifacts.png"
    write_mask(tissue_path, tissue)
    write_mask(artifact_path, artifacts)
    polygons = lesion_polygons(spec)
    geojson = out / f"{path.stem}.geojson"
    write_geojson(geojson, polygons)
    mimics = mimic_polygons(spec)
    mimics_path = None
    if spec.mimics:
        mimics_path = out / TRUTH_DIR / f"{path.stem}.mimics.geojson"
        write_mimics_geojson(mimics_path, mimics)
    return DemoSlide(
        name=path.name, path=path, label=spec.label, width=width, height=height, levels=levels, geojson=geojson,
        tissue_mask=tissue_path, artifact_mask=artifact_path, artifacts=list(spec.artifacts),
        lesions=len(polygons), lesion_area=float(sum(polygon_area(p) for p in polygons)),
        tissue_area=float(tissue.sum()) * ds * ds, seconds=time.perf_counter() - start,
        mimics=dict(Counter(kind for kind, _ in mimics)),
        mimics_geojson=mimics_path,
    )


def _tiles(spec: SlideSpec, workers: int, progress: Progress | None) -> Iterator[np.ndarray]:
    """Level-0 tiles in file order, rendered here or by a pool that stays a few tiles ahead."""
    origins = tile_grid(spec.width, spec.height)
    if workers <= 1 or len(origins) <= TILE_PARALLEL_ABOVE:
        for x, y in origins:
            yield render_region(spec, x, y, TILE, TILE)
            if progress:
                progress(1)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_init_worker, initargs=(spec,)) as pool:
        yield from _ordered(pool, origins, ahead=4 * workers, progress=progress)


def _ordered(pool: Executor, origins, ahead: int, progress: Progress | None) -> Iterator[np.ndarray]:
    pending: deque = deque()
    queue = iter(origins)
    for origin in queue:
        pending.append(pool.submit(_render_in_worker, origin))
        if len(pending) >= ahead:
            break
    while pending:
        tile = pending.popleft().result()
        nxt = next(queue, None)
        if nxt is not None:
            pending.append(pool.submit(_render_in_worker, nxt))
        if progress:
            progress(1)
        yield tile


_WORKER_SPEC: SlideSpec | None = None


def _init_worker(spec: SlideSpec | None = None) -> None:
    """One BLAS thread per worker: the processes already fill the cores, and oversubscribed
    OpenBLAS threads spin (measured: 4 slides on 2 cores took 23 s instead of 10 s)."""
    global _WORKER_SPEC
    threadpool_limits(1)
    _WORKER_SPEC = spec


def _render_in_worker(origin: tuple[int, int]) -> np.ndarray:
    assert _WORKER_SPEC is not None
    return render_region(_WORKER_SPEC, origin[0], origin[1], TILE, TILE)


def _context():
    """fork on Linux: works from any caller (a script without a __main__ guard, stdin, a notebook),
    and the workers touch only numpy, tifffile and imagecodecs, never a parent's torch or Textual
    threads. Elsewhere spawn, the platform's safe default."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _remove_stale(out: Path, slides: list[DemoSlide]) -> None:
    """Delete demo slides and truth files this run did not write (left by an earlier, larger or harder run)."""
    written = {p for s in slides for p in (s.path, s.geojson, s.tissue_mask, s.artifact_mask, s.mimics_geojson) if p}
    for path in list(out.glob("demo-*.*")) + list((out / TRUTH_DIR).glob("demo-*.*")):
        if re.fullmatch(r"demo-\d{3}\.(tiff|geojson|tissue\.png|artifacts\.png|mimics\.geojson)", path.name) \
                and path not in written:
            path.unlink()


def _write_labels(cohort: DemoCohort) -> None:
    with open(cohort.labels_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label"])
        for s in cohort.slides:
            writer.writerow([s.name, s.label])


def _write_manifest(cohort: DemoCohort) -> None:
    def entry(s: DemoSlide) -> dict:
        data = asdict(s)
        for key in ("path", "geojson", "tissue_mask", "artifact_mask", "mimics_geojson"):
            if data[key] is not None:
                data[key] = str(Path(data[key]).relative_to(cohort.out_dir))
        data["lesion_share"] = round(s.lesion_share, 5)
        data["seconds"] = round(s.seconds, 2)
        return data

    manifest = {
        "generator": "wsireview demo",
        "seed": cohort.seed,
        "difficulty": cohort.difficulty,
        "size": list(cohort.size),
        "mpp": MPP,
        "truth_downsample": cohort.truth_downsample,
        "slides": [entry(s) for s in cohort.slides],
    }
    (cohort.out_dir / TRUTH_DIR / MANIFEST).write_text(json.dumps(manifest, indent=1))
