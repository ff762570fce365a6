"""Pictures the app shows, composed with PIL/numpy only (no Textual): overlays, markers, context.

Overlays are blended into the thumbnail before display, so every renderer (half-blocks, Kitty)
shows the same picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, UNSURE
from wsireview.catalog.queries import PatchAttention, SlidePatch

# A perceptually ordered dark-blue -> teal -> yellow -> red ramp (anchors of the 'turbo' kind),
# interpolated to 256 entries: the heatmap needs no matplotlib import on the UI side.
_ANCHORS = np.array(
    [(48, 18, 59), (40, 120, 230), (30, 200, 160), (165, 250, 60), (250, 190, 40), (230, 60, 20), (122, 4, 3)],
    dtype=np.float32,
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)

MARK_COLOUR = (0, 255, 255)
OUTLINE_COLOUR = (255, 230, 0)  # the patch under review, drawn in every view of it
VIEW_COLOUR = (255, 0, 255)  # the field shown, on the minimap
TISSUE_OUTLINE = (255, 200, 0)  # the outline `add` draws on masks/slide-N-overlay.png
# Verdict markers on the slide view (the triage screen's verdict text colours, as RGB).
VERDICT_COLOURS = {LESION: (235, 45, 45), NOT_LESION: (40, 200, 80), UNSURE: (245, 215, 40), ARTIFACT: (205, 80, 235)}
QUEUED_COLOUR = (255, 255, 255)


def mask_overlay(thumbnail: Image.Image, mask: Image.Image, colour=(0, 200, 80), alpha: float = 0.35) -> Image.Image:
    """Tissue tinted on the thumbnail (used when ingest left no overlay picture)."""
    rgb = np.asarray(thumbnail.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask.convert("L").resize(thumbnail.size, Image.Resampling.NEAREST)) > 127
    rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def attention_overlay(
    thumbnail: Image.Image,
    points: list[PatchAttention],
    slide_size: tuple[int, int],
    alpha: float = 0.6,
    min_side_share: float = 1 / 64,
) -> Image.Image:
    """The attention of every scored patch painted at its place, coloured and blended in.

    A patch is tiny next to the slide (lesions are ~100 px in 10,000s), so each painted square is
    at least ``min_side_share`` of the thumbnail's long side: the top patches stay visible.
    """
    thumb = thumbnail.convert("RGB")
    if not points or not slide_size[0] or not slide_size[1]:
        return thumb
    tw, th = thumb.size
    sx, sy = tw / slide_size[0], th / slide_size[1]
    heat = np.zeros((th, tw), dtype=np.float32)
    covered = np.zeros((th, tw), dtype=bool)
    floor = max(1, round(max(tw, th) * min_side_share))
    for p in sorted(points, key=lambda p: p.attention):  # highest attention painted last, on top
        x0, y0 = int(p.x * sx), int(p.y * sy)
        side_x, side_y = max(floor, round(p.size * sx)), max(floor, round(p.size * sy))
        cx, cy = x0 + max(1, round(p.size * sx)) // 2, y0 + max(1, round(p.size * sy)) // 2
        xa, ya = max(0, cx - side_x // 2), max(0, cy - side_y // 2)
        xb, yb = min(tw, xa + side_x), min(th, ya + side_y)
        heat[ya:yb, xa:xb] = np.maximum(heat[ya:yb, xa:xb], p.attention)
        covered[ya:yb, xa:xb] = True
    colours = COLORMAP[(heat.clip(0, 1) * 255).astype(np.uint8)].astype(np.float32)
    rgb = np.asarray(thumb, dtype=np.float32)
    a = (alpha * (0.35 + 0.65 * heat))[..., None] * covered[..., None]
    out = rgb * (1 - a) + colours * a
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def mark_region(image: Image.Image, x: int, y: int, size: int, slide_size: tuple[int, int], colour=MARK_COLOUR) -> Image.Image:
    """A copy of a (display-sized) slide picture with a level-0 square outlined, at least 3 px."""
    return mark_rect(image.convert("RGB").copy(), x, y, size, size, slide_size, colour)


def mark_rect(image: Image.Image, x: float, y: float, w: float, h: float, slide_size: tuple[int, int],
              colour=MARK_COLOUR) -> Image.Image:
    """A level-0 rectangle outlined on a display-sized slide picture, in place, at least 3 px a side."""
    if not slide_size[0] or not slide_size[1]:
        return image
    sx, sy = image.width / slide_size[0], image.height / slide_size[1]
    cx, cy = (x + w / 2) * sx, (y + h / 2) * sy
    half_w, half_h = max(1.5, w * sx / 2), max(1.5, h * sy / 2)
    box = [round(cx - half_w), round(cy - half_h), round(cx + half_w) - 1, round(cy + half_h) - 1]
    ImageDraw.Draw(image).rectangle(box, outline=colour, width=1)
    return image


def placeholder(text: str, size: int = 224) -> Image.Image:
    """A grey square with a short reason, for renderers that can only draw pictures (Kitty)."""
    img = Image.new("RGB", (size, size), (60, 60, 60))
    ImageDraw.Draw(img).multiline_text((8, size // 2 - 10), text[:120], fill=(230, 230, 230))
    return img


def _square(sx: float, sy: float, p, floor: float) -> list[int]:
    """The display box of a level-0 patch, at least ``floor`` px a side, centred on the patch."""
    cx, cy = (p.x + p.size / 2) * sx, (p.y + p.size / 2) * sy
    half_w, half_h = max(floor / 2, p.size * sx / 2), max(floor / 2, p.size * sy / 2)
    return [round(cx - half_w), round(cy - half_h), round(cx + half_w) - 1, round(cy + half_h) - 1]


def patch_markers(
    image: Image.Image,
    patches: list[SlidePatch],
    slide_size: tuple[int, int],
    verdicts: bool = True,
    focus: int | None = None,
) -> Image.Image:
    """A copy of a display-sized slide picture with its patches marked: a filled square in the
    verdict's colour for each reviewed patch, a white outline for each patch still queued (when
    ``verdicts``), and the ``focus`` patch in a cyan box. Squares are at least 3 px (5 for the
    focus), so a 224 px patch stays visible on a slide 100 times larger."""
    out = image.convert("RGB").copy()
    if not slide_size[0] or not slide_size[1]:
        return out
    draw = ImageDraw.Draw(out)
    sx, sy = out.width / slide_size[0], out.height / slide_size[1]
    if verdicts:
        for p in patches:
            if p.verdict is not None:
                draw.rectangle(_square(sx, sy, p, 3), fill=VERDICT_COLOURS.get(p.verdict, QUEUED_COLOUR))
            elif p.queue_rank is not None:
                draw.rectangle(_square(sx, sy, p, 3), outline=QUEUED_COLOUR, width=1)
    chosen = next((p for p in patches if p.patch_id == focus), None)
    if chosen is not None:
        box = _square(sx, sy, chosen, 5)
        draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline=MARK_COLOUR, width=2)
    return out
