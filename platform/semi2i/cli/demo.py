"""The ingest demo: synthetic source/target cities -> georeferenced GeoTIFFs -> Zarr city stores.

    python jobs/demo.py [--run-dir runs/demo] [--size 512] [--rasters 2] [--seed 0]

Writes ``<run-dir>/data/<city>/{images,labels}/*.tif``, ``<run-dir>/stores/<city>.zarr`` and a preview
``<run-dir>/previews/demo_cities.png`` (image and labels of each city). Re-running reuses what exists.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from semi2i.data.ingest import IngestError, ingest_city
from semi2i.data.store import CityStore
from semi2i.demo.cities import make_demo_cities
from semi2i.demo.scene import CLASS_RGB


def preview(stores: list[CityStore], out: Path) -> None:
    """One row per city: a stretched RGB of its first raster beside its colour-coded labels."""
    rows = []
    for store in stores:
        ds = store.dataset(store.rasters[0].id)
        rgb = store.band_stats.to_unit_range(ds.image.values)[:3]
        rgb = ((rgb + 1.0) * 127.5).astype(np.uint8).transpose(1, 2, 0)
        lut = np.zeros((256, 3), np.uint8)
        lut[: len(CLASS_RGB)] = np.asarray(CLASS_RGB, np.uint8)
        lut[255] = (155, 155, 155)
        labels = lut[ds.label.values]
        rows.append(np.concatenate([rgb, labels], axis=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    Image.fromarray(np.concatenate(rows, axis=0)).save(tmp)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rasters", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run = Path(args.run_dir)
    cities = make_demo_cities(run / "data", size=args.size, rasters_per_city=args.rasters, seed=args.seed)
    stores = []
    for name, files in cities.items():
        out = run / "stores" / f"{name}.zarr"
        try:
            store = CityStore(out) if out.exists() else ingest_city(
                [str(p) for p in files.images], out, labels=[str(p) for p in files.labels],
                classes=run / "data" / "classes.json", min_size=min(256, args.size))
        except IngestError as exc:
            print(f"demo: error: {exc}", file=sys.stderr)
            return 2
        stores.append(store)
        print(f"{name}: {store.path} - {len(store.rasters)} rasters, bands {store.band_names}, "
              f"band means {np.round(store.band_stats.mean, 1).tolist()}")
    preview(stores, run / "previews" / "demo_cities.png")
    print(f"preview: {run / 'previews' / 'demo_cities.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
