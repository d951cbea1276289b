"""Synthetic demo cities: procedural scenes with pixel-exact labels, rendered through two "sensors".

The demo, CI and laptops need a source/target pair with a *real* domain shift and no download: the
same kind of city (buildings, roads, vegetation, water, bare land, the five classes of the Dubai data)
seen by two very different cameras, so that a segmenter trained on one visibly fails on the other and
domain adaptation has something to fix. Rasters are written as georeferenced GeoTIFFs (UTM CRS, 0.5 m
pixels) so the whole geo path of the platform (ingest, stores, mapping, COG export) is exercised.

Pipeline: :func:`generate_scene` draws a label map from a seed; :func:`render_scene` turns it into a
"true" reflectance image (per-class base colours, per-object variation, texture, roof shading and
shadows) and passes that through a :class:`Sensor` model (cross-talk, illumination gradient, blur,
haze, gain/offset, gamma, noise) into uint8 digital numbers; :func:`make_demo_cities` writes two
cities to disk, atomically and idempotently.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine
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

#: The four channels of the "true" reflectance image, in this order.
ALL_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")

# --- georeferencing -----------------------------------------------------------------------------

#: UTM zone 40N (Dubai), a real projected CRS in metres.
DEMO_CRS = CRS.from_epsg(32640)
PIXEL_SIZE_M = 0.5
#: Upper-left corners of the two demo cities (a few km apart, inside zone 40N near Dubai).
_CITY_ORIGINS = {"demo_source": (320_000.0, 2_790_000.0), "demo_target": (331_000.0, 2_781_000.0)}


# --- sensors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensor:
    """A camera model: how true reflectance (red, green, blue, nir) becomes uint8 digital numbers.

    Per-channel parameters are given for all four channels; ``bands`` chooses which are written, so
    the same sensor can deliver RGB or RGB+NIR.
    """

    name: str
    bands: tuple[str, ...] = ("red", "green", "blue")
    gain: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    offset: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    gamma: float = 1.0
    #: 4x4 mixing applied to (r, g, b, nir) first: spectral response overlap between channels.
    crosstalk: tuple[tuple[float, ...], ...] = (
        (1.0, 0.0, 0.0, 0.0),
        (0.0, 1.0, 0.0, 0.0),
        (0.0, 0.0, 1.0, 0.0),
        (0.0, 0.0, 0.0, 1.0),
    )
    #: Atmospheric haze: x -> (1 - haze) * x + haze * airlight, per channel (lowers contrast).
    haze: float = 0.0
    airlight: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.8)
    #: Multiplicative illumination ramp across the image: 1 +/- strength/2, along ``gradient_angle_deg``.
    gradient_strength: float = 0.0
    gradient_angle_deg: float = 0.0
    blur_sigma: float = 0.0  # optics/MTF, in pixels
    noise_sigma: float = 0.0  # read noise, in digital numbers

    def __post_init__(self) -> None:
        unknown = [b for b in self.bands if b not in ALL_BANDS]
        if unknown or not self.bands:
            raise ValueError(
                f"sensor {self.name!r}: bands must be a non-empty subset of {ALL_BANDS}, got {self.bands}"
            )
        if np.asarray(self.crosstalk).shape != (4, 4):
            raise ValueError(f"sensor {self.name!r}: crosstalk must be 4x4")

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    def with_nir(self, nir: bool = True) -> Sensor:
        """The same camera delivering RGB+NIR (or plain RGB with ``nir=False``)."""
        rgb = ("red", "green", "blue")
        return replace(self, bands=rgb + ("nir",) if nir else rgb)


#: Bright, neutral, sharp, low-noise: the "source" camera.
SENSOR_A = Sensor(
    name="sensor_a",
    gain=(1.12, 1.12, 1.12, 1.05),
    offset=(0.03, 0.03, 0.03, 0.02),
    gamma=0.85,
    blur_sigma=0.4,
    noise_sigma=1.5,
)


def hue_rotation(degrees: float) -> tuple[tuple[float, ...], ...]:
    """4x4 cross-talk that rotates colours about the grey axis by ``degrees`` (NIR untouched).

    Orthogonal, so no information is lost (a learned colour mapping can undo it), yet it moves the
    classes relative to each other in a way no per-band normalisation or histogram matching can.
    """
    k = np.ones(3) / np.sqrt(3.0)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.deg2rad(degrees)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(a) * cross + (1 - np.cos(a)) * cross @ cross
    return tuple(tuple(round(float(v), 4) for v in row) for row in m)


def _target_crosstalk() -> tuple[tuple[float, ...], ...]:
    m = np.array(hue_rotation(105.0))
    m[3] = (0.05, 0.0, 0.0, 0.95)  # the NIR channel sees a little red
    return tuple(tuple(float(v) for v in row) for row in m)


#: Dark, hazy, blue cast, soft, noisy, with an illumination falloff and a very different colour
#: response (hue rotated ~105 degrees): the "target" camera. Gain, offset and haze alone would be
#: undone by the per-band z-scores every stage applies; the colour rotation, gamma, gradient, blur
#: and noise are what a source-trained segmenter still trips over after normalisation.
SENSOR_B = Sensor(
    name="sensor_b",
    gain=(0.42, 0.6, 0.85, 0.9),
    offset=(0.02, 0.05, 0.09, 0.03),
    gamma=1.25,
    crosstalk=_target_crosstalk(),
    haze=0.15,
    airlight=(0.45, 0.6, 0.85, 0.5),
    gradient_strength=0.3,
    gradient_angle_deg=35.0,
    blur_sigma=0.8,
    noise_sigma=3.0,
)

#: Warm, low-contrast, very soft: a third camera for the multi-city demo (yellow-brown cast from the
#: gains and airlight, hue rotated the other way than sensor_b, strong gamma and blur).
SENSOR_C = Sensor(
    name="sensor_c",
    gain=(0.95, 0.8, 0.45, 1.0),
    offset=(0.08, 0.06, 0.02, 0.02),
    gamma=0.7,
    crosstalk=hue_rotation(-60.0),
    haze=0.1,
    airlight=(0.85, 0.7, 0.4, 0.6),
    gradient_strength=0.15,
    gradient_angle_deg=200.0,
    blur_sigma=1.2,
    noise_sigma=2.0,
)

SENSORS: dict[str, Sensor] = {SENSOR_A.name: SENSOR_A, SENSOR_B.name: SENSOR_B, SENSOR_C.name: SENSOR_C}


def get_sensor(name: str, *, nir: bool = False) -> Sensor:
    """Look up a shipped sensor by name, as RGB or RGB+NIR."""
    try:
        sensor = SENSORS[name]
    except KeyError:
        raise ValueError(f"unknown sensor {name!r}; known: {sorted(SENSORS)}") from None
    return sensor.with_nir(nir)


# --- noise helpers ------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
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
    return r + 0.18 * _smooth_noise(rng, shape, 25) < 1.0


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
    clumps = _smooth_noise(rng, (h, w), 60)
    crowns = _smooth_noise(rng, (h, w), 7)
    vegetation = ((clumps > 1.0) & (crowns > -0.3)) | ((clumps > 0.6) & (crowns > 1.3))
    labels[vegetation & (labels == LAND)] = VEGETATION

    # Blocks and lots.
    keep_clear = ndimage.binary_dilation(road | water, iterations=3)
    buildings = np.zeros((h, w), dtype=bool)
    for y0, y1 in _blocks(rows, h, setback=int(rng.integers(3, 7))):
        for x0, x1 in _blocks(cols, w, setback=int(rng.integers(3, 7))):
            block_angle = rng.normal(0, 0.12)
            if rng.random() < 0.12:  # a park: trees over most of the block
                park = ~keep_clear[y0:y1, x0:x1] & (_smooth_noise(rng, (y1 - y0, x1 - x0), 8) > -0.6)
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


# --- rendering ----------------------------------------------------------------------------------

#: Base reflectance (red, green, blue, nir) per class. Land is Dubai-like sand; vegetation is dark in
#: the visible and bright in NIR; water is dark everywhere and almost black in NIR.
_BASE_REFLECTANCE = np.array(
    [
        [0.52, 0.50, 0.48, 0.42],  # building (overridden per roof below)
        [0.22, 0.22, 0.24, 0.20],  # road: asphalt
        [0.10, 0.24, 0.08, 0.60],  # vegetation
        [0.05, 0.13, 0.20, 0.02],  # water
        [0.64, 0.53, 0.40, 0.50],  # land: sand
    ],
    dtype=np.float32,
)
#: Roof materials: concrete, white membrane, terracotta, dark metal, light grey.
_ROOF_COLOURS = np.array(
    [
        [0.58, 0.56, 0.53, 0.45],
        [0.80, 0.80, 0.78, 0.70],
        [0.62, 0.34, 0.26, 0.45],
        [0.30, 0.32, 0.35, 0.28],
        [0.68, 0.66, 0.62, 0.55],
    ],
    dtype=np.float32,
)
#: Sun direction in image coordinates (dy, dx): light from the upper left, shadows to the lower right.
_SUN = np.array([-0.6, -0.8])
_SHADOW_LENGTH = 6  # pixels


def render_reflectance(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The "true" scene: (4, H, W) float32 reflectance in [0, 1] for red, green, blue, nir.

    Sensor-independent, so two sensors looking at the same labels differ only by the sensor model.
    Nodata (255) pixels are 0.
    """
    h, w = labels.shape
    refl = _BASE_REFLECTANCE[np.minimum(labels, LAND)].transpose(2, 0, 1).copy()  # (4, H, W)
    valid = labels != IGNORE_INDEX

    # Land: low-frequency soil variation plus grain.
    is_land = labels == LAND
    soil = 1.0 + 0.08 * _smooth_noise(rng, (h, w), 40) + 0.03 * rng.standard_normal((h, w))
    refl[:, is_land] *= soil[is_land]

    # Roads: worn asphalt with fine lane noise and patches.
    is_road = labels == ROAD
    wear = 1.0 + 0.10 * _smooth_noise(rng, (h, w), 20) + 0.06 * ndimage.uniform_filter1d(
        rng.standard_normal((h, w)), 5, axis=int(rng.integers(0, 2))
    )
    refl[:, is_road] *= wear[is_road]

    # Vegetation: blobby tree crowns with dark gaps.
    is_veg = labels == VEGETATION
    crowns = 1.0 + 0.22 * _smooth_noise(rng, (h, w), 4) + 0.08 * _smooth_noise(rng, (h, w), 30)
    refl[:, is_veg] *= np.clip(crowns, 0.4, None)[is_veg]

    # Water: smooth, with a faint large-scale turbidity change.
    is_water = labels == WATER
    turbidity = 1.0 + 0.06 * _smooth_noise(rng, (h, w), 80)
    refl[:, is_water] *= turbidity[is_water]

    # Buildings: a roof material per building, hip-roof shading from the distance to the roof edge,
    # and cast shadows on the ground towards the lower right.
    is_bld = labels == BUILDING
    if is_bld.any():
        objects, count = ndimage.label(is_bld)
        roof = _ROOF_COLOURS[rng.integers(0, len(_ROOF_COLOURS), count + 1)]
        roof *= rng.uniform(0.88, 1.12, (count + 1, 1)).astype(np.float32)
        refl[:, is_bld] = roof[objects[is_bld]].T
        dist = ndimage.distance_transform_edt(is_bld)
        gy, gx = np.gradient(ndimage.gaussian_filter(np.minimum(dist, 8.0), 0.7))
        facing = -(gy * _SUN[0] + gx * _SUN[1])  # slopes facing the sun are lit
        refl[:, is_bld] *= (1.0 + 0.25 * np.clip(facing, -1, 1))[is_bld]
        shadow = np.zeros((h, w), dtype=bool)
        for k in range(1, _SHADOW_LENGTH + 1):
            dy, dx = int(round(-_SUN[0] * k)), int(round(-_SUN[1] * k))
            shadow[dy:, dx:] |= is_bld[: h - dy, : w - dx]
        shadow &= ~is_bld & valid
        refl[:, shadow] *= 0.45

    refl[:, ~valid] = 0.0
    return np.clip(refl, 0.0, 1.0).astype(np.float32)


