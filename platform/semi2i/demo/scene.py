"""The demo's classes and its scenes: :func:`generate_scene` draws a label map from a seed (roads,
blocks, buildings, a river or lake, vegetation, bare land, an optional no-data corner)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# --- classes ------------------------------------------------------------------------------------

CLASS_NAMES: tuple[str, ...] = ("building", "road", "vegetation", "water", "land")
BUILDING, ROAD, VEGETATION, WATER, LAND = range(5)
IGNORE_INDEX = 255
#: Image value of pixels outside the footprint; valid pixels are clipped to >= 1 so 0 is unambiguous.
IMAGE_NODATA = 0
#: Preview colours, the same as the Dubai masks' palette so demo previews read like the real data.
CLASS_RGB: tuple[tuple[int, int, int], ...] = (
    (60, 16, 152),
    (110, 193, 228),
    (254, 221, 58),
    (226, 169, 41),
    (132, 41, 246),
)


# --- noise helpers ------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise whose features are about ``scale`` pixels wide.

    Drawn on a coarse grid and upsampled, so the cost does not grow with the feature size
    (a direct Gaussian blur with a large sigma would).
    """
    h, w = shape
    step = max(float(scale), 1.0)
    ch, cw = int(np.ceil(h / step)) + 4, int(np.ceil(w / step)) + 4
    coarse = ndimage.gaussian_filter(rng.standard_normal((ch, cw)), 0.8, mode="wrap")
    fine = ndimage.zoom(coarse, step, order=1, grid_mode=True, mode="grid-wrap")
    oy, ox = int(step), int(step)
    out = fine[oy : oy + h, ox : ox + w]  # the 4-cell margin keeps this in range whatever the rounding
    out = out - out.mean()
    return out / (out.std() + 1e-9)


# --- scene generation ---------------------------------------------------------------------------


def _road_lines(rng: np.random.Generator, length: int) -> list[tuple[int, int]]:
    """(centre, width) of parallel roads across one axis, 75-115 m apart (city blocks), 4-9 m wide."""
    roads = []
    pos = rng.uniform(25, 120)
    while pos < length - 15:
        main = rng.random() < 0.3
        width = int(rng.integers(14, 19) if main else rng.integers(8, 12))
        roads.append((int(pos), width))
        pos += rng.uniform(150, 230)
    return roads


