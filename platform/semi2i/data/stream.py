"""Patch streams: window descriptors in, normalised float patches out, with or without Ray.

Rows are :class:`~semi2i.data.patches.Window` descriptors (a few bytes each), so a stream over a whole
region never holds more than the patches in flight; pixels are read from the Zarr stores inside the
tasks. The same :func:`read_patches` serves Ray Data's ``map_batches`` and the plain iterator used by
unit tests and single-process runs, so both yield identical patches.

Outputs: ``image`` float32 (N, bands, size, size), normalised per band with the city's ingest
statistics (``"zscore"`` for segmentation, ``"unit"`` = [-1, 1] for the GANs, or ``"raw"``); ``label``
int64 (N, size, size) with the ignore index on nodata/unlabeled pixels (all ignore for unlabeled
cities); plus the numeric window coordinates ``y``, ``x`` and ``raster_index`` (string columns would
break ``iter_torch_batches``).
"""

from __future__ import annotations

from typing import Iterator, Literal

import numpy as np

from .normalize import BandStats
from .patches import Window, equal_shards, shuffled
from .store import open_store

Normalize = Literal["zscore", "unit", "raw"]


def read_patches(batch: dict[str, np.ndarray], normalize: Normalize = "zscore", stats: dict | None = None) -> dict[str, np.ndarray]:
    """Ray Data batch (columns store, raster, y, x, size) -> numeric patch tensors.

    ``stats`` (``BandStats.to_attrs()``) overrides each city's own statistics, e.g. to normalise a new
    city with the statistics a model was trained with.
    """
    override = BandStats.from_attrs(stats) if stats is not None else None
    if normalize not in ("zscore", "unit", "raw"):
        raise ValueError(f"normalize must be 'zscore', 'unit' or 'raw', got {normalize!r}")
    n = len(batch["y"])
    stores = {str(p): open_store(str(p)) for p in dict.fromkeys(batch["store"])}  # one open (stat) per store
    for path, store in stores.items():  # the batch's cold chunks in one request per store, not one per chunk
        store.prefetch((str(r), int(y), int(x), int(size), int(size))
                       for s, r, y, x, size in zip(batch["store"], batch["raster"], batch["y"], batch["x"], batch["size"]) if str(s) == path)
    images, labels, raster_index = None, None, np.empty(n, dtype=np.int64)
    for i, (store_path, raster, y, x, size) in enumerate(zip(batch["store"], batch["raster"], batch["y"], batch["x"], batch["size"])):
        store = stores[str(store_path)]
        image, label = store.read_window(str(raster), int(y), int(x), int(size), int(size))
        if images is None:  # one output array per batch, filled in place
            images = np.empty((n, *image.shape), dtype=np.float32)
            labels = np.empty((n, *image.shape[1:]), dtype=np.int64)
        valid = store.valid_mask(image)
        all_valid = bool(valid.all())
        band_stats = override or store.band_stats
        if normalize == "zscore":
            band_stats.zscore(image, out=images[i])
        elif normalize == "unit":
            band_stats.to_unit_range(image, out=images[i])
        else:
            images[i] = image
        if label is None:
            labels[i] = store.ignore_index
        else:
            labels[i] = label
        if not all_valid:
            images[i][:, ~valid] = 0.0  # nodata pixels carry no signal (their labels are ignore)
            labels[i][~valid] = store.ignore_index
        raster_index[i] = _raster_index(store, str(raster))
    return {
        "image": images,
        "label": labels,
        "y": np.asarray(batch["y"], dtype=np.int64),
        "x": np.asarray(batch["x"], dtype=np.int64),
        "raster_index": raster_index,
    }


def _raster_index(store, raster: str) -> int:
    index = store.__dict__.get("_raster_index")
    if index is None:
        index = store.__dict__["_raster_index"] = {r.id: k for k, r in enumerate(store.rasters)}
    return index[raster]


def window_columns(windows: list[Window]) -> dict[str, np.ndarray]:
    """Windows as the columnar batch :func:`read_patches` takes (what Ray Data hands to map_batches)."""
    return {
        "store": np.array([w.store for w in windows], dtype=object),
        "raster": np.array([w.raster for w in windows], dtype=object),
        "y": np.array([w.y for w in windows], dtype=np.int64),
        "x": np.array([w.x for w in windows], dtype=np.int64),
        "size": np.array([w.size for w in windows], dtype=np.int64),
    }


def iter_patches(
    windows: list[Window],
    *,
    batch_size: int = 1,
    normalize: Normalize = "zscore",
    stats: BandStats | None = None,
    seed: int | None = None,
    epoch: int = 0,
    shard: int = 0,
    num_shards: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The plain (Ray-free) stream: optional seeded shuffle, equal sharding, batches of patches."""
    if seed is not None:
        windows = shuffled(windows, seed, epoch)
    windows = equal_shards(windows, num_shards)[shard::num_shards]
    stats_attrs = stats.to_attrs() if stats is not None else None
    for start in range(0, len(windows), batch_size):
        yield read_patches(window_columns(windows[start : start + batch_size]), normalize, stats_attrs)


def patch_dataset(
    windows: list[Window],
    *,
    normalize: Normalize = "zscore",
    stats: BandStats | None = None,
    seed: int | None = None,
    epoch: int = 0,
    num_shards: int = 1,
    read_batch_size: int = 16,
    preserve_order: bool = True,
):
    """A Ray Data stream of patches.

    The window list is shuffled here (seeded, so every run and every plain iterator agrees) and cut
    to a multiple of ``num_shards``; split it with ``streaming_split(num_shards, equal=True)`` or give
    it to a ``TorchTrainer``, whose ``get_dataset_shard`` does that split.
    """
    import ray

    if seed is not None:
        windows = shuffled(windows, seed, epoch)
    windows = equal_shards(windows, num_shards)
    num_blocks = max(1, min(len(windows) // max(read_batch_size, 1), 200))
    ds = ray.data.from_items([w.to_row() for w in windows], override_num_blocks=num_blocks)
    ds = ds.map_batches(
        read_patches,
        fn_kwargs={"normalize": normalize, "stats": stats.to_attrs() if stats is not None else None},
        batch_size=read_batch_size,
        batch_format="numpy",
    )
    ds.context.execution_options.preserve_order = preserve_order
    return ds
