"""Draw any rectangle of a demo slide at level 0, from its spec, as H&E-stained RGB.

The stain model is Beer-Lambert, as in scikit-image's ``hed2rgb`` / ``combine_stains``:
hematoxylin and eosin optical densities are built per pixel (stroma fibres, nuclei, lesion cells)
and mixed through a stain matrix into transmitted light. The matrix is Macenko's reference H&E
stain matrix (the one stain normalisation maps slides to): scikit-image's Ruifrok-Johnston eosin
vector gives magenta rather than the pink of a scanned slide.
"""

from __future__ import annotations

import math

import numpy as np
from wsireview.demo.noise import fbm, hash_uniform, pixel_centres, pixel_noise, value_noise
from wsireview.demo.difficulty import CRUSHED, INFLAMMATORY
from wsireview.demo.spec import SlideSpec

# Rows: hematoxylin, eosin, and a small warm residual (skimage's DAB vector) for the slide's yellow cast.
STAINS = np.asarray([(0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581), (0.2686, 0.5706, 0.7782)], dtype=np.float32)
DUST_OD = np.asarray((0.85, 0.9, 0.95), dtype=np.float32)
GLASS_OD = np.asarray((0.022, 0.024, 0.018), dtype=np.float32)
MARGIN = 16  # px around a tile where nucleus centres are looked up (largest nucleus reach)


