"""Map a whole region with an adapted U-net: chunked, seamless, resumable; zarr + COG + PNG quicklook.

    python jobs/map_region.py --run-dir runs/demo --input 'scenes/*.tif' --out maps/region
    python jobs/map_region.py --run-dir runs/demo --input runs/demo/stores/target.zarr --out maps/target --workers 2
    python jobs/map_region.py --run-dir runs/demo --input 'source/*.tif' --out maps/fake --stylize   # SemI2I, then U-net

The U-net is RUN/unet_semi2i.pt unless --checkpoint names another (with --stylize --direction b, the
target imagery is turned source-like and RUN/unet_source.pt is the default). Chunks run as Ray tasks
(RAY_ADDRESS joins a cluster; on GPUs when the cluster has them) or, with --local, in this process.
Killed? Run the same command again: finished chunks are kept (never when an input file changed since, or
--input names other files: then the job restarts, or is refused when chunks are done; --overwrite restarts it).
Inputs in another CRS or at another pixel size than the model's training imagery get a warning; --resample
warps them to the model's grid. Bad input exits 2 with one line naming the file.
"""

from __future__ import annotations

import argparse
import logging
import sys

from semi2i import locations
from semi2i.config import PRECISIONS
from semi2i.data.store import CityStore, StoreError
from semi2i.mapping import MappingError, default_device, map_region


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=locations.location, help="an adapt run folder (unet_semi2i.pt, semi2i.pt, stores/)")
    p.add_argument("--input", required=True, nargs="+", help="raster path(s) or glob(s), or one city store (.zarr)")
    p.add_argument("--out", required=True, type=locations.location, help="output folder, or an object-store URL (s3://bucket/maps/region)")
    p.add_argument("--checkpoint", type=locations.location, help="U-net checkpoint (default RUN/unet_semi2i.pt)")
    p.add_argument("--stylize", action="store_true", help="stylize with SemI2I before segmenting (writes the stylized imagery too)")
    p.add_argument("--semi2i", type=locations.location, help="SemI2I checkpoint (default RUN/semi2i.pt)")
    p.add_argument("--direction", choices=("a", "b"), default="a",
                   help="a: source-domain input made target-like (default); b: target input made source-like")
    p.add_argument("--chunk-size", type=int, default=1024, help="output chunk edge in pixels (one task per chunk)")
    p.add_argument("--overlap", type=int, default=32, help="window overlap in pixels (taper-blended)")
    p.add_argument("--batch-tiles", type=int, help="windows per forward pass (default: as many as fit 256 x 256 px on a "
                   "CPU, 8 on a GPU)")
    p.add_argument("--probabilities", action="store_true", help="also write per-class probabilities (uint8) to the zarr")
    p.add_argument("--workers", type=int, help="mapping tasks at once (default: one per GPU, else one per CPU)")
    p.add_argument("--local", action="store_true", help="run in this process, without Ray")
    p.add_argument("--threads", type=int, help="with --local: chunk and forward threads (default: torch's CPU threads, 1 torch "
                   "thread each; on a GPU up to 8, the CPUs permitting)")
    p.add_argument("--window", type=int, help="window edge in px (default: twice the model's patch size; larger windows "
                   "waste less compute on overlaps, their logits differ slightly at window borders)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: autocast; auto: bf16 where the device has bf16 units (CUDA >= sm80, AMX CPUs), else fp32")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW inference (channels_last is the default)")
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls/convolutions on CUDA")
    p.add_argument("--no-cog", action="store_true", help="skip the COGs (zarr and quicklook only)")
    p.add_argument("--overwrite", action="store_true", help="redo a finished job, or restart one begun with other settings")
    p.add_argument("--resample", action="store_true",
                   help="warp inputs whose CRS or pixel size differ from the model's training imagery to the model's grid "
                        "(bilinear; the outputs are then on that grid)")
    return p.parse_args(argv)


def _stylize_spec(args: argparse.Namespace) -> dict:
    """SemI2I checkpoint, direction and the band statistics of both domains (from the run's stores)."""
    if args.run_dir is None:
        raise MappingError("--stylize needs --run-dir (its stores hold the domains' band statistics)")
    ckpt = args.semi2i or args.run_dir / "semi2i.pt"
    try:
        source, target = (CityStore(args.run_dir / "stores" / f"{n}.zarr") for n in ("source", "target"))
    except StoreError as exc:
        raise MappingError(str(exc)) from None
    frm, to = (source, target) if args.direction == "a" else (target, source)
    return {"checkpoint": str(ckpt), "source": args.direction, "source_stats": frm.band_stats.to_attrs(),
            "target_stats": to.band_stats.to_attrs(), "in_bands": frm.num_bands, "out_bands": to.num_bands,
            "dtype": str(to.dtype)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.checkpoint is None and args.run_dir is None:
            raise MappingError("give --run-dir (an adapt run folder) or --checkpoint")
        default = "unet_source.pt" if args.stylize and args.direction == "b" else "unet_semi2i.pt"
        checkpoint = args.checkpoint or args.run_dir / default
        stylize = _stylize_spec(args) if args.stylize else None
        summary = map_region(
            args.input if len(args.input) > 1 else args.input[0], checkpoint, args.out, chunk_size=args.chunk_size,
            overlap=args.overlap, batch_tiles=args.batch_tiles, probabilities=args.probabilities, stylize=stylize,
            workers=args.workers, use_ray=not args.local, device=None if not args.local else default_device(),
            cog=not args.no_cog, overwrite=args.overwrite, resample=args.resample, threads=args.threads,
            window=args.window, precision=args.precision, channels_last=False if args.no_channels_last else None,
            tf32=args.tf32,
        )
    except (MappingError, StoreError, FileNotFoundError) as exc:
        print(f"map_region: {exc}", file=sys.stderr)
        return 2
    rate = summary["computed_mpx"] / summary["seconds"] if summary["seconds"] else float("nan")
    print(f"map_region: {summary['mpx']:.2f} Mpx in {len(summary['rasters'])} rasters "
          f"({summary['computed_chunks']}/{summary['chunks']} chunks computed, {rate:.2f} Mpx/s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