def apply_sensor(
    reflectance: np.ndarray, sensor: Sensor, rng: np.random.Generator, valid: np.ndarray | None = None
) -> np.ndarray:
    """Image a (4, H, W) reflectance with ``sensor``: (bands, H, W) uint8, nodata pixels 0, valid >= 1."""
    _, h, w = reflectance.shape
    x = np.tensordot(np.asarray(sensor.crosstalk, dtype=np.float32), reflectance, axes=1)
    if sensor.gradient_strength:
        a = np.deg2rad(sensor.gradient_angle_deg)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u = np.cos(a) * (xx / max(w - 1, 1) - 0.5) + np.sin(a) * (yy / max(h - 1, 1) - 0.5)
        u /= abs(np.cos(a)) + abs(np.sin(a))  # in [-0.5, 0.5]: brightest at one corner, darkest opposite
        x *= 1.0 - sensor.gradient_strength * u
    if sensor.blur_sigma > 0:
        x = ndimage.gaussian_filter(x, (0, sensor.blur_sigma, sensor.blur_sigma))
    airlight = np.asarray(sensor.airlight, dtype=np.float32)[:, None, None]
    x = (1.0 - sensor.haze) * x + sensor.haze * airlight
    x = np.asarray(sensor.gain, dtype=np.float32)[:, None, None] * x
    x = x + np.asarray(sensor.offset, dtype=np.float32)[:, None, None]
    x = np.clip(x, 0.0, 1.0) ** sensor.gamma
    idx = [ALL_BANDS.index(b) for b in sensor.bands]
    dn = x[idx] * 255.0 + sensor.noise_sigma * rng.standard_normal((len(idx), h, w))
    dn = np.clip(np.rint(dn), 1, 255).astype(np.uint8)
    if valid is not None:
        dn[:, ~valid] = IMAGE_NODATA
    return dn


