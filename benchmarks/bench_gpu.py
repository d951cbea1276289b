"""The GPU checks end to end: SemI2I and U-net training throughput and MFU, and region mapping Mpx/s with the
paper U-net, each in fp32, TF32 and bf16 (the arithmetic of the profiles' ``precision``/``tf32`` keys).

    python benchmarks/bench_gpu.py --json runs/bench_gpu.json            # one CUDA device, a few minutes
    python benchmarks/bench_gpu.py --device cpu --tiny --json /tmp/g.json  # smoke run on tiny sizes (tests)

MFU = achieved FLOP/s / a dense square matmul's FLOP/s measured in the same run on the same device, in the
row's arithmetic (fp32 with TF32 off, TF32, bf16). A step's FLOPs are counted with
torch.utils.flop_counter.FlopCounterMode (convolutions and matmuls, forward and backward). Sizes are the
paper profile's: SemI2I one 256² patch per domain at width 64 (``--semi2i-batch``), U-net width 64, depth
4, batch 32 at 256². Mapping runs semi2i.mapping.map_region on a synthetic GeoTIFF (ingested first, not
timed) with a random paper U-net (speed does not depend on the weights); ``forward_alone_mpx_s`` is the
model alone on batches already on the device, the reference the mapping is judged against.

The paper profile end to end on the main pair (time, mIoU) is not here: that is
``python jobs/adapt.py --config jobs/configs/dubai-bright-to-sensor.yaml --profile paper --gpu`` with the
precision keys set in the config's ``overrides`` (README, "GPU").
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

import bench_map  # sibling scripts: the synthetic raster, the random U-net checkpoint, the FLOP count
import bench_unet

#: mode -> (training precision, TF32 on CUDA)
MODES = {"fp32": ("fp32", False), "tf32": ("fp32", True), "bf16": ("bf16", False)}
TINY = {"semi2i": dict(base_width=8, n_res_blocks=1, disc_width=8, patch_size=32),
        "unet": dict(base_width=8, depth=2, patch_size=32, batch_size=2), "matmul": 256, "map_side": 256}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke runs)")
    p.add_argument("--modes", nargs="+", choices=list(MODES), help="default: fp32 tf32 bf16 on CUDA, fp32 bf16 on CPU")
    p.add_argument("--checks", nargs="+", choices=("semi2i", "unet", "map"), default=["semi2i", "unet", "map"])
    p.add_argument("--tiny", action="store_true", help="tiny widths and 32 px patches (a smoke run, seconds on a CPU)")
    p.add_argument("--profile", default="paper", help="the profile whose SemI2I and U-net sizes are measured")
    p.add_argument("--semi2i-batch", type=int, default=1, help="patches per domain per SemI2I step (paper: 1)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--matmul", type=int, default=8192, help="side of the square matmul ceiling")
    p.add_argument("--map-mpx", type=float, default=25.0, help="synthetic region size in Mpx")
    p.add_argument("--chunk-size", type=int, default=1024, help="map_region chunk size")
    p.add_argument("--batch-tiles", type=int, default=8, help="map_region windows per forward")
    p.add_argument("--map-threads", type=int, nargs="+", default=[0],
                   help="map_region chunk threads, one mapping row each (0: the job's default on this device)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True (training does not set it)")
    p.add_argument("--unet-layout", choices=("profile", "nchw", "nhwc"), default="profile",
                   help="U-net weights and batches in training: the profile's unet.channels_last (default), or forced")
    p.add_argument("--threads", type=int, help="torch threads (CPU runs)")
    p.add_argument("--work", type=Path, help="scratch folder for the mapping (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def set_mode(mode: str, device: torch.device) -> tuple[str, bool]:
    """Enter ``mode``: on CUDA both TF32 switches are set explicitly (fp32 rows are true fp32)."""
    precision, tf32 = MODES[mode]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    return precision, tf32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_ceiling(mode: str, n: int, device: torch.device, args) -> dict:
    """FLOP/s of an n×n×n matmul in the mode's arithmetic: the peak the MFU is taken against."""
    set_mode(mode, device)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    x, y = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = median_seconds(lambda: x @ y, device, args.warmup, max(args.steps, 5))
    return {"check": "matmul_ceiling", "mode": mode, "n": n, "tflops": 2 * n**3 / seconds / 1e12}


