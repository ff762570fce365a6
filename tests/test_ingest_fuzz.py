"""Seeded damage to real slide files: whatever the bytes, ingest ends each file with a reason or a
ready slide whose patches read, within its time and memory limits, and the batch goes on."""

from __future__ import annotations

import random
import resource
from pathlib import Path

import pytest
from sqlalchemy import select

from slide_mutations import flip_bits, flip_header_field, set_size, small_pyramid, truncate
from wsireview.catalog import FAILED, READY, Patch, Slide
from wsireview.ingest import add_paths
from wsireview.slides.examine import verify
from wsireview.slides.integrity import sample_indices
from wsireview.slides.isolated import JobFailed, ReaderLimits, ReaderPool

SEED = 13
LIMITS = ReaderLimits(workers=2, timeout_s=30, memory_gb=1.5)


def mutants(real_slides: Path, folder: Path, seed: int = SEED) -> list[Path]:
    """Damaged copies of two real slides: IFD values with a bit flipped, header bytes flipped,
    truncations, and declared sizes that no tile table backs."""
    import numpy as np

    from wsireview.slides.reader import SlideFile

    rng = random.Random(seed)
    cmu, boxes = real_slides / "cmu-1-small-region.svs", real_slides / "boxes-pyramid.tiff"
    folder.mkdir()
    with SlideFile(cmu) as slide:  # real tissue as a 2-level generic TIFF (sizes stored as LONG)
        pyramid = small_pyramid(np.asarray(slide.read_region(400, 800, 1024, 1024)), folder.parent / "pyramid.tiff")
    made = []
    for k in range(6):
        made.append(flip_header_field(cmu, folder / f"cmu-ifd-{k}.svs", seed=rng.randrange(1 << 30)))
    for k in range(3):
        made.append(flip_header_field(boxes, folder / f"boxes-ifd-{k}.tiff", seed=rng.randrange(1 << 30)))
    for k in range(4):
        made.append(flip_header_field(pyramid, folder / f"pyramid-ifd-{k}.tiff", seed=rng.randrange(1 << 30)))
    for k in range(2):
        made.append(flip_bits(cmu, folder / f"cmu-bits-{k}.svs", seed=rng.randrange(1 << 30), flips=8,
                              header_bytes=1 << 16))
    for k, keep in enumerate((0.02, 0.3, 0.66)):
        made.append(truncate(cmu, folder / f"cmu-cut-{k}.svs", keep))
    for k, (w, h) in enumerate(((38_528, 38_528), (1, 65_535))):
        made.append(set_size(cmu, folder / f"cmu-size-{k}.svs", w, h))
    made.append(set_size(pyramid, folder / "pyramid-size.tiff", 67_113_344, 1024))  # one flipped bit's worth
    return made


@pytest.mark.slow
def test_damaged_slides_end_with_a_reason_or_readable_pixels(catalog, workspace, real_slides, tmp_path):
    files = mutants(real_slides, tmp_path / "mutants")
    parent_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = add_paths(catalog, workspace, files, limits=LIMITS)
    parent_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - parent_before) / 1024
    children_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    assert len(report.results) == len(files)  # every file has an outcome; none stopped the batch
    assert parent_growth_mb < 300
    assert children_peak_mb < LIMITS.memory_gb * 1024
    with catalog.session() as session:
        slides = session.scalars(select(Slide)).all()
        session.expunge_all()
    by_status = {s.name: s for s in slides}
    assert {r.path.name for r in report.results if r.outcome != "duplicate"} <= set(by_status)
    failed = [s for s in slides if s.status == FAILED]
    for slide in failed:
        assert slide.reason and "\n" not in slide.reason and "Traceback" not in slide.reason, slide.name
    for name in ("cmu-size-0.svs", "pyramid-size.tiff", "cmu-cut-0.svs"):
        assert by_status[name].status == FAILED, (name, by_status[name].status)

    # Every ready slide's patches read back, checked again here (in workers: these files are damaged).
    ready = [s for s in slides if s.status == READY]
    with ReaderPool(LIMITS) as pool:
        for slide in ready:
            with catalog.session() as session:
                positions = session.execute(select(Patch.x, Patch.y).where(Patch.slide_id == slide.id)
                                            .order_by(Patch.y, Patch.x)).all()
            sample = [tuple(positions[i]) for i in sample_indices(len(positions))]
            pool.submit(slide.name, verify, Path(slide.path), sample, slide.patch_size_level0 or 1,
                        slide.patch_size_px or 224)
        unreadable = {name: value.reason for name, value in pool.results() if isinstance(value, JobFailed)}
    assert unreadable == {}
    print(f"\nfuzz: {len(files)} files, {len(failed)} failed with a reason, {len(ready)} ready, "
          f"parent grew {parent_growth_mb:.0f} MB, largest worker {children_peak_mb:.0f} MB")
