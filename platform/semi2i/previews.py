"""PNG previews in the spirit of the paper's Fig. 2: real, stylized, ground truth and predictions side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from PIL import Image, ImageDraw

from semi2i.data.normalize import BandStats

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

#: building, road, vegetation, water, land (the Dubai palette); further classes get generated colours
BASE_COLOURS = [(60, 16, 152), (110, 193, 228), (254, 221, 58), (226, 169, 41), (132, 41, 246)]
IGNORE_COLOUR = (155, 155, 155)


def class_colours(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    extra = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(max(0, n - len(BASE_COLOURS)))]
    lut = np.zeros((256, 3), np.uint8)
    lut[:n] = (BASE_COLOURS + extra)[:n]
    lut[n:] = IGNORE_COLOUR
    return lut


def to_rgb8(image: np.ndarray, stats: BandStats) -> np.ndarray:
    """(bands, H, W) raw -> (H, W, 3) uint8 using the robust stretch of the city's statistics."""
    unit = stats.to_unit_range(image)
    rgb = unit[:3] if unit.shape[0] >= 3 else np.repeat(unit[:1], 3, axis=0)
    return ((rgb + 1.0) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)


def _crop(h: int, w: int, size: int) -> tuple[slice, slice]:
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return slice(y, y + min(size, h)), slice(x, x + min(size, w))


def _panel(array: np.ndarray, title: str, size: int) -> Image.Image:
    img = Image.fromarray(array).resize((size, size), Image.NEAREST)
    canvas = Image.new("RGB", (size, size + 18), "white")
    canvas.paste(img, (0, 18))
    ImageDraw.Draw(canvas).text((3, 3), title, fill="black")
    return canvas


def adaptation_preview(run: "AdaptRun", out: Path, crop: int = 384, panel: int = 256) -> Path:
    """source | stylized source (SemI2I) | target | target GT | source-only prediction | SemI2I prediction."""
    source, target = run.store("source"), run.store("target")
    lut = class_colours(target.num_classes)
    src_info, tgt_info = source.rasters[0], target.rasters[0]
    sy, sx = _crop(src_info.height, src_info.width, crop)
    ty, tx = _crop(tgt_info.height, tgt_info.width, crop)
    src = source.dataset(src_info.id)
    tgt = target.dataset(tgt_info.id)
    panels = [_panel(to_rgb8(src.image.values[:, sy, sx], source.band_stats), "source", panel)]
    stylized = run.path("stylized", "semi2i", "images", f"{src_info.id}.tif")
    if stylized.exists():
        with rasterio.open(stylized) as f:
            panels.append(_panel(to_rgb8(f.read()[:, sy, sx], target.band_stats), "stylized source (SemI2I)", panel))
    panels.append(_panel(to_rgb8(tgt.image.values[:, ty, tx], target.band_stats), "target", panel))
    if target.has_labels:
        panels.append(_panel(lut[tgt.label.values[ty, tx]], "target ground truth", panel))
    for method, title in (("source_only", "source-only U-net"), ("semi2i", "SemI2I fine-tuned U-net")):
        path = run.path("maps", method, "cog", f"{tgt_info.id}.tif")
        if path.exists():
            with rasterio.open(path) as f:
                panels.append(_panel(lut[f.read(1)[ty, tx]], title, panel))
    legend_h = 22
    sheet = Image.new("RGB", (panel * len(panels), panel + 18 + legend_h), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, (i * panel, 0))
    draw = ImageDraw.Draw(sheet)
    x = 4
    for k, name in enumerate(target.class_names + ["ignore"]):
        colour = tuple(int(c) for c in (lut[k] if k < target.num_classes else IGNORE_COLOUR))
        draw.rectangle([x, panel + 22, x + 14, panel + 36], fill=colour, outline="black")
        draw.text((x + 18, panel + 23), name, fill="black")
        x += 24 + 7 * len(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    sheet.save(tmp)
    os.replace(tmp, out)
    return out
