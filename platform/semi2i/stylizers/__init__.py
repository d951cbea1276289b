"""Stylizers: one interface for "source imagery in the target's style", SemI2I and the baselines.

``load_stylizer(name, ...)`` builds any of them by name so the pipeline can loop over methods. The
multi-city stylizer (:class:`MultiCityStylizer`) is built per (source, target) city pair from one loaded
checkpoint instead (see :mod:`semi2i.stylizers.multicity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from semi2i.data.normalize import BandStats
from semi2i.stylizers.base import Stylizer
from semi2i.stylizers.colormapgan import ColorMapGANStylizer
from semi2i.stylizers.cyclegan import CycleGANStylizer
from semi2i.stylizers.grayworld import GrayWorldStylizer
from semi2i.stylizers.histogram import HistogramMatchingStylizer
from semi2i.stylizers.identity import IdentityStylizer
from semi2i.stylizers.multicity import MultiCityStylizer
from semi2i.stylizers.semi2i import SemI2IStylizer


def _identity(source_stats: BandStats, target_stats: BandStats | None, **_: Any) -> Stylizer:
    return IdentityStylizer(source_stats.num_bands)


def _histogram(source_stats: BandStats, target_stats: BandStats | None, **_: Any) -> Stylizer:
    return HistogramMatchingStylizer(source_stats, _need(target_stats, "histogram_matching"))


def _gray_world(source_stats: BandStats, target_stats: BandStats | None, **_: Any) -> Stylizer:
    return GrayWorldStylizer(source_stats, _need(target_stats, "gray_world"))


def _semi2i(
    source_stats: BandStats, target_stats: BandStats | None, *, checkpoint: str | Path | None = None, **kwargs: Any
) -> Stylizer:
    if checkpoint is None:
        raise ValueError("the semi2i stylizer needs checkpoint=<path of a SemI2I training checkpoint>")
    return SemI2IStylizer.from_checkpoint(checkpoint, source_stats, _need(target_stats, "semi2i"), **kwargs)


def _colormapgan(
    source_stats: BandStats, target_stats: BandStats | None, *, checkpoint: str | Path | None = None, **kwargs: Any
) -> Stylizer:
    if checkpoint is None:
        raise ValueError("the colormapgan stylizer needs checkpoint=<path of a ColorMapGAN training checkpoint>")
    return ColorMapGANStylizer.from_checkpoint(checkpoint, source_stats, _need(target_stats, "colormapgan"), **kwargs)


def _cyclegan(
    source_stats: BandStats, target_stats: BandStats | None, *, checkpoint: str | Path | None = None, **kwargs: Any
) -> Stylizer:
    if checkpoint is None:
        raise ValueError("the cyclegan stylizer needs checkpoint=<path of a CycleGAN training checkpoint>")
    return CycleGANStylizer.from_checkpoint(checkpoint, source_stats, _need(target_stats, "cyclegan"), **kwargs)


#: name → factory(source_stats, target_stats, **options)
STYLIZERS: dict[str, Callable[..., Stylizer]] = {
    "identity": _identity,
    "histogram_matching": _histogram,
    "gray_world": _gray_world,
    "colormapgan": _colormapgan,
    "cyclegan": _cyclegan,
    "semi2i": _semi2i,
}
#: the stylizers trained on the two cities, built from a training checkpoint (``checkpoint=...``)
CHECKPOINT_STYLIZERS = ("colormapgan", "cyclegan", "semi2i")


def load_stylizer(
    name: str, *, source_stats: BandStats, target_stats: BandStats | None = None, **options: Any
) -> Stylizer:
    """Build a registered stylizer. ``options`` go to the factory: the trained ones (semi2i, cyclegan:
    ``checkpoint``, ``source``, ``tile_size``, ``overlap``, ``batch_tiles``, ``device``; colormapgan:
    ``checkpoint``, ``overlap`` (unused, pointwise), ``device``); the others take none."""
    try:
        factory = STYLIZERS[name]
    except KeyError:
        raise ValueError(f"unknown stylizer {name!r}; available: {', '.join(STYLIZERS)}") from None
    if name not in CHECKPOINT_STYLIZERS and options:
        raise ValueError(f"stylizer {name!r} takes no options, got {sorted(options)}")
    return factory(source_stats, target_stats, **options)


def _need(target_stats: BandStats | None, name: str) -> BandStats:
    if target_stats is None:
        raise ValueError(f"the {name} stylizer needs the target's band stats (target_stats=...)")
    return target_stats


__all__ = [
    "CHECKPOINT_STYLIZERS",
    "STYLIZERS",
    "ColorMapGANStylizer",
    "CycleGANStylizer",
    "GrayWorldStylizer",
    "HistogramMatchingStylizer",
    "IdentityStylizer",
    "MultiCityStylizer",
    "SemI2IStylizer",
    "Stylizer",
    "load_stylizer",
]
