"""Benchmark region mapping: end-to-end Mpx/s vs the model's forward alone and a naive window loop; peak RSS.

    python benchmarks/bench_map.py                               # small synthetic regions, a couple of minutes on 2 cores
    python benchmarks/bench_map.py --sizes 100 400 --ray         # the issue's 100 / 400 Mpx regions, as Ray tasks
    python benchmarks/bench_map.py --checkpoint runs/demo/unet_semi2i.pt

Each region size runs in its own subprocess, so ``ru_maxrss`` (peak RSS, taken after the first
end-to-end run) is that size's alone; memory is flat when the peak does not grow with the region.
``end_to_end_mpx_s`` maps the region's city store (ingested once, before the clock starts);
``end_to_end_from_raster_mpx_s`` maps the GeoTIFF itself (read window by window, as the naive loop reads it).
Without --checkpoint a random U-net of the given shape is used (speed does not depend on the weights).

The machine may be shared, so every number is the median of ``--repeats`` rounds, and each round runs
the end-to-end job, the naive loop and the references one after the other (interleaved: background load
hits all alike); the ratios are taken within the run. References: ``forward_alone_mpx_s`` (the model on
in-memory batches of 8 patches, torch's default threads) and ``forward_alone_threads_mpx_s`` (the same,
laid out as the mapping runs it: one forward per chunk thread, one torch thread each). The references and the
naive loop run in the job's ``--precision``, so every ratio compares one arithmetic. The load average
(``os.getloadavg()``) before and after is part of each row.

The seamless blend computes every pixel the windows overlap more than once: ``window_pixels_per_pixel`` is the
pixels of the region's distinct windows over the region's (the window grid's geometry, 1.16 for 256 px windows with
16 px of overlap on a 5000 px side). ``forward_windows_mpx_s`` runs the model on the job's windows in the job's
layout (batch, chunk threads), and ``overlap_ceiling_mpx_s`` is that over ``window_pixels_per_pixel``: the fastest
any seamless job with these windows can map. ``end_to_end_vs_overlap_ceiling`` says how much of it the job reaches
(what reading, blending, writing and scheduling cost), ``end_to_end_vs_forward`` how much of the bare model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=float, nargs="+", default=[0.5, 2.0], help="region sizes in Mpx (square rasters)")
    p.add_argument("--checkpoint", type=Path, help="U-net checkpoint (default: a random U-net, see --base-width ...)")
    p.add_argument("--base-width", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--ray", action="store_true", help="end-to-end as Ray tasks (RSS then misses the workers)")
    p.add_argument("--workers", type=int)
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians are reported)")
    p.add_argument("--window", type=int, help="mapping window edge (default: the job's, twice the model's patch size)")
    p.add_argument("--threads", type=int, help="chunk threads of the in-process path (default: torch's threads)")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32")
    p.add_argument("--one", type=float, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    return p.parse_args(argv)


def _checkpoint(args, work: Path) -> Path:
    if args.checkpoint:
        return args.checkpoint
    import torch

    from semi2i.data.normalize import BandStats
    from semi2i.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(3, 5, args.base_width, args.depth).eval()
    stats = BandStats.from_pixels(np.random.default_rng(0).uniform(0, 255, (3, 4096)))
    path = work / "bench_unet.pt"
    torch.save({"model": model.state_dict(), "in_bands": 3, "num_classes": 5, "class_names": [f"c{i}" for i in range(5)],
                "ignore_index": 255, "unet": {"base_width": args.base_width, "depth": args.depth, "patch_size": args.patch},
                "stats": stats.to_attrs()}, path)
    return path


def _synthetic_raster(path: Path, side: int) -> Path:
    """A (3, side, side) uint8 GeoTIFF written in strips (its size never sits in memory)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", height=side, width=side, count=3, dtype="uint8", crs=CRS.from_epsg(32640),
                   transform=from_origin(326000.0, 2790000.0, 0.5, 0.5), tiled=True, blockxsize=512, blockysize=512,
                   nodata=0, BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, side, 512):
            h = min(512, side - y)
            coarse = rng.integers(1, 256, (3, h // 8 + 1, side // 8 + 1), dtype=np.uint8)
            dst.write(np.repeat(np.repeat(coarse, 8, 1), 8, 2)[:, :h, :side], window=Window(0, y, side, h))
    return path


def _forward_alone(model, seconds: float = 3.0, threads: int = 0, precision: str = "fp32", size: int | None = None,
                   batch: int = 8) -> float:
    """Mpx/s of the model on in-memory normalised patches (``batch`` of ``size`` px, default the model's patch
    size): the compute ceiling.

    ``threads`` > 0: that many Python threads forward at once with one torch thread each (the way the
    mapping's chunk threads run it)."""
    import threading

    import torch

    from semi2i.models.precision import autocast

    size = size or model.patch_size
    x = torch.randn(batch, model.in_bands, size, size).contiguous(memory_format=torch.channels_last)
    counts = []

    def loop():
        n, t0 = 0, time.perf_counter()
        with torch.inference_mode(), autocast("cpu", precision):
            model.model(x)
            while time.perf_counter() - t0 < seconds:
                model.model(x)
                n += x.shape[0]
        counts.append(n)

    if not threads:
        t0 = time.perf_counter()
        loop()
        return counts[0] * size**2 / 1e6 / (time.perf_counter() - t0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        workers = [threading.Thread(target=loop) for _ in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(counts) * size**2 / 1e6 / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


def _naive_loop(ckpt: Path, raster: Path, out: Path, precision: str = "fp32") -> float:
    """rasterio window by window (no overlap, no blending), torch one window at a time: Mpx/s."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from semi2i.models.precision import autocast
    from semi2i.segment import SegmentationModel

    model = SegmentationModel(ckpt)
    t = model.patch_size
    t0 = time.perf_counter()
    with rasterio.open(raster) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=255)
        with rasterio.open(out, "w", **profile) as dst, torch.no_grad(), autocast("cpu", precision):
            for y in range(0, src.height, t):
                for x in range(0, src.width, t):
                    win = Window(x, y, min(t, src.width - x), min(t, src.height - y))
                    image = src.read(window=win)
                    logits = model.model(torch.from_numpy(model.stats.zscore(image)[None]))[0]
                    dst.write(logits.argmax(0).numpy().astype(np.uint8)[None], window=win)
        pixels = src.height * src.width
    return pixels / 1e6 / (time.perf_counter() - t0)


def window_pixels_per_pixel(side: int, window: int, overlap: int) -> float:
    """Pixels of the distinct windows the job's grid lays over a ``side`` x ``side`` region, per region pixel."""
    from semi2i.mapping.windows import WindowGrid

    grid = WindowGrid(side, side, window, overlap, fit=True)
    return len(grid.origins(0, 0, side, side)) * grid.th * grid.tw / side**2


def run_one(args) -> dict:
    import os
    import statistics

    import torch

    from semi2i.data.ingest import ingest_city
    from semi2i.mapping import map_region
    from semi2i.mapping.local import default_threads
    from semi2i.segment import SegmentationModel
    from semi2i.tiling import default_batch_windows, default_window

    work = Path(args.work)
    side = int(round((args.one * 1e6) ** 0.5))
    ckpt = _checkpoint(args, work)
    raster = _synthetic_raster(work / f"region_{side}.tif", side)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    store = ingest_city([str(raster)], work / f"region_{side}.zarr", min_size=1, progress=False, overwrite=True)
    ingest_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = SegmentationModel(ckpt)
    threads = args.threads or default_threads(None)
    mpx = side * side / 1e6
    runs: dict[str, list[float]] = {k: [] for k in ("e2e", "raster", "mapping", "publish", "naive", "forward",
                                                    "forward_threads", "forward_windows")}
    rss_map = None
    for _ in range(args.repeats):  # interleaved: each round measures everything once
        t0 = time.perf_counter()
        summary = map_region(str(store.path), ckpt, work / f"map_{side}", chunk_size=args.chunk_size, overlap=args.overlap,
                             use_ray=args.ray, workers=args.workers, overwrite=True, window=args.window,
                             threads=args.threads, precision=args.precision)
        total_s = time.perf_counter() - t0
        if rss_map is None:
            rss_map = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runs["e2e"].append(mpx / total_s)
        runs["mapping"].append(summary["computed_mpx"] / summary["seconds"])
        runs["publish"].append(total_s - summary["seconds"])
        t0 = time.perf_counter()  # the same job on the GeoTIFF itself: read window by window, no copy first
        map_region(str(raster), ckpt, work / f"map_raster_{side}", chunk_size=args.chunk_size, overlap=args.overlap,
                   use_ray=args.ray, workers=args.workers, overwrite=True, window=args.window, threads=args.threads,
                   precision=args.precision)
        runs["raster"].append(mpx / (time.perf_counter() - t0))
        runs["naive"].append(_naive_loop(ckpt, raster, work / f"naive_{side}.tif", args.precision))
        runs["forward"].append(_forward_alone(model, precision=args.precision))
        runs["forward_threads"].append(_forward_alone(model, threads=threads, precision=args.precision)
                                       if threads > 1 else runs["forward"][-1])
        window = (summary["settings"].get("inference") or {}).get("window") or default_window(model.patch_size)
        runs["forward_windows"].append(_forward_alone(model, threads=threads if threads > 1 else 0, precision=args.precision,
                                                      size=window, batch=default_batch_windows(window)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    per_pixel = window_pixels_per_pixel(side, window, args.overlap)
    ceiling = med["forward_windows"] / per_pixel
    return {
        "mpx": round(mpx, 2), "side": side, "ingest_s": round(ingest_s, 1), "repeats": args.repeats,
        "window": window, "overlap": args.overlap, "threads": threads, "precision": args.precision,
        "torch_threads": torch.get_num_threads(),
        "end_to_end_mpx_s": round(med["e2e"], 3), "end_to_end_from_raster_mpx_s": round(med["raster"], 3),
        "mapping_mpx_s": round(med["mapping"], 3),
        "publish_s": round(med["publish"], 1),
        "naive_loop_mpx_s": round(med["naive"], 3), "forward_alone_mpx_s": round(med["forward"], 3),
        "forward_alone_threads_mpx_s": round(med["forward_threads"], 3),
        "end_to_end_vs_forward": round(med["e2e"] / med["forward"], 3),
        "end_to_end_vs_forward_threads": round(med["e2e"] / med["forward_threads"], 3),
        "end_to_end_vs_naive": round(med["e2e"] / med["naive"], 3),
        "window_pixels_per_pixel": round(per_pixel, 4), "forward_windows_mpx_s": round(med["forward_windows"], 3),
        "overlap_ceiling_mpx_s": round(ceiling, 3), "end_to_end_vs_overlap_ceiling": round(med["e2e"] / ceiling, 3),
        "from_raster_vs_naive": round(med["raster"] / med["naive"], 3),
        "end_to_end_runs_mpx_s": [round(v, 3) for v in runs["e2e"]],
        "peak_rss_mib_before_map": round(rss_before), "peak_rss_mib": round(rss_map),
        "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        ckpt = _checkpoint(args, work)
        rows = []
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--one", str(size), "--work", str(work), "--chunk-size", str(args.chunk_size),
                   "--overlap", str(args.overlap), "--base-width", str(args.base_width), "--depth", str(args.depth),
                   "--patch", str(args.patch), "--repeats", str(args.repeats), "--precision", args.precision]
            cmd += ["--checkpoint", str(ckpt)] + (["--ray"] if args.ray else []) + (["--workers", str(args.workers)] if args.workers else [])
            cmd += (["--window", str(args.window)] if args.window else []) + (["--threads", str(args.threads)] if args.threads else [])
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(res.stderr[-3000:], file=sys.stderr)
                return res.returncode
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            for f in work.glob("region_*"):
                subprocess.run(["rm", "-rf", str(f)])
        print("\n| Mpx | window | end-to-end Mpx/s | naive loop | forward alone | forward, chunk-thread layout | "
              "e2e / forward | e2e / naive | window px per px | overlap ceiling | e2e / ceiling | peak RSS MiB | "
              "load avg (1 min) before/after |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['mpx']} | {r['window']} | {r['end_to_end_mpx_s']} | {r['naive_loop_mpx_s']} | {r['forward_alone_mpx_s']} | "
                  f"{r['forward_alone_threads_mpx_s']} | {r['end_to_end_vs_forward']} | {r['end_to_end_vs_naive']} | "
                  f"{r['window_pixels_per_pixel']} | {r['overlap_ceiling_mpx_s']} | {r['end_to_end_vs_overlap_ceiling']} | "
                  f"{r['peak_rss_mib']} | {r['loadavg_before'][0]} / {r['loadavg_after'][0]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
