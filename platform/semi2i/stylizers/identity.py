"""Identity stylizer: the source imagery unchanged, i.e. the source-only baseline."""

from __future__ import annotations

import numpy as np

from semi2i.stylizers.base import Stylizer


class IdentityStylizer(Stylizer):
    """Returns the source pixels as float32; fine-tuning on them is the "U-net, no adaptation" row."""

    name = "identity"

    def __init__(self, bands: int):
        self.in_bands = self.out_bands = int(bands)

    def _stylize(self, image: np.ndarray) -> np.ndarray:
        return image.astype(np.float32, copy=True)