def render_region(spec: SlideSpec, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 pixels of the level-0 rectangle ``(x0, y0, width, height)``."""
    xs = pixel_centres(x0, width)
    ys = pixel_centres(y0, height)
    exs = pixel_centres(x0 - MARGIN, width + 2 * MARGIN)
    eys = pixel_centres(y0 - MARGIN, height + 2 * MARGIN)
    keys = spec.keys
    inner = (slice(MARGIN, MARGIN + height), slice(MARGIN, MARGIN + width))

    grain = pixel_noise(xs, ys, keys[7])
    tissue_e = spec.tissue_field(exs, eys)
    if tissue_e.max() > 0:
        od = _tissue_od(spec, x0, y0, xs, ys, exs, eys, tissue_e, inner, grain)
        od += GLASS_OD
    else:
        od = np.broadcast_to(GLASS_OD, (height, width, 3)).copy()
    pen = spec.pen_od(xs, ys)
    if pen is not None:
        od += pen
    dust = spec.dust_alpha(xs, ys)
    if dust is not None:
        od += dust[:, :, None] * DUST_OD

    # Transmitted light (Beer-Lambert), uneven illumination, sensor grain; all in place.
    od *= np.float32(-np.log(10.0))
    np.exp(od, out=od)
    od *= (252.0 * (1.0 + 0.012 * value_noise(xs, ys, spec.size / 2, keys[6])))[:, :, None]
    od += (1.6 * grain + 0.5)[:, :, None]
    np.clip(od, 0, 255, out=od)
    return od.astype(np.uint8)


def _tissue_od(spec, x0, y0, xs, ys, exs, eys, tissue_e, inner, grain) -> np.ndarray:
    keys = spec.keys
    tissue = tissue_e[inner]
    alpha = np.clip(tissue * np.float32(spec.edge_scale / 2.0), 0.0, 1.0)
    lesion_e = spec.lesion_field(exs, eys, tissue_e)
    lesion = np.clip(lesion_e[inner] * np.float32(spec.edge_scale / 40.0), 0.0, 1.0) if lesion_e is not None else None

    # Stroma: collagen fibres as streaky noise, horizontal in some regions and vertical in others.
    along_x = _smoothstep(0.5 + 0.9 * value_noise(xs, ys, 700.0, keys[3]))
    fib_h = _warped_streaks(xs, ys, (55.0, 7.0), keys[4], axis=0)
    fib_v = _warped_streaks(xs, ys, (7.0, 55.0), keys[5], axis=1)
    fibres = along_x * fib_h + (1.0 - along_x) * fib_v
    fibres = 0.6 * fibres + 0.4 * fbm(xs, ys, (26.0, 9.0), keys[5] + 13)
    fibres = _smoothstep(np.clip(fibres * 1.4 + 0.6, 0.0, 1.0))
    regional = 1.0 + 0.2 * fbm(xs, ys, (420.0, 150.0), keys[3] + 11)
    eosin = (0.10 + 0.22 * fibres) * regional
    haem = np.full_like(eosin, 0.045)

    style = spec.lesion_style
    mimics = [(m, np.minimum(m.field(exs, eys), tissue_e)) for m in spec.mimics_near(exs, eys)]
    crushed = [f for m, f in mimics if m.kind == CRUSHED]  # crushed cells replace the normal ones
    hidden = ([] if style.keeps_normal_nuclei or lesion_e is None else [lesion_e]) + crushed
    nuclei = _normal_nuclei(spec, x0, y0, xs.size, ys.size, exs, eys, tissue_e, hidden, along_x)
    if lesion is not None:
        eosin *= 1.0 - style.eosin_loss * lesion
        haem += style.diffuse_haem * lesion
        nuclei += _lesion_nuclei(spec, x0, y0, xs.size, ys.size, exs, eys, lesion_e)
    inflamed = spec.inflamed_field(exs, eys, tissue_e)
    if inflamed is not None:
        nuclei += _inflammatory_nuclei(x0, y0, xs.size, ys.size, inflamed, spec.keys[1] + 4243, keep=0.22)
    for mimic, field in mimics:
        share = np.clip(field[inner] * np.float32(spec.edge_scale / 40.0), 0.0, 1.0)
        if mimic.kind == INFLAMMATORY:
            eosin *= 1.0 - 0.25 * share
            haem += 0.03 * share
            nuclei += _inflammatory_nuclei(x0, y0, xs.size, ys.size, field, mimic.key)
        else:
            eosin *= 1.0 - 0.35 * share
            haem += 0.12 * share
            nuclei += _crushed_nuclei(x0, y0, xs.size, ys.size, field, mimic.key, mimic.angle)
    nuclei *= 0.82 + 0.28 * grain  # chromatin texture
    eosin *= 1.0 - 0.55 * np.clip(nuclei / 0.5, 0.0, 1.0)
    haem += nuclei

    scale = alpha
    fold = spec.fold_alpha(xs, ys)
    if fold is not None:
        ridge = 4.0 * fold * (1.0 - fold)
        scale = alpha * (1.0 + 0.9 * fold + 0.6 * ridge)
    stains = np.stack([haem * scale, eosin * scale, 0.035 * scale], axis=-1)
    return (stains.reshape(-1, 3) @ STAINS).reshape(ys.size, xs.size, 3)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _warped_streaks(xs, ys, cell, key, axis: int) -> np.ndarray:
    """Streaky noise whose streaks wave: each column (or row) is shifted by a smooth offset."""
    shift_range = 24
    if axis == 0:  # streaks along x: shift rows per column
        offsets = np.round(12.0 * _noise_1d(xs, 180.0, key + 1)).astype(np.int64) + shift_range
        ys_ext = pixel_centres(ys[0] - 0.5 - shift_range, ys.size + 2 * shift_range)
        base = value_noise(xs, ys_ext, cell, key)
        rows = np.arange(ys.size)[:, None] + offsets[None, :]
        return np.take_along_axis(base, rows, axis=0)
    offsets = np.round(12.0 * _noise_1d(ys, 180.0, key + 1)).astype(np.int64) + shift_range
    xs_ext = pixel_centres(xs[0] - 0.5 - shift_range, xs.size + 2 * shift_range)
    base = value_noise(xs_ext, ys, cell, key)
    cols = np.arange(xs.size)[None, :] + offsets[:, None]
    return np.take_along_axis(base, cols, axis=1)


def _noise_1d(coords: np.ndarray, cell: float, key: int) -> np.ndarray:
    return value_noise(coords, np.zeros(1), cell, key)[0]


# -- nuclei -------------------------------------------------------------------------------------

def _cells(x0, y0, w, h, cell, key, n_values):
    """Per-cell uniforms for the lattice cells whose jittered centre may reach the tile."""
    i = np.arange(math.floor((x0 - MARGIN) / cell), math.floor((x0 + w + MARGIN) / cell) + 1)
    j = np.arange(math.floor((y0 - MARGIN) / cell), math.floor((y0 + h + MARGIN) / cell) + 1)
    jj_grid, ii_grid = np.meshgrid(j, i, indexing="ij")
    ii, jj = ii_grid.ravel(), jj_grid.ravel()
    u = [hash_uniform(ii, jj, key + 101 * k) for k in range(n_values)]
    cx = (ii + 0.1 + 0.8 * u[0]) * cell
    cy = (jj + 0.1 + 0.8 * u[1]) * cell
    inside = (cx >= x0 - MARGIN) & (cx < x0 + w + MARGIN) & (cy >= y0 - MARGIN) & (cy < y0 + h + MARGIN)
    return cx[inside], cy[inside], [v[inside] for v in u[2:]]


def _lookup(field: np.ndarray, x0: int, y0: int, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    col = np.clip(np.floor(cx - (x0 - MARGIN)).astype(np.int64), 0, field.shape[1] - 1)
    row = np.clip(np.floor(cy - (y0 - MARGIN)).astype(np.int64), 0, field.shape[0] - 1)
    return field[row, col]


def _normal_nuclei(spec, x0, y0, w, h, exs, eys, tissue_e, hidden, along_x) -> np.ndarray:
    """Stromal spindle cells along the fibres, small round dark lymphocytes, oval cells.

    None where a field of ``hidden`` (a lesion that replaces them, crushed tissue) is positive.
    """
    cx, cy, u = _cells(x0, y0, w, h, 17.0, spec.keys[0] + 17, 12)
    density = 0.30 + 0.16 * _lookup(value_noise(exs, eys, 380.0, spec.keys[1] + 3), x0, y0, cx, cy)
    keep = (u[0] < density) & (_lookup(tissue_e, x0, y0, cx, cy) > 0)
    for field in hidden:
        keep &= _lookup(field, x0, y0, cx, cy) <= 0
    cx, cy, u = cx[keep], cy[keep], [v[keep] for v in u]
    kind = u[1]
    spindle, lymph = kind < 0.45, (kind >= 0.45) & (kind < 0.68)
    a = np.where(spindle, 7.0 + 4.0 * u[2], np.where(lymph, 3.4 + 1.1 * u[2], 5.0 + 1.6 * u[2]))
    b = np.where(spindle, 2.0 + 0.9 * u[3], np.where(lymph, a * (0.9 + 0.1 * u[3]), 3.5 + 1.0 * u[3]))
    fibre_angle = np.where(_lookup_tile(along_x, x0, y0, cx, cy) > 0.5, 0.0, np.pi / 2)
    angle = np.where(spindle, fibre_angle + 0.7 * (u[4] - 0.5), np.pi * u[4])
    dens = np.where(lymph, 0.95 + 0.25 * u[5], 0.6 + 0.25 * u[5])
    return _stamp(x0, y0, w, h, cx, cy, a, b, angle, 0.06 * u[6], u[7] * 6.3, 0.05 * u[8], u[9] * 6.3, dens)


def _lesion_nuclei(spec, x0, y0, w, h, exs, eys, lesion_e) -> np.ndarray:
    """Crowded, large, dark, pleomorphic nuclei: what the lesion is made of (milder when harder)."""
    s = spec.lesion_style
    cx, cy, u = _cells(x0, y0, w, h, 14.0, spec.keys[0] + 29, 12)
    keep = (u[0] < s.cell_keep) & (_lookup(lesion_e, x0, y0, cx, cy) > 0)
    cx, cy, u = cx[keep], cy[keep], [v[keep] for v in u]
    a = s.size[0] + s.size[1] * u[1]
    b = a * (s.roundness[0] + s.roundness[1] * u[2])
    return _stamp(
        x0, y0, w, h, cx, cy, a, b, np.pi * u[3], s.irregular2[0] + s.irregular2[1] * u[4], u[5] * 6.3,
        s.irregular3[0] + s.irregular3[1] * u[6], u[7] * 6.3, s.darkness[0] + s.darkness[1] * u[8],
    )


def _inflammatory_nuclei(x0, y0, w, h, field, key, keep: float = 0.8) -> np.ndarray:
    """Lymphocytes: small, round, very dark nuclei, crowded in a cluster (a lesion mimic) or
    scattered (``keep``: share of the 8 px lattice cells that hold one) in inflamed stroma."""
    cx, cy, u = _cells(x0, y0, w, h, 8.0, key, 12)
    keep = (u[0] < keep) & (_lookup(field, x0, y0, cx, cy) > 0)
    cx, cy, u = cx[keep], cy[keep], [v[keep] for v in u]
    a = 3.0 + 1.4 * u[1]
    b = a * (0.85 + 0.15 * u[2])
    return _stamp(x0, y0, w, h, cx, cy, a, b, np.pi * u[3], 0.04 * u[4], u[5] * 6.3, 0.03 * u[6], u[7] * 6.3,
                  0.95 + 0.3 * u[8])


def _crushed_nuclei(x0, y0, w, h, field, key, angle) -> np.ndarray:
    """Crush artefact: nuclei smeared into long dark streaks, all along one direction."""
    cx, cy, u = _cells(x0, y0, w, h, 11.0, key + 7, 12)
    keep = (u[0] < 0.75) & (_lookup(field, x0, y0, cx, cy) > 0)
    cx, cy, u = cx[keep], cy[keep], [v[keep] for v in u]
    a = 6.0 + 7.0 * u[1]  # the longest smear still fits the tile MARGIN
    b = 1.6 + 1.2 * u[2]
    return _stamp(x0, y0, w, h, cx, cy, a, b, angle + 0.5 * (u[3] - 0.5), 0.05 + 0.1 * u[4], u[5] * 6.3,
                  0.05 * u[6], u[7] * 6.3, 0.55 + 0.35 * u[8])


def _lookup_tile(field: np.ndarray, x0: int, y0: int, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    col = np.clip(np.floor(cx - x0).astype(np.int64), 0, field.shape[1] - 1)
    row = np.clip(np.floor(cy - y0).astype(np.int64), 0, field.shape[0] - 1)
    return field[row, col]


def _stamp(x0, y0, w, h, cx, cy, a, b, angle, amp2, ph2, amp3, ph3, dens) -> np.ndarray:
    """Hematoxylin density of irregular elliptical nuclei, summed where they overlap."""
    out = np.zeros(h * w, dtype=np.float32)
    if cx.size == 0:
        return out.reshape(h, w)
    reach = int(math.ceil(float((a * (1 + amp2 + amp3)).max()))) + 2
    off = np.arange(-reach, reach + 1, dtype=np.float32)
    fx, fy = np.floor(cx), np.floor(cy)
    px = fx[:, None, None] + off[None, None, :]
    py = fy[:, None, None] + off[None, :, None]
    dx = (px + 0.5 - cx[:, None, None]).astype(np.float32)
    dy = (py + 0.5 - cy[:, None, None]).astype(np.float32)
    c = np.cos(angle).astype(np.float32)[:, None, None]
    s = np.sin(angle).astype(np.float32)[:, None, None]
    u = (dx * c + dy * s) / a[:, None, None].astype(np.float32)
    v = (dy * c - dx * s) / b[:, None, None].astype(np.float32)
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    r /= 1.0 + amp2[:, None, None] * np.cos(2 * theta + ph2[:, None, None]) + amp3[:, None, None] * np.cos(3 * theta + ph3[:, None, None])
    profile = np.clip((1.0 - r) * b[:, None, None] / 1.2, 0.0, 1.0) * dens[:, None, None]
    col = (px - x0).astype(np.int64)
    row = (py - y0).astype(np.int64)
    valid = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (profile > 0)
    idx = (np.broadcast_to(row, valid.shape) * w + np.broadcast_to(col, valid.shape))[valid]
    out += np.bincount(idx, weights=profile[valid], minlength=h * w).astype(np.float32)
    return out.reshape(h, w)
