"""Region-wide mapping: chunked, seamless, resumable segmentation (and stylizing) of rasters of any size.

:func:`map_region` is the one mapping code path (``jobs/map_region.py`` and callers); the chunk
geometry lives in :mod:`.windows`, the per-chunk work in :mod:`.worker`, the outputs in :mod:`.output`.
"""

from .job import MappingError, default_device, map_region, read_classes
from .output import write_cog, write_quicklook
from .windows import Chunk, WindowGrid, blend_box, plan_chunks
from .worker import NODATA_CLASS, ChunkMapper

__all__ = [
    "NODATA_CLASS",
    "Chunk",
    "ChunkMapper",
    "MappingError",
    "WindowGrid",
    "blend_box",
    "default_device",
    "map_region",
    "plan_chunks",
    "read_classes",
    "write_cog",
    "write_quicklook",
]
