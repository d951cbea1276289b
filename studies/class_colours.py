"""Mean colour of each labelled class in a run's cities: the source, the target, and each stylized source.

A stylizer that serves the fine-tune well paints each class of the source in the target's colours of that
class; comparing per-class means (and spreads) shows where a stylizer's colours are off, which whole-city
statistics hide when the two cities hold the classes in different proportions.

    python studies/class_colours.py runs/s40/bright-to-sensor-s0 [--methods colormapgan semi2i]

Prints one line per city: for each class, the per-band mean ± standard deviation of its pixels (raw values).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from semi2i.data.store import CityStore


def class_colours(store: CityStore) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Class name -> (per-band mean, per-band standard deviation) over the store's labelled pixels."""
    sums: dict[str, list] = {}
    for r in store.rasters:
        image, label = store.read_window(r.id, 0, 0, r.height, r.width)
        for index, name in enumerate(store.class_names):
            mask = label == index
            if mask.any():
                pixels = image[:, mask].astype(np.float64)
                acc = sums.setdefault(name, [0, np.zeros(len(pixels)), np.zeros(len(pixels))])
                acc[0] += mask.sum()
                acc[1] += pixels.sum(axis=1)
                acc[2] += (pixels**2).sum(axis=1)
    return {name: (s / n, np.sqrt(np.maximum(q / n - (s / n) ** 2, 0))) for name, (n, s, q) in sums.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished adapt run folder")
    p.add_argument("--methods", nargs="+", default=["colormapgan", "semi2i"])
    args = p.parse_args()
    cities = {"source": args.run / "stores" / "source.zarr", "target": args.run / "stores" / "target.zarr",
              **{m: args.run / "stylized" / m / "store.zarr" for m in args.methods}}
    for city, path in cities.items():
        colours = class_colours(CityStore(path))
        print(f"{city:12s} " + "  ".join(f"{name}: {np.rint(mean).astype(int).tolist()}±{np.rint(std).astype(int).tolist()}"
                                          for name, (mean, std) in colours.items()))


if __name__ == "__main__":
    main()