def _blocks(roads: list[tuple[int, int]], length: int, setback: int) -> list[tuple[int, int]]:
    """Intervals between roads along one axis, shrunk by a setback from each road edge."""
    edges = [(-10**6, 0)] + [(c - w // 2, c + (w + 1) // 2) for c, w in roads] + [(length, 10**6)]
    out = []
    for (_, a_end), (b_start, _) in zip(edges[:-1], edges[1:]):
        lo, hi = max(a_end, 0) + setback, min(b_start, length) - setback
        if hi - lo >= 16:
            out.append((lo, hi))
    return out


def _building_footprint(
    rng: np.random.Generator, height: int, width: int, angle: float
) -> np.ndarray:
    """A rotated rectangle or L-shape filling a (height, width) lot with a margin."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy -= (height - 1) / 2
    xx -= (width - 1) / 2
    c, s = np.cos(angle), np.sin(angle)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    # Leave room for the rotation inside the lot.
    shrink = 1.0 / (abs(c) + abs(s))
    a = width * shrink * rng.uniform(0.6, 0.85)
    b = height * shrink * rng.uniform(0.6, 0.85)
    u = u + rng.uniform(-0.08, 0.08) * width
    v = v + rng.uniform(-0.08, 0.08) * height
    mask = (np.abs(u) < a / 2) & (np.abs(v) < b / 2)
    if rng.random() < 0.35:  # L-shape: cut one corner out
        su, sv = rng.choice([-1, 1], size=2)
        cu, cv = a * rng.uniform(0.35, 0.55), b * rng.uniform(0.35, 0.55)
        mask &= ~((su * u > a / 2 - cu) & (sv * v > b / 2 - cv))
    return mask


def _river(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth meandering band across the scene."""
    h, w = shape
    vertical = rng.random() < 0.5
    along, across = (h, w) if vertical else (w, h)
    t = np.arange(along, dtype=np.float32)
    centre = rng.uniform(0.2, 0.8) * across
    for period in (rng.uniform(350, 600), rng.uniform(150, 300)):
        centre = centre + rng.uniform(10, 35) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    width = rng.uniform(40, 70) + 10 * np.sin(2 * np.pi * t / rng.uniform(200, 400) + rng.uniform(0, 6))
    half = 0.5 * width
    pos = np.arange(across, dtype=np.float32)
    band = np.abs(pos[None, :] - centre[:, None]) < half[:, None]  # (along, across)
    return band if vertical else band.T


def _lake(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """An irregular ellipse (shore wobble from smooth noise)."""
    h, w = shape
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(50, 85), rng.uniform(55, 95)
    yy, xx = np.ogrid[0:h, 0:w]
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return r + 0.18 * smooth_noise(rng, shape, 25) < 1.0


def _nodata_corner(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Mask of one corner cut off diagonally, like the edge of a rotated acquisition footprint."""
    h, w = shape
    cut_y, cut_x = rng.uniform(0.15, 0.35) * h, rng.uniform(0.15, 0.35) * w
    yy, xx = np.ogrid[0:h, 0:w]
    if rng.random() < 0.5:
        yy = (h - 1) - yy
    if rng.random() < 0.5:
        xx = (w - 1) - xx
    return yy / cut_y + xx / cut_x < 1.0


def generate_scene(
    size: int | tuple[int, int] = 512, seed: int | np.random.SeedSequence = 0, *, nodata_corner: bool = False
) -> np.ndarray:
    """Draw a city label map (H, W) uint8 from a seed.

    Layers, back to front: bare land; a river and/or lake; smooth vegetation patches; a street grid
    plus one diagonal avenue; blocks filled with lots holding rotated rectangular/L-shaped buildings
    (or parks); roads drawn last (bridges over water). Feature sizes are physical (0.5 m pixels), so
    a bigger scene is a bigger city, not a zoomed one. ``nodata_corner`` sets a diagonal corner to 255.
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if h < 8 or w < 8:
        raise ValueError(f"scene size must be at least 8x8, got {h}x{w}")
    rng = np.random.default_rng(seed)
    labels = np.full((h, w), LAND, dtype=np.uint8)

    # Water: a river and/or a lake per 512x512 (256 m) of scene, so big scenes keep similar proportions.
    water = np.zeros((h, w), dtype=bool)
    kind = rng.random()
    units = h * w / 512**2
    rivers = int(kind < 0.75) + int(rng.poisson(0.5 * max(units - 1, 0)))
    lakes = int(kind > 0.45) + int(rng.poisson(0.6 * max(units - 1, 0)))
    for _ in range(rivers):
        water |= _river(rng, (h, w))
    for _ in range(lakes):
        water |= _lake(rng, (h, w))
    labels[water] = WATER

    # Roads (a mask kept for building placement; drawn last).
    rows, cols = _road_lines(rng, h), _road_lines(rng, w)
    road = np.zeros((h, w), dtype=bool)
    for c, wd in rows:
        road[max(c - wd // 2, 0) : c + (wd + 1) // 2, :] = True
    for c, wd in cols:
        road[:, max(c - wd // 2, 0) : c + (wd + 1) // 2] = True
    yy, xx = np.ogrid[0:h, 0:w]
    theta = rng.uniform(np.pi / 6, np.pi / 3) * rng.choice([-1, 1])
    py, px = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    diag_dist = np.abs((yy - py) * np.cos(theta) - (xx - px) * np.sin(theta))
    road |= diag_dist < rng.integers(10, 15) / 2

    # Vegetation patches on open land: large-scale clumps of small-scale tree-crown blobs.
    clumps = smooth_noise(rng, (h, w), 60)
    crowns = smooth_noise(rng, (h, w), 7)
    vegetation = ((clumps > 1.0) & (crowns > -0.3)) | ((clumps > 0.6) & (crowns > 1.3))
    labels[vegetation & (labels == LAND)] = VEGETATION

    # Blocks and lots.
    keep_clear = ndimage.binary_dilation(road | water, iterations=3)
    buildings = np.zeros((h, w), dtype=bool)
    for y0, y1 in _blocks(rows, h, setback=int(rng.integers(3, 7))):
        for x0, x1 in _blocks(cols, w, setback=int(rng.integers(3, 7))):
            block_angle = rng.normal(0, 0.12)
            if rng.random() < 0.12:  # a park: trees over most of the block
                park = ~keep_clear[y0:y1, x0:x1] & (smooth_noise(rng, (y1 - y0, x1 - x0), 8) > -0.6)
                region = labels[y0:y1, x0:x1]
                region[park & (region == LAND)] = VEGETATION
                continue
            ny = max(1, round((y1 - y0) / rng.uniform(38, 60)))
            nx = max(1, round((x1 - x0) / rng.uniform(38, 60)))
            ys = np.linspace(y0, y1, ny + 1).astype(int)
            xs = np.linspace(x0, x1, nx + 1).astype(int)
            for ly0, ly1 in zip(ys[:-1], ys[1:]):
                for lx0, lx1 in zip(xs[:-1], xs[1:]):
                    if ly1 - ly0 < 10 or lx1 - lx0 < 10 or rng.random() < 0.35:
                        continue  # empty lot: bare land
                    angle = block_angle + rng.normal(0, 0.08)
                    fp = _building_footprint(rng, ly1 - ly0, lx1 - lx0, angle)
                    if (fp & keep_clear[ly0:ly1, lx0:lx1]).any():
                        continue
                    buildings[ly0:ly1, lx0:lx1] |= fp
    labels[buildings] = BUILDING
    labels[road] = ROAD

    if nodata_corner:
        labels[_nodata_corner(rng, (h, w))] = IGNORE_INDEX
    return labels


def class_shares(labels: np.ndarray) -> dict[str, float]:
    """Fraction of valid (non-ignore) pixels per class name."""
    valid = labels[labels != IGNORE_INDEX]
    counts = np.bincount(valid.ravel(), minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
    total = max(int(valid.size), 1)
    return {name: float(c) / total for name, c in zip(CLASS_NAMES, counts)}
