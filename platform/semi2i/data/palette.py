"""Colour-coded label masks -> class indices.

A palette file (the format of ``dubai-aerial/palette.json``) lists classes with index, name and RGB
colour, plus ignore colours. Masks may be RGB rasters or single-band paletted PNGs (GDAL colour table);
both are decoded through the RGB colours, so the palette file stays the single source of truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PaletteError(ValueError):
    """A palette file that cannot be used."""


@dataclass(frozen=True)
class Palette:
    class_names: tuple[str, ...]
    colours: np.ndarray  # (num_classes, 3) uint8, row i = colour of class index i
    ignore_colours: np.ndarray  # (k, 3) uint8
    ignore_index: int = 255

    @classmethod
    def load(cls, path: str | Path, ignore_index: int = 255) -> "Palette":
        from semi2i import io_paths  # local: io_paths imports nothing from the data layer

        path = io_paths.as_path(path)
        try:
            spec = json.loads(io_paths.read_text(path))
        except FileNotFoundError:
            raise PaletteError(f"{path}: palette file not found") from None
        except RuntimeError as exc:  # the object store's fsspec backend is missing
            raise PaletteError(f"{path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise PaletteError(f"{path}: not valid JSON ({exc})") from None
        try:
            classes = sorted(spec["classes"], key=lambda c: int(c["index"]))
            indices = [int(c["index"]) for c in classes]
            names = tuple(str(c["name"]) for c in classes)
            colours = np.array([c["rgb"] for c in classes], dtype=np.int64)
            ignore = np.array(spec.get("ignore", []), dtype=np.int64).reshape(-1, 3)
        except (KeyError, TypeError, ValueError) as exc:
            raise PaletteError(f"{path}: expected {{'classes': [{{index, name, rgb}}], 'ignore': [[r,g,b]]}} ({exc!r})") from None
        if indices != list(range(len(indices))):
            raise PaletteError(f"{path}: class indices must be 0..{len(indices) - 1}, got {indices}")
        if colours.shape[1:] != (3,) or (colours < 0).any() or (colours > 255).any() or (ignore < 0).any() or (ignore > 255).any():
            raise PaletteError(f"{path}: every colour must be [r, g, b] with values 0..255")
        codes = _codes(colours.astype(np.uint8))
        if len(set(codes.tolist())) != len(codes) or set(codes.tolist()) & set(_codes(ignore.astype(np.uint8)).tolist()):
            raise PaletteError(f"{path}: a colour is listed twice (classes and ignore colours must be distinct)")
        if not 0 <= ignore_index <= 255 or ignore_index < len(names):
            raise PaletteError(f"{path}: ignore index {ignore_index} collides with a class index or is not uint8")
        return cls(names, colours.astype(np.uint8), ignore.astype(np.uint8), ignore_index)

    def decode(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(3, H, W) uint8 colours -> (labels (H, W) uint8, unknown colour codes, their pixel counts).

        Ignore colours become ``ignore_index``. Colours in neither list also become ``ignore_index``
        here, and are returned so that the caller can refuse the raster with an exact message.
        """
        codes = _codes(np.moveaxis(np.asarray(rgb), 0, -1))
        known = np.concatenate([_codes(self.colours), _codes(self.ignore_colours)])
        values = np.concatenate(
            [np.arange(len(self.colours), dtype=np.uint8), np.full(len(self.ignore_colours), self.ignore_index, np.uint8)]
        )
        order = np.argsort(known)
        known, values = known[order], values[order]
        pos = np.clip(np.searchsorted(known, codes), 0, len(known) - 1)
        matched = known[pos] == codes
        labels = np.where(matched, values[pos], np.uint8(self.ignore_index)).astype(np.uint8)
        unknown_codes, counts = np.unique(codes[~matched], return_counts=True)
        return labels, unknown_codes, counts


def _codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> int32 codes r<<16 | g<<8 | b (one comparable number per colour)."""
    rgb = np.asarray(rgb).astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def code_to_rgb(code: int) -> tuple[int, int, int]:
    return (int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255


def expand_colour_table(indices: np.ndarray, colormap: dict[int, tuple[int, ...]]) -> np.ndarray:
    """A paletted band (H, W) + GDAL colour table -> (3, H, W) uint8 RGB."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for value, rgba in colormap.items():
        if 0 <= value < 256:
            lut[value] = rgba[:3]
    return np.moveaxis(lut[np.asarray(indices, dtype=np.uint8)], -1, 0)
