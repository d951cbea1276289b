"""Study: how much SemI2I / U-net training does adaptation need? (torch + numpy + Pillow only)

A research harness, not the product's path: it re-creates the adapt pipeline's protocol in one
process with no Ray, rasterio or zarr, so that it runs on a bare GPU machine (where the geo stack
is not installed) and many budgets can be compared in minutes. It uses the product's own networks,
training steps, normalisations and tiling (SemI2IStep, UNet/UNetStep, BandStats, blend_tiles), the
quick profile's settings unless overridden, and scores on the whole target rasters like adapt does.

    python studies/study_budget.py --data DIR --pair bright-to-sensor --semi2i-steps 3000 --device cuda

DIR holds dubai-aerial/ and dubai-dark-sensor-d/ (as in ../shared/data). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


from domain_distance import domain_distance
from semi2i.config import load_profile
from semi2i.data.normalize import BandStats
from semi2i.metrics import confusion_matrix, scores
from semi2i.models.unet import UNet
from semi2i.stylizers.grayworld import GrayWorldStylizer
from semi2i.stylizers.histogram import HistogramMatchingStylizer
from semi2i.tiling import blend_tiles
from semi2i.training.colormapgan_step import ColorMapGANStep
from semi2i.training.schedule import cosine_learning_rate
from semi2i.training.semi2i_step import SemI2IStep
from semi2i.training.unet_step import UNetStep

CLASSES = ["building", "road", "vegetation", "water", "land"]
IGNORE = 255
PAIRS = {"bright-to-sensor": ("bright", "sensor"), "sensor-to-bright": ("sensor", "bright"), "bright-to-dark": ("bright", "dark")}


def load_domain(data: Path, domain: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(image uint8 (3,H,W), label uint8 (H,W) with 255 = ignore)] of one Dubai domain."""
    if domain == "sensor":
        root = data / "dubai-dark-sensor-d"
        return [(np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1).copy(),
                 np.asarray(Image.open(root / "labels" / p.name)).copy()) for p in sorted((root / "images").glob("*.tif"))]
    root = data / "dubai-aerial"
    palette = json.loads((root / "palette.json").read_text())
    lut = {tuple(c["rgb"]): c["index"] for c in palette["classes"]}
    tiles = (1, 2, 3, 7, 8) if domain == "bright" else (4, 5, 6)
    out = []
    for t in tiles:
        for img in sorted((root / f"tile_{t}" / "images").glob("*.jpg")):
            mask = np.asarray(Image.open(root / f"tile_{t}" / "masks" / (img.stem + ".png")).convert("RGB")).astype(np.int32)
            code = (mask[..., 0] << 16) | (mask[..., 1] << 8) | mask[..., 2]
            label = np.full(code.shape, IGNORE, np.uint8)
            for rgb, idx in lut.items():
                label[code == ((rgb[0] << 16) | (rgb[1] << 8) | rgb[2])] = idx
            out.append((np.asarray(Image.open(img).convert("RGB")).transpose(2, 0, 1).copy(), label))
    return out


def band_stats(rasters) -> BandStats:
    pixels = np.concatenate([im.reshape(im.shape[0], -1)[:, ::7] for im, _ in rasters], axis=1)
    return BandStats.from_pixels(pixels)


class Patches:
    """Random size×size windows (with <50% ignore when labels matter), seeded."""

    def __init__(self, rasters, size: int, seed: int):
        self.rasters, self.size = rasters, size
        self.rng = np.random.default_rng(seed)
        areas = np.array([im.shape[1] * im.shape[2] for im, _ in rasters], float)
        self.p = areas / areas.sum()

    def sample(self, n: int, need_labels: bool = False):
        images, labels = [], []
        while len(images) < n:
            im, lab = self.rasters[self.rng.choice(len(self.rasters), p=self.p)]
            y = self.rng.integers(0, im.shape[1] - self.size + 1)
            x = self.rng.integers(0, im.shape[2] - self.size + 1)
            window = lab[y : y + self.size, x : x + self.size]
            if need_labels and (window == IGNORE).mean() > 0.5:
                continue
            images.append(im[:, y : y + self.size, x : x + self.size])
            labels.append(window)
        return np.stack(images), np.stack(labels)


