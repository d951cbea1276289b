"""Ingest a city's rasters (and labels) into a Zarr city store.

    python jobs/ingest.py --images 'data/city/images/*.tif' --labels 'data/city/labels/*.tif' \
        --classes data/city/classes.json --out runs/stores/city.zarr
    python jobs/ingest.py --images 'tile_*/images/*.jpg' --labels 'tile_*/masks/*.png' \
        --palette palette.json --out bright.zarr

Bad input exits non-zero with one line naming the file and the problem, and leaves no store behind.
"""

from __future__ import annotations

import argparse
import logging
import sys

from semi2i.data.ingest import DEFAULT_COMPRESSOR, STORE_CODECS, IngestError, ingest_city


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, nargs="+", help="image rasters: glob(s) or paths (GeoTIFF/COG, JPEG, PNG)")
    p.add_argument("--labels", nargs="+", help="label rasters paired by matching names or sorted order")
    p.add_argument("--palette", help="palette JSON for colour-coded masks (classes index/name/rgb + ignore colours)")
    p.add_argument("--classes", help="class list JSON ({'classes': [{index, name}]}) for class-index labels")
    p.add_argument("--out", required=True, help="output city store (a .zarr directory)")
    p.add_argument("--name", help="city name (default: the store's file name)")
    p.add_argument("--ignore-index", type=int, default=255, help="label value that never counts (default 255)")
    p.add_argument("--nodata", type=float, help="image nodata value (default: the rasters' own)")
    p.add_argument("--min-size", type=int, default=256, help="refuse rasters smaller than one patch of this size")
    p.add_argument("--chunk-size", type=int, default=512, help="zarr chunk edge in pixels")
    p.add_argument("--compressor", default=DEFAULT_COMPRESSOR,
                   help=f"{' or '.join(STORE_CODECS)} (default {DEFAULT_COMPRESSOR}: fastest to read; zstd: smaller stores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        store = ingest_city(
            args.images,
            args.out,
            labels=args.labels,
            palette=args.palette,
            classes=args.classes,
            name=args.name,
            ignore_index=args.ignore_index,
            nodata=args.nodata,
            min_size=args.min_size,
            chunk_size=args.chunk_size,
            compressor=args.compressor,
            overwrite=args.overwrite,
        )
    except IngestError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    print(f"{store.path}: {len(store.rasters)} rasters, bands {store.band_names}, classes {store.class_names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
