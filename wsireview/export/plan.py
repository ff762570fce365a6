"""Where each exported patch sits and at what resolution: the geometry every format shares.

By default a patch is exported exactly as catalogued (level-0 square, read out at the slide's
``patch_size_px``). ``--patch-size`` / ``--mpp`` change the output: the level-0 side is derived
from the slide's resolution like the ingest does, and the square keeps the patch's centre (a
lesion centred in the reviewed patch stays centred), clamped inside the slide.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from wsireview.catalog import Catalog, Slide
from wsireview.export.naming import anonymous_name, unique_stems
from wsireview.export.selection import LabeledPatch
from wsireview.slides.reader import DEFAULT_PATCH_SIZE, DEFAULT_TARGET_MPP, level0_mpp, patch_resolution
from wsireview.workspace import Workspace

# Namespace of the stable feature ids (uuid5 of the slide's pseudonym and the square).
ID_NAMESPACE = uuid.UUID("5d0c7a52-8a53-4c1e-9f0e-2f7d5b3f6a11")


@dataclass
class SlideInfo:
    """One slide as the export sees it: the name it shows, a safe file stem and its resolution."""

    slide_id: int
    name: str  # the name written into the output (the real one, or a pseudonym)
    stem: str  # file-name stem, safe
    key: str  # pseudonym, always (seeds the feature ids so they do not depend on --anonymize)
    path: Path | None
    width: int
    height: int
    mpp: float | None  # level 0, µm/px, when it holds up (reader.judge_mpp)
    objective_power: float | None
    level_downsamples: list[float]
    target_mpp: float | None


@dataclass
class ExportPatch:
    """A labeled patch placed for output: level-0 square, output side, output mpp."""

    item: LabeledPatch
    slide: SlideInfo
    x: int
    y: int
    size0: int
    out_px: int
    mpp: float | None  # µm per output pixel
    file: str | None = None  # relative path in OUT, for formats that write one file per patch

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, f"{self.slide.key}:{self.x}:{self.y}:{self.size0}"))


@dataclass
class ExportPlan:
    slides: dict[int, SlideInfo] = field(default_factory=dict)
    patches: list[ExportPatch] = field(default_factory=list)

    def by_slide(self) -> dict[int, list[ExportPatch]]:
        groups: dict[int, list[ExportPatch]] = {}
        for p in self.patches:
            groups.setdefault(p.slide.slide_id, []).append(p)
        return groups


def level0_side(slide: SlideInfo, out_px: int, target_mpp: float) -> int:
    """The level-0 side of an ``out_px`` patch at ``target_mpp`` (the ingest's rule)."""
    return patch_resolution(out_px, target_mpp, slide.mpp, slide.objective_power, (slide.width, slide.height)).level0_size


def place(item: LabeledPatch, slide: SlideInfo, catalog_px: int | None, patch_size: int | None,
          mpp: float | None) -> ExportPatch:
    """Put one patch at the requested resolution, keeping its centre."""
    out_px = patch_size or catalog_px or DEFAULT_PATCH_SIZE
    if patch_size is None and mpp is None:
        size0, x, y = item.size, item.x, item.y
    else:
        size0 = level0_side(slide, out_px, mpp or slide.target_mpp or DEFAULT_TARGET_MPP)
        x = item.x + (item.size - size0) // 2
        y = item.y + (item.size - size0) // 2
        x = min(max(0, x), max(0, slide.width - size0))
        y = min(max(0, y), max(0, slide.height - size0))
    out_mpp = slide.mpp * size0 / out_px if slide.mpp else None
    return ExportPatch(item=item, slide=slide, x=x, y=y, size0=size0, out_px=out_px, mpp=out_mpp)


def _trusted_mpp(s: Slide) -> float | None:
    """The slide's recorded mpp when it holds up against its size and objective, else None."""
    mpp, source = level0_mpp(s.mpp_x, s.objective_power, (s.width, s.height) if s.width and s.height else None)
    return mpp if source == "mpp" else None


def build_plan(catalog: Catalog, workspace: Workspace, items: list[LabeledPatch], *, anonymize: bool = False,
               patch_size: int | None = None, mpp: float | None = None) -> ExportPlan:
    """Look up the slides of ``items`` and place every patch."""
    slide_ids = sorted({i.slide_id for i in items})
    with catalog.session() as session:
        rows = {s.id: s for s in session.scalars(select(Slide).where(Slide.id.in_(slide_ids)))} if slide_ids else {}
    keys = {sid: anonymous_name(s.content_hash, s.path) for sid, s in rows.items()}
    names = {sid: (keys[sid] if anonymize else s.name) for sid, s in rows.items()}
    stems = unique_stems(names)
    plan = ExportPlan()
    catalog_px: dict[int, int | None] = {}
    for sid, s in rows.items():
        plan.slides[sid] = SlideInfo(
            slide_id=sid, name=names[sid], stem=stems[sid], key=keys[sid], path=workspace.absolute(s.path),
            width=s.width or 0, height=s.height or 0, mpp=_trusted_mpp(s), objective_power=s.objective_power,
            level_downsamples=[float(d) for d in (s.level_downsamples or [1.0])], target_mpp=s.target_mpp,
        )
        catalog_px[sid] = s.patch_size_px
    for item in items:
        plan.patches.append(place(item, plan.slides[item.slide_id], catalog_px[item.slide_id], patch_size, mpp))
    plan.patches.sort(key=lambda p: (p.slide.stem, p.item.label, p.y, p.x, p.item.patch_id))
    return plan
