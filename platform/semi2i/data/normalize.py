"""Per-band statistics computed once at ingest, and the two normalisations built on them.

Networks never see raw sensor values: the U-net sees z-scores, the GANs see values stretched into
tanh's range [-1, 1]. Both are derived from the same :class:`BandStats`, stored in each city store's
attrs, so every stage (training, stylizing, mapping) normalises a city identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Quantile levels kept per band (0, 0.001, ..., 1): enough for histogram matching and robust stretches.
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 1001)
#: The stretch into [-1, 1] maps these quantiles to -1 and +1 (robust to a few hot/dead pixels).
RANGE_LOW_Q, RANGE_HIGH_Q = 0.001, 0.999


@dataclass(frozen=True)
class BandStats:
    """Statistics of the valid (non-nodata) pixels of one city, per band."""

    mean: np.ndarray  # (bands,)
    std: np.ndarray  # (bands,)
    quantiles: np.ndarray  # (bands, len(QUANTILE_LEVELS)), monotone per band

    @property
    def num_bands(self) -> int:
        return int(self.mean.shape[0])

    @property
    def low(self) -> np.ndarray:
        return self._quantile(RANGE_LOW_Q)

    @property
    def high(self) -> np.ndarray:
        return self._quantile(RANGE_HIGH_Q)

    def _quantile(self, q: float) -> np.ndarray:
        return np.array([np.interp(q, QUANTILE_LEVELS, row) for row in self.quantiles])

    # --- the two normalisations (and the inverse of the GAN one) -------------------------------
    def zscore(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(bands, H, W) raw -> float32 z-scores per band (the U-net's input), into ``out`` if given (no
        temporaries: patch readers normalise straight into their batch array)."""
        mean, std = _col(self.mean), _col(np.maximum(self.std, 1e-6))
        out = _float32_like(image, out)
        np.subtract(image, mean, out=out, dtype=np.float32)
        out /= std
        return out

    def zscore_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """:meth:`zscore` of a (bands, H, W) tensor, on its device (a GPU normalises raw pixels itself: a
        quarter of the bytes cross the bus for 8-bit imagery, and the CPU is spared); the same float32
        operations, so the same numbers."""
        mean, std = (torch.from_numpy(_col(v)).to(image.device) for v in (self.mean, np.maximum(self.std, 1e-6)))
        return (image.to(torch.float32) - mean) / std

    def to_unit_range(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(bands, H, W) raw -> float32 in [-1, 1] (the GAN's input; tanh's output range), into ``out`` if given."""
        low, high = _col(self.low), _col(self.high)
        out = _float32_like(image, out)
        np.subtract(image, low, out=out, dtype=np.float32)
        out *= 2.0
        out /= np.maximum(high - low, 1e-6)
        out -= 1.0
        return np.clip(out, -1.0, 1.0, out=out)

    def from_unit_range(self, values: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_unit_range`: [-1, 1] -> raw value scale (float32)."""
        low, high = _col(self.low), _col(self.high)
        return ((np.clip(values, -1.0, 1.0) + 1.0) * 0.5 * (high - low) + low).astype(np.float32)

    # --- (de)serialisation into zarr/JSON attrs ------------------------------------------------
    def to_attrs(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "quantile_levels": len(QUANTILE_LEVELS),
            "quantiles": self.quantiles.tolist(),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> "BandStats":
        quantiles = np.asarray(attrs["quantiles"], dtype=np.float64)
        if quantiles.shape[1] != len(QUANTILE_LEVELS):
            raise ValueError(f"band stats hold {quantiles.shape[1]} quantiles, expected {len(QUANTILE_LEVELS)}")
        return cls(
            mean=np.asarray(attrs["mean"], dtype=np.float64),
            std=np.asarray(attrs["std"], dtype=np.float64),
            quantiles=quantiles,
        )

    @classmethod
    def from_pixels(cls, pixels: np.ndarray) -> "BandStats":
        """Exact statistics of a (bands, N) array of valid pixels (small inputs, tests)."""
        pixels = np.asarray(pixels, dtype=np.float64)
        return cls(
            mean=pixels.mean(axis=1),
            std=pixels.std(axis=1),
            quantiles=np.quantile(pixels, QUANTILE_LEVELS, axis=1).T,
        )


def _float32_like(image: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.empty(image.shape, dtype=np.float32)
    if out.shape != image.shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {image.shape}, got {out.dtype} {out.shape}")
    return out


def _col(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None, None]