def train_unet(model, rasters, stats: BandStats, steps: int, cfg, seed: int, device, finetune: bool = False) -> UNet:
    """Train (or, with ``finetune``, fine-tune) with the profile's schedule for either, like adapt does."""
    step = UNetStep(model, lr=cfg.lr)
    patches = Patches(rasters, cfg.patch_size, seed)
    cosine = (cfg.finetune_lr_schedule if finetune else cfg.train_lr_schedule) == "cosine"
    for i in range(steps):
        step.set_learning_rate(cosine_learning_rate(i, cfg.lr, steps) if cosine else cfg.lr)
        images, labels = patches.sample(cfg.batch_size, need_labels=True)
        x = torch.from_numpy(np.stack([stats.zscore(i) for i in images]))
        step.step(x.to(device), torch.from_numpy(labels.astype(np.int64)).to(device))
    return model


@torch.no_grad()
def score(model, rasters, stats: BandStats, tile: int, overlap: int, device, keep: Path | None = None) -> dict:
    """Scores on the target; with ``keep``, also saves the class maps and the mean top-class
    probability per raster there (``.npz``), the inputs of label-free selection studies."""
    model.eval()
    cm = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    maps, confidence = [], []
    for im, lab in rasters:
        logits = blend_tiles(im, model, len(CLASSES), tile=tile, overlap=overlap, batch_tiles=32, prepare=stats.zscore, device=device)
        pred = logits.argmax(0)
        cm += confusion_matrix(pred, lab, len(CLASSES), IGNORE)
        if keep is not None:
            maps.append(pred.astype(np.uint8))
            confidence.append(float(torch.softmax(torch.from_numpy(logits), 0).max(0).values.mean()))
    model.train()
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(keep, *maps, confidence=np.array(confidence))
    return scores(cm, CLASSES)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--pair", choices=list(PAIRS), default="bright-to-sensor")
    p.add_argument("--semi2i-steps", type=int, default=600)
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, nargs="+", default=None)
    p.add_argument("--override", action="append", default=[], help="dotted profile key=value, e.g. semi2i.lr=2e-4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--baselines", action="store_true", help="also histogram matching, gray world and the oracle")
    p.add_argument("--no-oracle", action="store_true", help="with --baselines, skip the target oracle (saves a U-net training)")
    p.add_argument("--semi2i-rungs", type=int, nargs="*", default=[],
                   help="also score SemI2I's stylizer as it stands after these step counts (Tune's rungs), e.g. 1000")
    p.add_argument("--colormapgan", action="store_true", help="also ColorMapGAN (the profile's budget)")
    p.add_argument("--tag", default="", help="names this run's SemI2I variant in the saved maps")
    p.add_argument("--keep-maps", action="store_true", help="save every method's target class maps under $OUT/maps/")
    p.add_argument("--domain-distance", action="store_true",
                   help="also each method's label-free stylized-source-to-target feature distance (studies/domain_distance.py)")
    args = p.parse_args()
    overrides = {k: json.loads(v) if v[0] in "0123456789-[{tf" else v for k, v in (o.split("=", 1) for o in args.override)}
    prof = load_profile("quick", overrides)
    ucfg = prof.unet
    device = torch.device(args.device)
    t0 = time.perf_counter()
    src_name, tgt_name = PAIRS[args.pair]
    source, target = load_domain(Path(args.data), src_name), load_domain(Path(args.data), tgt_name)
    s_stats, t_stats = band_stats(source), band_stats(target)
    result = {"pair": args.pair, "semi2i_steps": args.semi2i_steps, "overrides": overrides, "seed": args.seed, "methods": {}}
    torch.manual_seed(args.seed)
    unet_steps = args.unet_steps or ucfg.train_steps
    base = UNet(3, len(CLASSES), ucfg.base_width, ucfg.depth).to(device)
    train_unet(base, source, s_stats, unet_steps, ucfg, args.seed, device)
    tile, ov = ucfg.patch_size, prof.overlap

    out_dir = Path(os.environ.get("OUT", "."))

    def report(name, model, stylized):
        keep = out_dir / "maps" / f"{args.pair}_s{args.seed}_{name}.npz" if args.keep_maps else None
        s = score(model, target, s_stats, tile, ov, device, keep)
        result["methods"][name] = {"miou": round(s["miou"], 2), "iou": {k: round(v, 1) for k, v in s["iou"].items()}}
        if args.domain_distance:
            result["methods"][name]["distance_base"] = domain_distance(base, stylized, target, s_stats, device, seed=args.seed)
            result["methods"][name]["distance_own"] = domain_distance(model, stylized, target, s_stats, device, seed=args.seed)
        print(f"# {args.pair} steps={args.semi2i_steps} {name}: mIoU {s['miou']:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    report("source_only", base, source)
    finetunes = args.finetune_steps or [ucfg.finetune_steps]

    def finetune_all(name, stylized):
        for n in finetunes:
            model = copy.deepcopy(base)
            train_unet(model, stylized, s_stats, n, ucfg, args.seed + 1, device, finetune=True)
            report(f"{name}@ft{n}", model, stylized)

    def restyle(fn):
        return [(np.clip(np.rint(fn(im)), 0, 255).astype(np.uint8), lab) for im, lab in source]

    if args.baselines:
        finetune_all("histogram_matching", restyle(HistogramMatchingStylizer(s_stats, t_stats).stylize))
        finetune_all("gray_world", restyle(GrayWorldStylizer(s_stats, t_stats).stylize))
    if args.baselines and not args.no_oracle:
        oracle = UNet(3, len(CLASSES), ucfg.base_width, ucfg.depth).to(device)
        train_unet(oracle, target, t_stats, unet_steps, ucfg, args.seed, device)
        s = score(oracle, target, t_stats, tile, ov, device)
        result["methods"]["target_oracle"] = {"miou": round(s["miou"], 2), "iou": {k: round(v, 1) for k, v in s["iou"].items()}}

    if args.colormapgan:
        ccfg = dataclasses.replace(prof.colormapgan, seed=args.seed)
        cstep = ColorMapGANStep.create(ccfg, device=device)
        pa, pb = Patches(source, ccfg.patch_size, args.seed + 4), Patches(target, ccfg.patch_size, args.seed + 5)
        total = ccfg.epochs * ccfg.max_steps_per_epoch
        for i in range(total):
            cstep.set_epoch(min(i // ccfg.max_steps_per_epoch, ccfg.epochs - 1))
            a, _ = pa.sample(1)
            b, _ = pb.sample(1)
            cstep.train_step(torch.from_numpy(s_stats.to_unit_range(a[0])[None]), torch.from_numpy(t_stats.to_unit_range(b[0])[None]))
        cmap = cstep.models.generator.eval()

        @torch.no_grad()
        def colour_map(im):
            return t_stats.from_unit_range(cmap(torch.from_numpy(s_stats.to_unit_range(im))[None])[0].numpy())

        finetune_all("colormapgan", restyle(colour_map))

    if args.semi2i_steps:
        cfg = dataclasses.replace(prof.semi2i, seed=args.seed)
        spe = max(1, args.semi2i_steps // cfg.epochs)
        step = SemI2IStep.create(cfg, device=device, steps_per_epoch=spe)
        pa, pb = Patches(source, cfg.patch_size, args.seed + 2), Patches(target, cfg.patch_size, args.seed + 3)
        name = "semi2i" + (f"_{args.tag}" if args.tag else "")

        def stylized_source(gen, style):
            def stylize(im):
                fake = blend_tiles(im, lambda t: gen.stylize(t, "a", style), 3, tile=cfg.patch_size, overlap=ov, batch_tiles=32,
                                   prepare=s_stats.to_unit_range, device=device)
                return t_stats.from_unit_range(fake)
            return restyle(stylize)

        t1, rung_s = time.perf_counter(), 0.0
        for i in range(args.semi2i_steps):
            step.set_epoch(min(i // spe, cfg.epochs - 1))
            a, _ = pa.sample(1)
            b, _ = pb.sample(1)
            losses = step(torch.from_numpy(s_stats.to_unit_range(a[0])[None]), torch.from_numpy(t_stats.to_unit_range(b[0])[None]))
            if i + 1 in args.semi2i_rungs and i + 1 < args.semi2i_steps:
                # a snapshot scored like the final stylizer; the RNG is restored so the run goes on as without it
                r0, rng = time.perf_counter(), torch.get_rng_state()
                gen, style = step.stylizing
                finetune_all(f"{name}_r{i + 1}", stylized_source(copy.deepcopy(gen).eval(), copy.deepcopy(style)))
                torch.set_rng_state(rng)
                rung_s += time.perf_counter() - r0
        result["semi2i_s_per_step"] = round((time.perf_counter() - t1 - rung_s) / args.semi2i_steps, 4)
        result["semi2i_final_losses"] = {k: round(v, 3) for k, v in losses.items()}
        gen, style = step.stylizing
        gen.eval()
        stylized = stylized_source(gen, style)
        finetune_all(name, stylized)
        preview = np.concatenate([source[0][0][:, :512, :512], stylized[0][0][:, :512, :512]], axis=2)
        result["preview"] = f"preview_{args.pair}_{args.semi2i_steps}_{args.seed}_{args.tag or 'semi2i'}.png"
        out = Path(os.environ.get("OUT", "."))  # previews land beside the results
        Image.fromarray(preview.transpose(1, 2, 0)).save(out / result["preview"])
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
