"""The one interface every stylizer (SemI2I and the baselines) implements, so the pipeline treats them alike."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Stylizer(ABC):
    """Turns raw source imagery into target-styled imagery, deterministically, on any raster size.

    ``stylize`` takes RAW source pixels (in_bands, H, W) of any dtype and returns float32 pixels on the
    target's raw value scale, (out_bands, H, W): what the U-net is fine-tuned on with the source labels.
    """

    name: str
    in_bands: int
    out_bands: int

    @abstractmethod
    def _stylize(self, image: np.ndarray) -> np.ndarray:
        """Subclass work on a validated (in_bands, H, W) array."""

    def stylize(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[0] != self.in_bands:
            raise ValueError(f"{self.name}: expected ({self.in_bands}, H, W) source pixels, got {image.shape}")
        out = self._stylize(image)
        assert out.shape == (self.out_bands, *image.shape[1:]) and out.dtype == np.float32
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, in_bands={self.in_bands}, out_bands={self.out_bands})"


def require_same_bands(name: str, source_bands: int, target_bands: int) -> int:
    """Per-band baselines need a band correspondence between the domains."""
    if source_bands != target_bands:
        raise ValueError(
            f"{name} maps band to band and needs equal band counts, got source {source_bands} and "
            f"target {target_bands} (SemI2I handles different band counts)"
        )
    return source_bands
