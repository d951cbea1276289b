"""Data-layer benchmark: ingest and patch-stream throughput against plain rasterio baselines.

    python benchmarks/bench_data.py                       # real ../shared/data/dubai-dark-sensor-d if present
    python benchmarks/bench_data.py --synthetic 2048      # or synthetic GeoTIFFs of this size

Prints (a) ingest Mpx/s vs a raw rasterio read + zarr write of the same rasters (the floor of any
ingest: what our validation, label decoding and statistics cost on top), and (b) patch-stream
patches/s (plain iterator and Ray Data; a U-net training's step stream read in the worker and by Ray Data,
:mod:`semi2i.training.step_data`) vs reading the same windows straight from the GeoTIFFs with rasterio.

The machine may be shared: the measured and the reference repetitions are interleaved (ours, then the
baseline, ``--repeats`` times), medians are reported with their ratio, and the load average
(``os.getloadavg()``) before and after is printed. Each patch repetition reads another random set of
windows and starts cold (our decoded-chunk cache cleared, the GeoTIFFs re-opened).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import zarr
from rasterio.windows import Window as RioWindow

from semi2i.data.ingest import STORE_CODEC, ingest_city
from semi2i.data.patches import city_windows, shuffled
from semi2i.data.stream import iter_patches, patch_dataset
from semi2i.training.step_data import StepPlan, step_batches

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "dubai-dark-sensor-d"


def raw_copy(images: list[str], labels: list[str], out: Path) -> None:
    """The baseline: read each raster whole with rasterio, write it to zarr with the same codec/chunks."""
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    codec = (STORE_CODEC,)
    for i, (img, lbl) in enumerate(zip(images, labels)):
        with rasterio.open(img) as src:
            a = src.read()
        root.create_array(f"r{i}/image", data=a, chunks=(a.shape[0], 512, 512), compressors=codec)
        with rasterio.open(lbl) as src:
            b = src.read(1)
        root.create_array(f"r{i}/label", data=b, chunks=(512, 512), compressors=codec)


def synthetic_inputs(size: int, tmp: Path) -> tuple[list[str], list[str], str | None]:
    from semi2i.demo.cities import make_demo_cities

    files = make_demo_cities(tmp / "demo", size=size, rasters_per_city=2)["demo_source"]
    return [str(p) for p in files.images], [str(p) for p in files.labels], str(tmp / "demo" / "classes.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", type=int, help="use synthetic rasters of this size instead of the real data")
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--patches", type=int, default=400, help="patches to read in the stream benchmarks")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="patches per training step (the step-stream rows)")
    args = p.parse_args()

    load_before = tuple(round(v, 2) for v in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        if args.synthetic or not REAL.is_dir():
            images, labels, classes = synthetic_inputs(args.synthetic or 2048, tmp)
            source = f"synthetic {args.synthetic or 2048}^2 x {len(images)}"
        else:
            images, labels = sorted(glob.glob(str(REAL / "images/*.tif"))), sorted(glob.glob(str(REAL / "labels/*.tif")))
            classes, source = str(REAL / "classes.json"), f"{REAL.name} ({len(images)} GeoTIFFs)"
        mpx = sum(rasterio.open(p).height * rasterio.open(p).width for p in images) / 1e6
        print(f"data: {source}, {mpx:.1f} Mpx")

        ours, raw = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            store = ingest_city(images, tmp / f"city{r}.zarr", labels=labels, classes=classes, progress=False)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            raw_copy(images, labels, tmp / f"raw{r}.zarr")
            raw.append(time.perf_counter() - t0)
        t_ours, t_raw = np.median(ours), np.median(raw)
        print(f"ingest (validate, decode, stats, zarr):  {mpx / t_ours:7.1f} Mpx/s  ({t_ours:.2f} s)")
        print(f"raw rasterio read + zarr write:          {mpx / t_raw:7.1f} Mpx/s  ({t_raw:.2f} s)  -> ours at {t_raw / t_ours:.2f} "
              f"(medians of {args.repeats} interleaved repetitions)")

        from semi2i.data.store import CHUNK_CACHE

        every = city_windows(store, size=args.patch_size, overlap=32)
        by_id = {r.id: r.source_image for r in store.rasters}
        label_by_id = {r.id: r.source_label for r in store.rasters}

        def rasterio_windows(windows) -> float:
            t0 = time.perf_counter()
            handles = {}
            for w in windows:
                for path in (by_id[w.raster], label_by_id[w.raster]):
                    if path not in handles:
                        handles[path] = rasterio.open(path)
                win = RioWindow(w.x, w.y, w.size, w.size)
                handles[by_id[w.raster]].read(window=win).astype(np.float32)
                handles[label_by_id[w.raster]].read(1, window=win).astype(np.int64)
            dt = time.perf_counter() - t0
            for h in handles.values():
                h.close()
            return len(windows) / dt

        def plain_iterator(windows) -> float:
            CHUNK_CACHE.clear()
            t0 = time.perf_counter()
            count = sum(len(b["image"]) for b in iter_patches(windows, batch_size=16))
            assert count == len(windows)
            return len(windows) / (time.perf_counter() - t0)

        rio, plain = [], []
        for r in range(args.repeats):
            windows = shuffled(every, seed=r)[: args.patches]
            plain.append(plain_iterator(windows))
            rio.append(rasterio_windows(windows))
        n = len(windows)
        r_rio, r_plain = float(np.median(rio)), float(np.median(plain))

        import ray

        windows = shuffled(every, seed=0)[: args.patches]
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ds = patch_dataset(windows, read_batch_size=16)
        for _ in ds.iter_batches(batch_size=16):  # warm-up: worker start-up is not throughput
            break
        t0 = time.perf_counter()
        count = sum(len(b["image"]) for b in patch_dataset(windows, read_batch_size=16).iter_batches(batch_size=16))
        t_ray = time.perf_counter() - t0

        # what a U-net training step reads (semi2i.training.step_data), through both data planes; Ray Data gets the
        # one CPU a 1-worker training leaves free on this 2-CPU Ray
        plan = StepPlan(((tuple(every), 0),), rank=0, world=1, per_worker=args.batch, normalize="zscore", labels=True)
        steps = max(1, args.patches // args.batch)
        planes = {}
        for plane in ("worker", "ray_data"):
            CHUNK_CACHE.clear()
            list(step_batches(plan, 0, 1, plane, data_cpus=1))  # warm-up: worker start-up is not throughput
            t0 = time.perf_counter()
            count = sum(len(b["patch"]) for b in step_batches(plan, 1, 1 + steps, plane, data_cpus=1))
            planes[plane] = count / (time.perf_counter() - t0)
        ray.shutdown()

        print(f"patches of {args.patch_size}^2 ({n} windows per repetition, image float32 + label int64; "
              f"medians of {args.repeats} interleaved repetitions):")
        print(f"  rasterio windows from the GeoTIFFs:     {r_rio:7.1f} patches/s  {[round(v) for v in rio]}")
        print(f"  plain iterator from zarr (normalised):  {r_plain:7.1f} patches/s  {[round(v) for v in plain]}"
              f"  -> {r_plain / r_rio:.2f}x rasterio")
        print(f"  Ray Data stream from zarr (2 CPUs):     {n / t_ray:7.1f} patches/s  (one run, after a warm-up)")
        for plane, label in (("worker", "training steps, read in the worker: "), ("ray_data", "training steps, read by Ray Data:   ")):
            print(f"  {label}   {planes[plane]:7.1f} patches/s  ({steps} steps of {args.batch}, one run after a warm-up)"
                  f"  -> {planes[plane] / r_rio:.2f}x rasterio")
        print(f"load average: before {load_before}, after {tuple(round(v, 2) for v in os.getloadavg())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
