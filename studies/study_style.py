"""Study: which target style should the trained SemI2I generator paint the fine-tuning data with?

A research harness, not the product's path. It reads a finished ``jobs/adapt.py`` run folder (its
stores, ``unet_source.pt`` and ``semi2i.pt``), fine-tunes the source U-net like the fine-tune stage
(quick profile: 100 Adam steps, batch 8, lr 1e-3) on source patches stylized on the fly, and scores a
fixed random sample of target patches (no overlap blending, so a few points below the report's maps).
Only the style given to AdaIN changes between modes:

* ``global``: Algorithm 1's global statistics (what the stylize stage uses, as in the paper);
* ``patch``:  the style of a random real target patch for every source patch (what training saw);
* ``medoid``: one real target patch's style, the one nearest to the global statistics;
* ``bank``:   a fixed bank of ``--bank`` real target patch styles, one drawn per source patch;
* ``real``:   no stylization (100 more steps on real source: the "more training" control).

    python studies/study_style.py runs/bench2/b2d-s1 --mode patch --seed 0

Prints one JSON line (mode, seed, mIoU and per-class IoU in percent). The fine-tune's patch sampling
is seeded by ``--seed``; its run-to-run spread is large (several mIoU), so compare modes over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


from semi2i.data.normalize import BandStats
from semi2i.data.patches import city_windows
from semi2i.data.store import open_store
from semi2i.metrics import confusion_matrix, scores
from semi2i.models.semi2i import channel_stats, stylize_padded
from semi2i.models.unet import UNet
from semi2i.training.schedule import cosine_learning_rate
from semi2i.checkpoints import load_checkpoint, load_stylizing_models
from semi2i.training.unet_step import UNetStep

MODES = ("global", "patch", "medoid", "bank", "real")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished jobs/adapt.py run folder (two-city SemI2I)")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--seed", type=int, default=0, help="seeds the fine-tune's patch sampling")
    parser.add_argument("--steps", type=int, default=100, help="fine-tune steps (quick profile: 100)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                        help="fine-tune learning rate: constant (the paper profile's) or cosine-decayed to 0 "
                             "(the quick profile's)")
    parser.add_argument("--bank", type=int, default=8, help="styles in the bank (--mode bank)")
    parser.add_argument("--eval-patches", type=int, default=300)
    args = parser.parse_args(argv)

    run = args.run_dir
    unet_state = load_checkpoint(run / "unet_source.pt")
    unet_stats = BandStats.from_attrs(unet_state["stats"])
    cfg = unet_state["unet"]
    model = UNet(unet_state["in_bands"], unet_state["num_classes"], cfg["base_width"], cfg["depth"])
    model.load_state_dict(unet_state["model"])
    source, target = open_store(str(run / "stores" / "source.zarr")), open_store(str(run / "stores" / "target.zarr"))
    generator, global_style, gan_cfg = load_stylizing_models(run / "semi2i.pt")
    size = gan_cfg.patch_size
    source_windows, target_windows = city_windows(source, size, size // 8), city_windows(target, size, size // 8)
    rng = np.random.default_rng(args.seed)

    def target_style(window) -> torch.Tensor:
        image, _ = target.read_window(window.raster, window.y, window.x, size, size)
        with torch.no_grad():
            embedding, _ = generator.enc_b(torch.from_numpy(target.band_stats.to_unit_range(image))[None])
            mu, sigma = channel_stats(embedding, generator.eps)
        return torch.cat([mu.reshape(-1), sigma.reshape(-1)])

    channels = global_style.mu_b.numel()
    bank = None
    if args.mode in ("medoid", "bank"):
        pick = np.random.default_rng(123).choice(len(target_windows), size=min(200, len(target_windows)), replace=False)
        styles = torch.stack([target_style(target_windows[i]) for i in pick])
        if args.mode == "medoid":
            mean = torch.cat([global_style.mu_b, global_style.sigma_b])
            bank = styles[[int((styles - mean).pow(2).sum(1).argmin())]]
        else:
            bank = styles[torch.from_numpy(np.random.default_rng(123).choice(len(styles), args.bank, replace=False))]

    def training_image(raw: np.ndarray) -> np.ndarray:
        if args.mode == "real":
            return unet_stats.zscore(raw)
        if args.mode == "global":
            mu, sigma = global_style.style("b")
        else:
            style = (target_style(target_windows[rng.integers(len(target_windows))]) if args.mode == "patch"
                     else bank[rng.integers(len(bank))])
            mu, sigma = style[:channels], style[channels:]
        unit = torch.from_numpy(source.band_stats.to_unit_range(raw))[None]
        fake = stylize_padded(generator, generator.enc_a, generator.dec_b, unit, mu.reshape(-1), sigma.reshape(-1))
        return unet_stats.zscore(target.band_stats.from_unit_range(fake[0].numpy()))

    torch.manual_seed(args.seed)
    step = UNetStep(model, lr=cfg["lr"], ignore_index=source.ignore_index)
    started = time.perf_counter()
    for iteration in range(args.steps):
        if args.schedule == "cosine":  # the fine-tune stage's curve (semi2i.training.schedule)
            step.set_learning_rate(cosine_learning_rate(iteration, cfg["lr"], args.steps))
        images, labels = [], []
        for i in rng.integers(len(source_windows), size=cfg["batch_size"]):
            w = source_windows[i]
            raw, label = source.read_window(w.raster, w.y, w.x, size, size)
            images.append(training_image(raw))
            labels.append(label)
        step.step(torch.from_numpy(np.stack(images).astype(np.float32)), torch.from_numpy(np.stack(labels).astype(np.int64)))
    fine_tune_s = time.perf_counter() - started

    eval_windows = city_windows(target, size, 0)
    pick = np.random.default_rng(1).choice(len(eval_windows), size=min(args.eval_patches, len(eval_windows)), replace=False)
    k = unet_state["num_classes"]
    confusion = np.zeros((k, k), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        for i in pick:
            w = eval_windows[i]
            raw, label = target.read_window(w.raster, w.y, w.x, size, size)
            prediction = model(torch.from_numpy(unet_stats.zscore(raw))[None]).argmax(1)[0].numpy()
            confusion += confusion_matrix(prediction, label, k, target.ignore_index)
    result = scores(confusion, unet_state["class_names"])
    line = {"run": str(run), "mode": args.mode, "seed": args.seed, "steps": args.steps, "schedule": args.schedule,
            "miou": None if result["miou"] is None else round(result["miou"], 2),
            "iou": {c: None if v is None else round(v, 1) for c, v in result["iou"].items()}, "fine_tune_s": round(fine_tune_s, 1)}
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
