"""Rendering a label map: a "true" reflectance image (per-class base colours, per-object variation,
texture, roof shading and shadows), passed through a :class:`~semi2i.demo.sensors.Sensor` into uint8
digital numbers (:func:`render_scene`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from semi2i.demo.scene import BUILDING, IGNORE_INDEX, IMAGE_NODATA, LAND, ROAD, VEGETATION, WATER, smooth_noise
from semi2i.demo.sensors import ALL_BANDS, Sensor


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
    soil = 1.0 + 0.08 * smooth_noise(rng, (h, w), 40) + 0.03 * rng.standard_normal((h, w))
    refl[:, is_land] *= soil[is_land]

    # Roads: worn asphalt with fine lane noise and patches.
    is_road = labels == ROAD
    wear = 1.0 + 0.10 * smooth_noise(rng, (h, w), 20) + 0.06 * ndimage.uniform_filter1d(
        rng.standard_normal((h, w)), 5, axis=int(rng.integers(0, 2))
    )
    refl[:, is_road] *= wear[is_road]

    # Vegetation: blobby tree crowns with dark gaps.
    is_veg = labels == VEGETATION
    crowns = 1.0 + 0.22 * smooth_noise(rng, (h, w), 4) + 0.08 * smooth_noise(rng, (h, w), 30)
    refl[:, is_veg] *= np.clip(crowns, 0.4, None)[is_veg]

    # Water: smooth, with a faint large-scale turbidity change.
    is_water = labels == WATER
    turbidity = 1.0 + 0.06 * smooth_noise(rng, (h, w), 80)
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