def render_scene(labels: np.ndarray, sensor: Sensor, rng: np.random.Generator | int) -> np.ndarray:
    """Render a label map through a sensor: (sensor.num_bands, H, W) uint8, nodata (label 255) -> 0."""
    rng = np.random.default_rng(rng)
    refl = render_reflectance(labels, rng)
    return apply_sensor(refl, sensor, rng, valid=labels != IGNORE_INDEX)


# --- writing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CityFiles:
    """The rasters of one demo city, as written (images and labels pair up by position)."""

    name: str
    images: list[Path]
    labels: list[Path]
    classes: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    sensor: str = ""
    band_names: tuple[str, ...] = ()


#: The two demo cities: (name, sensor name, whether ``target_nir`` applies).
DEMO_CITIES: tuple[tuple[str, str, bool], ...] = (
    ("demo_source", "sensor_a", False),
    ("demo_target", "sensor_b", True),
)
_MANIFEST = "demo_manifest.json"
#: Part of the manifest: bump when the generator's pixels change, so old demo folders get redrawn.
_GENERATOR_VERSION = 1


def raster_transform(city: str, index: int, size: tuple[int, int]) -> Affine:
    """0.5 m north-up grid of raster ``index`` of ``city``: rasters sit side by side, 100 m apart."""
    default = (300_000.0 + 2_000.0 * (zlib.crc32(city.encode()) % 20), 2_770_000.0)  # stable across runs
    x0, y0 = _CITY_ORIGINS.get(city, default)
    _, w = size
    step = w * PIXEL_SIZE_M + 100.0
    return Affine(PIXEL_SIZE_M, 0.0, x0 + index * step, 0.0, -PIXEL_SIZE_M, y0)


