"""Synthetic slides with known lesion patches, straight into a catalog and feature store.

For tests and the retrain benchmark: no images, just Slide/Patch rows and feature matrices in
which a few patches of each positive slide carry a signal along one hidden direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import insert, select

from wsireview.catalog import Catalog, Patch, Slide
from wsireview.features.store import save_features
from wsireview.workspace import Workspace


@dataclass
class SyntheticCohort:
    slide_ids: list[int]
    labels: dict[int, str]
    lesion_patches: set[int]  # patch ids that carry the signal
    patch_slide: dict[int, int]
    dust_patches: set[int] = field(default_factory=set)  # near-identical look-alikes (see make_synthetic_cohort)


def make_synthetic_cohort(
    catalog: Catalog,
    workspace: Workspace,
    encoder: str,
    n_slides: int = 12,
    n_patches: int = 150,
    dim: int = 32,
    lesion_patches: tuple[int, int] = (3, 8),
    signal: float = 5.0,
    seed: int = 0,
    unlabelled: int = 0,
    dust: int = 0,
) -> SyntheticCohort:
    """Slides alternate lesion/normal (the last ``unlabelled`` get no label); lesion slides hold
    a small cluster of neighbouring patches shifted by ``signal`` along a random unit direction.

    Wide features (``dim`` > 64) are, like real embeddings, a 32-d latent signal mixed into
    ``dim`` numbers plus a little noise; the lesion shift lives in the latent space.

    ``dust`` > 0: every lesion slide and the first normal one carry ``dust`` near-identical
    patches far from all others (a dust speck scanned on many slides, mostly lesion ones, so it
    draws attention): what an ``artifact`` verdict on one of them should teach about the rest.
    """
    rng = np.random.default_rng(seed)
    latent = min(dim, 32) if dim > 64 else dim
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent) if latent != dim else None
    direction = rng.normal(size=latent)
    direction /= np.linalg.norm(direction)
    dust_rng = np.random.default_rng([seed, 99])  # its own stream: cohorts without dust stay as they were
    dust_centre = 4.0 * dust_rng.normal(size=latent)
    side = int(np.ceil(np.sqrt(n_patches)))
    cohort = SyntheticCohort([], {}, set(), {})
    for s in range(n_slides):
        label = "lesion" if s % 2 == 0 else "normal"
        with catalog.session() as session:
            slide = Slide(name=f"synthetic-{seed}-{s:03d}", path=f"synthetic://{seed}/{s}", status="ready",
                          width=side * 224, height=side * 224, patch_size_px=224, patch_size_level0=224,
                          target_mpp=0.5, label=label if s < n_slides - unlabelled else None)
            session.add(slide)
            session.flush()
            sid = slide.id
            session.execute(insert(Patch), [
                {"slide_id": sid, "x": (k % side) * 224, "y": (k // side) * 224, "size": 224, "tissue_fraction": 1.0}
                for k in range(n_patches)
            ])
            patch_ids = np.array(session.scalars(select(Patch.id).where(Patch.slide_id == sid).order_by(Patch.id)).all())
        feats = rng.normal(size=(n_patches, latent)).astype(np.float32)
        if label == "lesion":
            k = int(rng.integers(lesion_patches[0], lesion_patches[1] + 1))
            start = int(rng.integers(0, n_patches - k))
            hit = np.arange(start, start + k)
            feats[hit] += signal * direction
            cohort.lesion_patches.update(int(p) for p in patch_ids[hit])
        if dust and (label == "lesion" or s == 1):
            spot = dust_rng.choice(np.setdiff1d(np.arange(n_patches), cohort_rows(cohort, patch_ids)), dust,
                                   replace=False)
            feats[spot] = dust_centre + 0.05 * dust_rng.normal(size=(dust, latent))
            cohort.dust_patches.update(int(p) for p in patch_ids[spot])
        if mixing is not None:
            feats = feats @ mixing + 0.1 * rng.standard_normal((n_patches, dim), dtype=np.float32)
        with catalog.session() as session:
            slide = session.get_one(Slide, sid)
        save_features(catalog, workspace, slide, encoder, patch_ids, feats, 224)
        cohort.slide_ids.append(sid)
        cohort.labels[sid] = label
        cohort.patch_slide.update({int(p): sid for p in patch_ids})
    return cohort


def cohort_rows(cohort: SyntheticCohort, patch_ids: np.ndarray) -> np.ndarray:
    """Rows of ``patch_ids`` that already carry the lesion signal."""
    return np.flatnonzero(np.isin(patch_ids, list(cohort.lesion_patches)))
