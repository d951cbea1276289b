"""A colour-blind reference map of the target, and how far each method's map agrees with it (since 2026-12-07).

Why: the label-free score (:mod:`semi2i.domain_distance`) tells fine-tunes that adapted from ones that did not, but
cannot order methods that all adapted. A colour transfer can paint one class in another's colours; the fine-tune
then learns the swap, and the target looks like its training imagery on the whole, so a distance between feature
distributions cannot see it (docs/label-free-selection.md, "Pairs from the project's own generator": its pick lost
8.23-61.66 mIoU in 7 of 12 runs). A swap made through colour cannot fool a model that is not allowed to use colour.
So the platform trains one more U-net on the source, each patch's bands mixed by a random rotation about the grey
axis (:func:`random_mixing`: a hue rotation that keeps brightness, for any band count) and then standardised per
band, so that no colour means a class; it maps the target with it, averaging :data:`VIEWS` mixings; and it
scores each method by the mIoU of the method's published map against that reference map (``agreement``, percent).
The reference is weaker than an adapted model, but its errors come from shape, texture and brightness, not from
colour, so a method's swaps cost it agreement instead of hiding in it. Agreement among the candidates themselves
was tried and failed, because their errors line up (docs/label-free-selection.md); the reference's do not.

Files: ``reference/unet.pt`` (the reference U-net, with its step count and seed) and ``reference/agreement.json``
(each method's agreement and the map it was measured on, by the sha-256 of its ``maps/<method>/job.json``, so a
method mapped again is measured again; the reference's own mIoU where the target has labels, for the record).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from semi2i import placement
from semi2i.checkpoints import load_checkpoint, save_checkpoint
from semi2i.data.patches import city_windows, step_windows
from semi2i.data.store import open_store
from semi2i.locations import write_text
from semi2i.models.unet import UNet
from semi2i.training.schedule import cosine_learning_rate

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)

#: Mixings averaged in the reference map (the first is the identity).
VIEWS = 4
#: Agreement is measured on every STEP-th row and column of the maps (a quarter of the pixels).
STEP = 2
#: Patch overlap of the reference's training windows.
OVERLAP = 16


def random_mixing(bands: int, rng: np.random.Generator, keep_grey: bool = True) -> np.ndarray:
    """A random orthogonal (bands, bands) matrix; with ``keep_grey`` it fixes the grey axis (all bands equal) and
    rotates only the directions orthogonal to it: a hue rotation that keeps brightness, for any band count."""
    if not keep_grey or bands < 2:
        q, r = np.linalg.qr(rng.standard_normal((bands, bands)))
        return q * np.sign(np.diag(r))
    grey = np.ones((bands, 1)) / np.sqrt(bands)
    basis, _ = np.linalg.qr(np.hstack([grey, rng.standard_normal((bands, bands - 1))]))
    colour = basis[:, 1:]  # an orthonormal basis of the directions orthogonal to grey
    inner = random_mixing(bands - 1, rng, keep_grey=False)
    return grey @ grey.T + colour @ inner @ colour.T


def standardise(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> each image's bands to mean 0, std 1 (what a mixing leaves of gain and offset, removed)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mean) / std


def mix(x: torch.Tensor, matrices: np.ndarray) -> torch.Tensor:
    """Each image of the (N, C, H, W) batch through its (C, C) matrix, then :func:`standardise`."""
    return standardise(torch.einsum("nij,njhw->nihw", torch.from_numpy(matrices).float().to(x.device), x))


def train_reference(source: str, unet: dict, steps: int, seed: int, device: str = "cpu") -> dict:
    """The reference U-net's state, trained ``steps`` steps on the source store's labelled windows, each patch
    mixed (Adam, the profile's learning rate on a cosine, its batch, patch size and architecture)."""
    store = open_store(source)
    windows = city_windows(store, unet["patch_size"], OVERLAP)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = UNet(store.num_bands, store.num_classes, unet["base_width"], unet["depth"]).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=unet["lr"])
    model.train()
    for step in range(steps):
        batch = step_windows(windows, seed, step, per_worker=unet["batch_size"])
        images, labels = [], []
        for w in batch:
            image, label = store.read_window(w.raster, w.y, w.x, w.size, w.size)
            images.append(store.band_stats.zscore(image))
            labels.append(label.astype(np.int64))
        x = mix(torch.from_numpy(np.stack(images)).to(device), np.stack([random_mixing(store.num_bands, rng) for _ in batch]))
        for group in optim.param_groups:
            group["lr"] = cosine_learning_rate(step, unet["lr"], steps)
        optim.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), torch.from_numpy(np.stack(labels)).to(device), ignore_index=store.ignore_index).backward()
        optim.step()
    return {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "in_bands": store.num_bands, "num_classes": store.num_classes,
            "base_width": unet["base_width"], "depth": unet["depth"], "steps": steps, "seed": seed}


