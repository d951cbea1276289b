"""Ingest's guards that are not about one raster's header: option values, leftovers of killed runs,
and turning a failed pixel read or write into one line that names the file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

log = logging.getLogger(__name__)

#: a temporary store not touched for this long, whose writer cannot be checked, is a leftover
_STALE_AFTER_S = 3600
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?:(?P<host>[A-Za-z0-9_.-]+?)-(?P<pid>\d+)-)?[0-9a-f]{8}$")


def check_options(*, chunk_size: int, ignore_index: int, min_size: int, palette: object, classes: object,
                  compressor: str, compressors: dict, fail: type[Exception]) -> None:
    """Option values that would otherwise fail deep inside the pixel pass (ZeroDivisionError,
    OverflowError) or silently mean something else."""
    if palette is not None and classes is not None:
        raise fail("give either --palette (colour masks) or --classes (class-index labels), not both")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise fail(f"--chunk-size must be a positive number of pixels, got {chunk_size}")
    if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise fail(f"--ignore-index must be in 0..255 (labels are stored as uint8), got {ignore_index}")
    if not isinstance(min_size, int) or min_size < 1:
        raise fail(f"--min-size must be >= 1, got {min_size}")
    if compressor not in compressors:
        raise fail(f"--compressor must be one of {', '.join(compressors)}, got {compressor!r}")


def tmp_store_name(out: Path) -> Path:
    """Where ``out`` is written before it is renamed into place; names this host and process, so a later
    run can tell a leftover of a killed ingest from a store another process is still writing."""
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    return out.with_name(f".{out.name}.tmp-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(out: Path) -> list[Path]:
    """Remove ``.<out name>.tmp-*`` stores left by killed ingests (kill -9, power loss): those of this
    host whose process is gone, and any other not touched for an hour. Returns what was removed."""
    removed = []
    parent = out.parent
    if not parent.is_dir():
        return removed
    here = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    for p in parent.iterdir():
        m = _TMP_RE.match(p.name)
        if not m or m.group("name") != out.name:
            continue
        if m.group("pid") and m.group("host") == here:
            stale = not _alive(int(m.group("pid")))
        else:
            try:
                stale = time.time() - p.stat().st_mtime > _STALE_AFTER_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed %s, left behind by an interrupted ingest", p)
            removed.append(p)
    return removed


def unreadable(paths: list[tuple[Path, str]], exc: Exception, fail: type[Exception]) -> Exception:
    """A pixel read failed in the streaming pass (truncated or corrupt file): find which of ``paths``
    ((path, role) pairs) fails to read and return a one-line error naming it."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for path, role in paths:
        problem = _first_read_error(path)
        if problem:
            return fail(f"{path}: cannot read the {role} raster's pixels ({problem}); the file may be truncated or corrupt")
    names = " or ".join(str(p) for p, _ in paths)
    return fail(f"{names}: cannot read pixels ({detail}); a file may be truncated or corrupt")


def _first_read_error(path: Path) -> str | None:
    from semi2i import io_paths

    try:
        with rasterio.open(io_paths.gdal_path(path)) as ds:
            for _, window in ds.block_windows(1):
                ds.read(window=window)
    except (RasterioError, OSError) as exc:
        return str(exc).splitlines()[0] or type(exc).__name__
    return None


def write_failure(out: Path, exc: OSError, fail: type[Exception]) -> Exception:
    """An OSError while writing the store (disk full, quota, permissions, read-only file system)."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EACCES: "permission denied", errno.EROFS: "read-only file system"}.get(exc.errno, exc.strerror or str(exc))
    return fail(f"{out}: cannot write the store ({reason}); nothing was kept")
