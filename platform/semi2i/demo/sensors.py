"""The demo's "sensors": a :class:`Sensor` model (cross-talk, illumination gradient, blur, haze,
gain/offset, gamma, noise) and the three cameras the demo cities are seen through."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

#: The four channels of the "true" reflectance image, in this order.
ALL_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir")


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


def sensor_params(sensor: Sensor) -> dict:
    """A sensor as plain JSON-able data (for run folders and notes)."""
    return asdict(sensor)