def reference_maps(state: dict, target: str, seed: int, views: int = VIEWS, device: str = "cpu") -> dict[str, np.ndarray]:
    """Each target raster's reference map (uint8 classes): the softmax averaged over ``views`` mixings."""
    store = open_store(target)
    model = UNet(state["in_bands"], state["num_classes"], state["base_width"], state["depth"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    rng = np.random.default_rng(seed + 1)
    mats = [np.eye(store.num_bands)] + [random_mixing(store.num_bands, rng) for _ in range(views - 1)]
    multiple = 2 ** state["depth"]
    maps = {}
    with torch.no_grad():
        for raster in store.rasters:
            image = torch.from_numpy(store.band_stats.zscore(store.read(raster.id)))[None].to(device)
            h, w = image.shape[-2:]
            image = F.pad(image, (0, (-w) % multiple, 0, (-h) % multiple), mode="reflect")
            prob = sum(torch.softmax(model(mix(image, m[None])), 1) for m in mats)
            maps[raster.id] = prob[0, :, :h, :w].argmax(0).cpu().numpy().astype(np.uint8)
    return maps


def map_miou(a: np.ndarray, b: np.ndarray, classes: int) -> float:
    """mIoU (percent) of class map ``a`` against class map ``b`` over the classes either holds (values >= classes,
    nodata or ignore, left out)."""
    ok = (a < classes) & (b < classes)
    counts = np.bincount(a[ok].astype(np.int64) * classes + b[ok], minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - inter
    return 100 * float((inter[union > 0] / union[union > 0]).mean())


def published_map(maps_dir: Path, rasters: Sequence[str]) -> np.ndarray:
    """A method's published map (``maps/<method>/cog/<raster>.tif``), every :data:`STEP`-th pixel, rasters in order."""
    import rasterio

    parts = []
    for raster in rasters:
        with rasterio.open(maps_dir / "cog" / f"{raster}.tif") as src:
            parts.append(src.read(1)[::STEP, ::STEP].ravel())
    return np.concatenate(parts)


def map_stamp(maps_dir: Path) -> str:
    """Which mapping a map folder holds: the sha-256 of its ``job.json`` (written last, on every mapping)."""
    return hashlib.sha256((maps_dir / "job.json").read_bytes()).hexdigest()[:16]


def measure(reference: Path, target: str, maps: dict[str, str], source: str, unet: dict, steps: int, seed: int,
            device: str = "cpu") -> dict:
    """One piece: train the reference (or load ``reference``), map the target, and measure each of ``maps``
    ({method: map folder}) against it; the reference's own mIoU where the target has labels. A kept reference of
    other steps or another seed is trained again."""
    state = load_checkpoint(reference) if reference.exists() else None
    if state is None or (state["steps"], state["seed"]) != (steps, seed):
        state = train_reference(source, unet, steps, seed, device)
        save_checkpoint(reference, state)
    ref = reference_maps(state, target, seed, device=device)
    store = open_store(target)
    rasters = sorted(ref)
    flat = np.concatenate([ref[r][::STEP, ::STEP].ravel() for r in rasters])
    out = {"steps": steps, "seed": seed, "methods": {m: {"agreement": round(map_miou(published_map(Path(d), rasters), flat, store.num_classes), 4),
                           "maps": map_stamp(Path(d))} for m, d in maps.items()}}
    if store.has_labels:
        truth = np.concatenate([store.read(r, "label")[::STEP, ::STEP].ravel() for r in rasters])
        truth[truth == store.ignore_index] = 255  # left out by map_miou, whatever the store's ignore index
        out["reference_miou"] = round(map_miou(flat, truth, store.num_classes), 4)
    return out


def agreements(run: "AdaptRun", methods: Sequence[str]) -> dict[str, float]:
    """{method: agreement} of the ``methods`` that have a published map; none when ``unet.reference_steps`` is 0, or
    when the cities' bands differ (a U-net trained on the source cannot read the target). A kept measurement is
    reused while the method's map is the one it was measured on."""
    steps = run.cfg.profile.unet.reference_steps
    if steps == 0 or open_store(str(run.path("stores", "source.zarr"))).num_bands != \
            open_store(str(run.path("stores", "target.zarr"))).num_bands:
        return {}
    path = run.path("reference", "agreement.json")
    kept = json.loads(path.read_text()) if path.exists() else {}
    if (kept.get("steps"), kept.get("seed")) != (steps, run.cfg.seed):
        kept = {"methods": {}}  # measured against another reference: all again
    maps = {m: run.path("maps", m) for m in methods if (run.path("maps", m) / "job.json").exists()}
    todo = {m: str(d) for m, d in maps.items() if kept["methods"].get(m, {}).get("maps") != map_stamp(d)}
    if todo:
        unet = run.cfg.profile.unet
        piece = functools.partial(measure, run.path("reference", "unet.pt"), str(run.path("stores", "target.zarr")), todo,
                                  str(run.path("stores", "source.zarr")),
                                  {k: getattr(unet, k) for k in ("patch_size", "base_width", "depth", "batch_size", "lr")},
                                  steps, run.cfg.seed, "cuda" if run.cfg.gpu else "cpu")
        fresh = placement.run_one(piece, stage="reference", num_cpus=1 if run.cfg.gpu else placement.node_cpus(),
                                  num_gpus=1 if run.cfg.gpu else 0)
        kept = {**kept, **{k: v for k, v in fresh.items() if k != "methods"},
                "methods": {**kept["methods"], **fresh["methods"]}}
        write_text(path, json.dumps(kept, indent=1))
        log.info("agreement with the colour-blind reference: %s",
                 ", ".join(f"{m} {v['agreement']:.2f}" for m, v in kept["methods"].items()))
    return {m: kept["methods"][m]["agreement"] for m in maps}
