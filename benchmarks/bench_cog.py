"""Benchmark: publishing a class map as a COG, the staging GeoTIFF at deflate level 1 against level 6.

    python benchmarks/bench_cog.py [--side 10000] [--repeats 3] [--json FILE]

``semi2i.mapping.output.write_cog`` writes the zarr class map block by block into a tiled staging GeoTIFF with
overviews, then GDAL's COG driver copies it, re-encoding every tile at the COG's own level. The staging file's
level therefore changes no byte of the COG, only the time: this measures both levels on the same synthetic class
map (6 classes in 50 px blocks plus 5 % single-pixel noise, a map's texture), alternately, and checks that the two
COGs are the same bytes. The baseline (level 6, GDAL's default) is what the code used before 2026-12-04.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from semi2i.data.store import RasterInfo
from semi2i.mapping.output import _write_cog


def class_map(side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, (-(-side // 50), -(-side // 50)), dtype=np.uint8)
    classes = np.repeat(np.repeat(blocks, 50, axis=0), 50, axis=1)[:side, :side]
    noise = rng.random((side, side)) < 0.05
    classes[noise] = rng.integers(0, 6, int(noise.sum()), dtype=np.uint8)
    return classes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=10000, help="the class map is side x side (default: 100 Mpx)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        array = zarr.create_array(zarr.storage.LocalStore(work / "map.zarr"), shape=(args.side, args.side),
                                  chunks=(1024, 1024), dtype="uint8", fill_value=255)
        array[:] = class_map(args.side)
        info = RasterInfo("r", args.side, args.side, CRS.from_epsg(32640), Affine(0.5, 0, 326000.0, 0, -0.5, 2790000.0),
                          "r.tif", None, args.side * args.side)
        seconds: dict[int, list[float]] = {6: [], 1: []}
        digests: dict[int, set[str]] = {6: set(), 1: set()}
        for _ in range(args.repeats):
            for level in (6, 1):
                dest = work / f"level{level}.tif"
                t0 = time.perf_counter()
                _write_cog(array, info, dest, nodata=255, block=1024, resampling=Resampling.nearest, stage_zlevel=level)
                seconds[level].append(time.perf_counter() - t0)
                digests[level].add(hashlib.md5(dest.read_bytes()).hexdigest())
        size = (work / "level1.tif").stat().st_size
    same = digests[6] == digests[1] and len(digests[1]) == 1
    row = {"mpx": args.side**2 / 1e6, "repeats": args.repeats, "stage_level6_s": round(statistics.median(seconds[6]), 3),
           "stage_level1_s": round(statistics.median(seconds[1]), 3), "cog_bytes": size, "same_cog_bytes": same}
    row["speedup"] = round(row["stage_level6_s"] / row["stage_level1_s"], 3)
    print(json.dumps(row))
    print(f"\n| Mpx | stage level 6 (before) | stage level 1 (now) | speed-up | COG bytes | same COG |\n|---|---|---|---|---|---|\n"
          f"| {row['mpx']:g} | {row['stage_level6_s']} s | {row['stage_level1_s']} s | {row['speedup']}x | {size} | {same} |")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