def counted(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def semi2i_row(mode: str, device: torch.device, args, profile) -> dict:
    from semi2i.models.semi2i import count_parameters
    from semi2i.training.semi2i_step import SemI2IStep

    precision, tf32 = set_mode(mode, device)
    cfg = dataclasses.replace(profile.semi2i, in_bands_a=3, in_bands_b=3, precision=precision, tf32=tf32,
                              **(TINY["semi2i"] if args.tiny else {}))
    step = SemI2IStep.create(cfg, device, steps_per_epoch=cfg.max_steps_per_epoch or 1)  # the rate does not change the time
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.rand(args.semi2i_batch, 3, cfg.patch_size, cfg.patch_size, generator=gen).mul(2).sub(1).to(device)
            for _ in range(2))
    flops = counted(lambda: step(a, b))  # one untimed step
    seconds = median_seconds(lambda: step(a, b), device, args.warmup, args.steps)
    return {"check": "semi2i_train", "mode": mode, "precision": precision, "tf32": tf32, "patch": cfg.patch_size,
            "width": cfg.base_width, "batch": args.semi2i_batch, "generator_params": count_parameters(step.models.generator),
            "s_per_step": seconds, "steps_s": 1 / seconds, "gflop_per_step": flops / 1e9, "tflops": flops / seconds / 1e12}


def unet_row(mode: str, device: torch.device, args, profile) -> dict:
    from semi2i.models.unet import UNet
    from semi2i.training.unet_step import UNetStep

    precision, tf32 = set_mode(mode, device)
    cfg = dataclasses.replace(profile.unet, **(TINY["unet"] if args.tiny else {}))
    bands, classes, size, batch = 3, 6, cfg.patch_size, cfg.batch_size
    torch.manual_seed(0)
    channels_last = cfg.channels_last if args.unet_layout == "profile" else args.unet_layout == "nhwc"
    model = UNet(bands, classes, cfg.base_width, cfg.depth).to(device)
    if channels_last:  # as training.unet_loop does: the step then hands the batches over in NHWC too
        model.to(memory_format=torch.channels_last)
    step = UNetStep(model, lr=cfg.lr, precision=precision, tf32=tf32)
    x = torch.randn(batch, bands, size, size, device=device)
    y = torch.randint(0, classes, (batch, size, size), device=device)
    flops = bench_unet.count_flops(cfg.base_width, bands, classes, cfg.depth, batch, size, backward=True)
    seconds = median_seconds(lambda: step.step(x, y), device, args.warmup, args.steps)
    return {"check": "unet_train", "mode": mode, "precision": precision, "tf32": tf32, "patch": size,
            "width": cfg.base_width, "batch": batch, "channels_last": bool(channels_last), "s_per_step": seconds, "samples_s": batch / seconds,
            "gflop_per_step": flops / 1e9, "tflops": flops / seconds / 1e12}