def _block_size(n: int) -> int | None:
    """GeoTIFF tile edge: 256, or the largest multiple of 16 that fits a small raster."""
    return min(256, (n // 16) * 16) if n >= 16 else None


def _write_tif_atomic(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine,
    nodata: int,
    descriptions: tuple[str, ...],
    tags: dict[str, str],
    colormap: dict[int, tuple[int, ...]] | None = None,
) -> None:
    """Write a tiled, compressed uint8 GeoTIFF to a temp file next to ``path``, then rename over it.

    Readers never see a half-written raster, and an interrupted run leaves no partial file behind.
    """
    bands, h, w = data.shape
    profile = dict(
        driver="GTiff", width=w, height=h, count=bands, dtype="uint8", crs=DEMO_CRS,
        transform=transform, nodata=nodata, compress="deflate", predictor=2,
    )
    bx, by = _block_size(w), _block_size(h)
    if bx and by:
        profile.update(tiled=True, blockxsize=bx, blockysize=by)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
            dst.update_tags(**tags)
            if colormap is not None:
                dst.write_colormap(1, colormap)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def classes_document() -> dict:
    """The content of ``classes.json``: class indices, names, preview colours, the ignore index."""
    return {
        "classes": [{"index": i, "name": n, "rgb": list(CLASS_RGB[i])} for i, n in enumerate(CLASS_NAMES)],
        "ignore_index": IGNORE_INDEX,
    }


def make_city_pair(
    size: int | tuple[int, int] = 512,
    *,
    seed: int = 0,
    index: int = 0,
    target_nir: bool = False,
    nodata_corner: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """In memory: raster ``index`` of each demo city, as {city: (image, labels)}.

    The cities draw from independent seed streams, so they show different places of the same kind
    of city, each through its own sensor.
    """
    out = {}
    for city_id, (city, sensor_name, nir_applies) in enumerate(DEMO_CITIES):
        scene_seq, render_seq = np.random.SeedSequence([seed, city_id, index]).spawn(2)
        labels = generate_scene(size, scene_seq, nodata_corner=nodata_corner)
        sensor = get_sensor(sensor_name, nir=target_nir and nir_applies)
        out[city] = (render_scene(labels, sensor, np.random.default_rng(render_seq)), labels)
    return out


def make_demo_cities(
    out_dir: str | os.PathLike,
    *,
    size: int | tuple[int, int] = 512,
    rasters_per_city: int = 2,
    seed: int = 0,
    target_nir: bool = False,
    nodata_corner: bool = False,
) -> dict[str, CityFiles]:
    """Write the demo source ("demo_source", sensor_a) and target ("demo_target", sensor_b) cities.

    Layout: ``out_dir/<city>/{images,labels}/<city>_<i>.tif`` plus ``out_dir/classes.json``.
    Idempotent: a re-run with the same arguments finds the manifest and the files and writes nothing;
    other arguments rewrite the rasters (atomically) and remove stale ones of the same cities.
    """
    if rasters_per_city < 1:
        raise ValueError(f"rasters_per_city must be >= 1, got {rasters_per_city}")
    out = Path(out_dir)
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    params = {
        "size": list(shape),
        "rasters_per_city": rasters_per_city,
        "seed": seed,
        "target_nir": target_nir,
        "nodata_corner": nodata_corner,
        "version": _GENERATOR_VERSION,
    }

    cities: dict[str, CityFiles] = {}
    for city, sensor_name, nir_applies in DEMO_CITIES:
        sensor = get_sensor(sensor_name, nir=target_nir and nir_applies)
        names = [f"{city}_{i}.tif" for i in range(rasters_per_city)]
        cities[city] = CityFiles(
            name=city,
            images=[out / city / "images" / n for n in names],
            labels=[out / city / "labels" / n for n in names],
            sensor=sensor.name,
            band_names=sensor.bands,
        )

    manifest_path = out / _MANIFEST
    if manifest_path.exists() and (out / "classes.json").exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            previous = None
        all_files = [p for c in cities.values() for p in (*c.images, *c.labels)]
        if previous == params and all(p.exists() for p in all_files):
            return cities

    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # invalid until this run completes
    _write_text_atomic(out / "classes.json", json.dumps(classes_document(), indent=2) + "\n")
    for i in range(rasters_per_city):
        pair = make_city_pair(shape, seed=seed, index=i, target_nir=target_nir, nodata_corner=nodata_corner)
        for city, (image, labels) in pair.items():
            files = cities[city]
            transform = raster_transform(city, i, shape)
            _write_tif_atomic(
                files.images[i], image, transform=transform, nodata=IMAGE_NODATA,
                descriptions=files.band_names,
                tags={"sensor": files.sensor, "city": city, "synthetic": "true"},
            )
            _write_tif_atomic(
                files.labels[i], labels[None], transform=transform, nodata=IGNORE_INDEX,
                descriptions=("class",),
                tags={"classes": json.dumps(list(CLASS_NAMES)), "city": city},
                colormap={k: (*rgb, 255) for k, rgb in enumerate(CLASS_RGB)},
            )
    for files in cities.values():  # rasters of an earlier, larger run would be picked up by globs
        pattern = re.compile(rf"^{re.escape(files.name)}_(\d+)\.tif$")
        for folder in (files.images[0].parent, files.labels[0].parent):
            for p in folder.iterdir():
                m = pattern.match(p.name)
                if m and int(m.group(1)) >= rasters_per_city:
                    p.unlink()
    _write_text_atomic(manifest_path, json.dumps(params, indent=2) + "\n")
    return cities


#: The three cities of the multi-city demo (``make_multicity_demo``): (name, sensor name).
MULTICITY_DEMO: tuple[tuple[str, str], ...] = (("city_a", "sensor_a"), ("city_b", "sensor_b"), ("city_c", "sensor_c"))


def make_multicity_demo(
    out_dir: str | os.PathLike,
    *,
    size: int | tuple[int, int] = 512,
    rasters_per_city: int = 2,
    seed: int = 0,
) -> dict[str, CityFiles]:
    """Write the three multi-city demo cities (``city_a``/``city_b``/``city_c`` through sensors A, B, C)
    as ``out_dir/<city>/{images,labels}/<city>_<i>.tif`` plus ``out_dir/classes.json``.

    Separate from :func:`make_demo_cities` (whose two cities stay exactly as they are). Each city draws
    its scenes from its own seed stream. Idempotent like :func:`make_demo_cities` (a manifest of the
    arguments; the rasters are written atomically).
    """
    if rasters_per_city < 1:
        raise ValueError(f"rasters_per_city must be >= 1, got {rasters_per_city}")
    out = Path(out_dir)
    shape = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    params = {"size": list(shape), "rasters_per_city": rasters_per_city, "seed": seed, "version": _GENERATOR_VERSION,
              "cities": [list(c) for c in MULTICITY_DEMO]}
    cities: dict[str, CityFiles] = {}
    for city, sensor_name in MULTICITY_DEMO:
        sensor = get_sensor(sensor_name)
        names = [f"{city}_{i}.tif" for i in range(rasters_per_city)]
        cities[city] = CityFiles(name=city, images=[out / city / "images" / n for n in names],
                                 labels=[out / city / "labels" / n for n in names], sensor=sensor.name,
                                 band_names=sensor.bands)
    manifest_path = out / "multicity_manifest.json"
    all_files = [p for c in cities.values() for p in (*c.images, *c.labels)]
    if manifest_path.exists() and (out / "classes.json").exists() and all(p.exists() for p in all_files):
        try:
            if json.loads(manifest_path.read_text()) == params:
                return cities
        except (OSError, ValueError):
            pass
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    _write_text_atomic(out / "classes.json", json.dumps(classes_document(), indent=2) + "\n")
    for city_id, (city, sensor_name) in enumerate(MULTICITY_DEMO):
        files, sensor = cities[city], get_sensor(sensor_name)
        for i in range(rasters_per_city):
            scene_seq, render_seq = np.random.SeedSequence([seed, 100 + city_id, i]).spawn(2)
            labels = generate_scene(shape, scene_seq)
            image = render_scene(labels, sensor, np.random.default_rng(render_seq))
            transform = raster_transform(city, i, shape)
            _write_tif_atomic(files.images[i], image, transform=transform, nodata=IMAGE_NODATA, descriptions=files.band_names,
                              tags={"sensor": files.sensor, "city": city, "synthetic": "true"})
            _write_tif_atomic(files.labels[i], labels[None], transform=transform, nodata=IGNORE_INDEX, descriptions=("class",),
                              tags={"classes": json.dumps(list(CLASS_NAMES)), "city": city},
                              colormap={k: (*rgb, 255) for k, rgb in enumerate(CLASS_RGB)})
    _write_text_atomic(manifest_path, json.dumps(params, indent=2) + "\n")
    return cities


def sensor_params(sensor: Sensor) -> dict:
    """A sensor as plain JSON-able data (for run folders and notes)."""
    return asdict(sensor)
