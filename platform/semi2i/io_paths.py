"""Input paths that may be local files or object-store URLs (s3://, gs://, az://, https://, ...).

Rasters are opened by rasterio, whose GDAL reads such URLs itself (``s3://b/k.tif`` becomes
``/vsis3/b/k.tif``; credentials from the usual environment: AWS_* / an instance or pod role,
GOOGLE_APPLICATION_CREDENTIALS, AZURE_*). What GDAL cannot do is expand a glob over a bucket, check that
an object exists, or read a small side file (palette, class list); that goes through fsspec, which needs
the filesystem's package on the nodes (s3fs, gcsfs, adlfs; https works with aiohttp).

Everything here keeps a URL a ``str``: ``pathlib.Path("s3://b/k")`` silently becomes ``s3:/b/k``.

Outputs (stores, maps, run folders) go through :class:`semi2i.locations.Location`, one small API over a local folder and
an object-store prefix. Object stores have no rename, so a multi-object output (a zarr store, a map
folder) is published *commit object last*: every other object first, then the one whose presence makes
the output exist (a store's root ``zarr.json``, a map folder's ``job.json``); readers and resume checks
look only at that object (:meth:`Location.published`). A single file is one PUT, which is atomic.
Credentials come from the environment or the instance/pod role only; ``AWS_ENDPOINT_URL`` points s3://
at an S3-compatible server (MinIO, Ceph).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path, PurePosixPath
from typing import Iterable
from urllib.parse import urlsplit

from semi2i.config import ConfigError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
GLOB_MAGIC = re.compile(r"[*?\[]")


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (which is a local path)."""
    text = os.fspath(path)
    return bool(_URL.match(text)) and not text.lower().startswith("file://")


def strip_file_scheme(text: str) -> str:
    return text[len("file://"):] if text.lower().startswith("file://") else text


def resolve(path: str | os.PathLike, base: str | os.PathLike) -> str | Path:
    """Config-style resolution: ``$VARS`` and ``~`` expanded; a relative local path is taken from ``base``.

    A URL comes back as a ``str`` (only ``$VARS`` expanded), a local path as an absolute ``Path``.
    """
    text = os.path.expandvars(os.fspath(path))
    if is_url(text):
        return text
    p = Path(strip_file_scheme(text)).expanduser()
    return p if p.is_absolute() else (Path(base) / p).resolve()


def storage_options(url: str) -> dict:
    """fsspec options for ``url``'s scheme: no cached listings on s3 (other processes and nodes write the
    same prefixes; a stale listing would skip or redo work). Endpoint and credentials: botocore reads
    AWS_ENDPOINT_URL, AWS_* and the instance role itself."""
    return {"use_listings_cache": False} if url.split("://", 1)[0].lower() in ("s3", "s3a") else {}


def filesystem(url: str):
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with ray[data]
        raise RuntimeError(f"reading {url} needs fsspec (pip install fsspec)") from exc
    try:
        return fsspec.core.url_to_fs(url, **storage_options(url))
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        hint = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "http": "aiohttp",
                "https": "aiohttp"}.get(scheme, f"the fsspec backend for {scheme}://")
        raise RuntimeError(f"reading {url} needs {hint} installed on every node ({exc})") from None


def exists(path: str | os.PathLike) -> bool:
    """A local file/folder or an object (or object prefix) that exists."""
    text = os.fspath(path)
    if not is_url(text):
        return Path(strip_file_scheme(text)).exists()
    fs, root = filesystem(text)
    return bool(fs.exists(root))


def is_file(path: str | os.PathLike) -> bool:
    text = os.fspath(path)
    if not is_url(text):
        return Path(strip_file_scheme(text)).is_file()
    fs, root = filesystem(text)
    return bool(fs.isfile(root))


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """A small side file (palette.json, classes.json) from disk or object storage."""
    text = os.fspath(path)
    if not is_url(text):
        return Path(strip_file_scheme(text)).read_text(encoding=encoding)
    fs, root = filesystem(text)
    with fs.open(root, "rt", encoding=encoding) as f:
        return f.read()


def expand(specs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Globs and paths (local or URLs, one or many) -> the sorted matches of each, in order, as strings.

    Raises FileNotFoundError naming the first glob that matches nothing or path that does not exist.
    """
    items = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        if is_url(text):
            fs, root = filesystem(text)
            if GLOB_MAGIC.search(root):
                matches = sorted(fs.unstrip_protocol(m) for m in fs.glob(root) if not fs.isdir(m))
                if not matches:
                    raise FileNotFoundError(f"no object matches {text}")
                out.extend(matches)
            elif fs.exists(root):
                out.append(text)
            else:
                raise FileNotFoundError(f"not found: {text}")
        else:
            local = strip_file_scheme(text)
            if glob.has_magic(local):
                matches = sorted(glob.glob(local))
                if not matches:
                    raise FileNotFoundError(f"no file matches {text}")
                out.extend(matches)
            elif Path(local).exists():
                out.append(local)
            else:
                raise FileNotFoundError(f"not found: {text}")
    return out


def gdal_path(path: str | os.PathLike) -> str:
    """What to hand rasterio.open: URLs unchanged (rasterio maps s3/gs/az/http(s) to GDAL's /vsi*), files as str."""
    text = os.fspath(path)
    return text if is_url(text) else strip_file_scheme(text)


class RemotePath:
    """An object-store URL with the small part of :class:`pathlib.Path` that ingest uses (``name``,
    ``stem``, ``parent``, ``resolve()``, ``os.fspath``), so one code path serves files and objects."""

    def __init__(self, url: str):
        self.url = url
        self._path = PurePosixPath(urlsplit(url).path)

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def stem(self) -> str:
        return self._path.stem

    @property
    def parent(self) -> "RemotePath":
        head, _, _ = self.url.rstrip("/").rpartition("/")
        return RemotePath(head if "://" in head and not head.endswith(":/") else self.url)

    def resolve(self) -> "RemotePath":
        return self

    def exists(self) -> bool:
        return exists(self.url)

    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


def refuse_ephemeral(run_dir: str | os.PathLike, *,
                     hint: str = "pass an absolute --run-dir on shared storage or set SEMI2I_RUNS") -> None:
    """Under ``ray job submit --working-dir``, a relative run folder lands in Ray's temporary copy of
    the working dir (``.../runtime_resources/working_dir_files/...``), which is deleted with the job:
    raise :class:`~semi2i.config.ConfigError` instead of losing the results (jobs/adapt.py, jobs/tune.py)."""
    resolved = str(Path(run_dir).resolve())
    if "runtime_resources" in resolved and "working_dir_files" in resolved:
        raise ConfigError(f"{run_dir}: the run folder would be inside Ray's temporary copy of the working dir "
                          f"({resolved}), which is deleted after the job; {hint}")


def as_path(path: str | os.PathLike) -> Path | RemotePath:
    """A local path as :class:`Path`, a URL as :class:`RemotePath` (never a mangled ``Path("s3:/...")``)."""
    text = os.fspath(path)
    return RemotePath(text) if is_url(text) else Path(strip_file_scheme(text))