def forward_alone(model, device: torch.device, precision: str, batch: int, seconds: float = 2.0,
                  size: int | None = None) -> float:
    """Mpx/s of the mapping's model on normalised batches already on the device (no I/O, no blending); windows of
    ``size`` px (default: the model's patch size)."""
    size = size or model.patch_size
    x = torch.randn(batch, model.in_bands, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        run = lambda: model.model(x)  # noqa: E731
        run()
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            run()
            n += batch
        sync(device)
        return n * size**2 / 1e6 / (time.perf_counter() - t0)


def map_rows(modes: list[str], device: torch.device, args, work: Path) -> list[dict]:
    from semi2i.data.ingest import ingest_city
    from semi2i.mapping import map_region, read_classes
    from semi2i.segment import SegmentationModel
    from semi2i.tiling import default_window

    shape = SimpleNamespace(checkpoint=None, base_width=8, depth=2, patch=32) if args.tiny else \
        SimpleNamespace(checkpoint=None, base_width=64, depth=4, patch=256)  # the paper U-net
    ckpt = bench_map._checkpoint(shape, work)
    side = TINY["map_side"] if args.tiny else int(round((args.map_mpx * 1e6) ** 0.5))
    raster = bench_map._synthetic_raster(work / f"region_{side}.tif", side)
    store = ingest_city([str(raster)], work / f"region_{side}.zarr", min_size=1, progress=False, overwrite=True)
    model = SegmentationModel(ckpt, device)
    rows = []
    for mode in modes:
        precision, tf32 = set_mode(mode, device)
        forward = forward_alone(model, device, precision, args.batch_tiles)
        window = default_window(shape.patch)  # the mapping's windows: the model alone on them, as it runs them
        forward_windows = forward_alone(model, device, precision, args.batch_tiles, size=window)
        for threads in args.map_threads:
            t0 = time.perf_counter()
            out = work / f"map_{mode}_{threads}"
            summary = map_region(str(store.path), ckpt, out, overwrite=True,
                                 device=str(device), precision=precision, tf32=tf32, overlap=shape.patch // 8,
                                 chunk_size=args.chunk_size, batch_tiles=args.batch_tiles, threads=threads or None)
            total = time.perf_counter() - t0
            mpx = side * side / 1e6
            classes = read_classes(out, next(iter(summary["rasters"])))  # outputs of variants must be equal
            rows.append({"check": "map", "mode": mode, "precision": precision, "tf32": tf32, "mpx": round(mpx, 3),
                         "patch": shape.patch, "width": shape.base_width, "threads": threads or "default",
                         "end_to_end_mpx_s": mpx / total, "mapping_mpx_s": summary["computed_mpx"] / summary["seconds"],
                         "forward_alone_mpx_s": forward, "end_to_end_vs_forward": mpx / total / forward,
                         "window": window, "forward_windows_mpx_s": forward_windows, "chunk_size": args.chunk_size,
                         "batch_tiles": args.batch_tiles, "cudnn_benchmark": args.cudnn_benchmark,
                         "classes_sha1": hashlib.sha1(classes.tobytes()).hexdigest()})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); "
              "`--device cpu --tiny` runs the smoke check", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    from semi2i.config import load_profile

    profile = load_profile(args.profile)
    modes = args.modes or (["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"bench_gpu on {name}, torch {torch.__version__}, modes {modes}, {'tiny' if args.tiny else args.profile} sizes",
          flush=True)
    n = TINY["matmul"] if args.tiny else args.matmul
    rows = [matmul_ceiling(mode, n, device, args) for mode in modes]
    ceiling = {r["mode"]: r["tflops"] for r in rows}
    for mode in modes:
        for check, fn in (("semi2i", semi2i_row), ("unet", unet_row)):
            if check in args.checks:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                row = fn(mode, device, args, profile)
                row["mfu"] = row["tflops"] / ceiling[mode]
                if device.type == "cuda":
                    row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                rows.append(row)
                print(json.dumps(row), flush=True)
    if "map" in args.checks:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            rows += map_rows(modes, device, args, Path(tmp))
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "tiny": args.tiny,
                                         "profile": args.profile, "rows": rows}, indent=2))
    return 0


def print_table(rows: list[dict]) -> None:
    print("\n| check | mode | size | per step / region | rate | TFLOP/s | MFU |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if r["check"] == "matmul_ceiling":
            print(f"| matmul ceiling | {r['mode']} | {r['n']}³ | | | {r['tflops']:.3g} | 1 |")
        elif r["check"] == "map":
            print(f"| map_region ({r['threads']} threads) | {r['mode']} | w{r['width']} {r['patch']}² | {r['mpx']} Mpx | "
                  f"{r['end_to_end_mpx_s']:.2f} Mpx/s (forward alone {r['forward_alone_mpx_s']:.2f}) | | |")
        else:
            rate = f"{r['steps_s']:.2f} steps/s" if "steps_s" in r else f"{r['samples_s']:.1f} samples/s"
            print(f"| {r['check']} | {r['mode']} | w{r['width']} {r['patch']}² ×{r['batch']} | {r['s_per_step']:.4f} s | "
                  f"{rate} | {r['tflops']:.3g} | {r['mfu']:.3g} |")


if __name__ == "__main__":
    sys.exit(main())
