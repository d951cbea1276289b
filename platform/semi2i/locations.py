"""Output places, a local path or an object-store URL, behind one small API (:class:`Location`).

Object stores have no rename, so a multi-object output (a zarr store, a map folder) is published *commit
object last*: every other object first, then the one whose presence makes the output exist (a store's root
``zarr.json``, a map folder's ``job.json``); readers and resume checks look only at that object
(:meth:`Location.published`). A single file is one PUT, which is atomic. Locally, outputs are written under a
temporary name and renamed into place. Credentials come from the environment or the instance/pod role only;
``AWS_ENDPOINT_URL`` points s3:// at an S3-compatible server (MinIO, Ceph). Inputs: :mod:`semi2i.io_paths`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from semi2i.io_paths import filesystem, is_url, storage_options, strip_file_scheme


def scratch_dir(*parts: str) -> Path:
    """Local working space for outputs bound for object storage (a store before it is published, a COG
    before its upload): ``$SEMI2I_SCRATCH``, else the system's temporary folder."""
    root = Path(os.environ.get("SEMI2I_SCRATCH") or Path(tempfile.gettempdir()) / "semi2i-scratch")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Location:
    """An output place, a local path or an object-store URL, behind the few operations outputs need.

    Local locations behave exactly as the code did with :mod:`pathlib` and ``os.replace``; remote ones
    go through fsspec (s3fs for s3://). ``str()`` / ``os.fspath()`` give the path or the URL, which
    rasterio, zarr and xarray accept as they are.
    """

    def __init__(self, path: "str | os.PathLike | Location"):
        text = path.text if isinstance(path, Location) else os.fspath(path)
        self.remote = is_url(text)
        self.text = text.rstrip("/") if self.remote else strip_file_scheme(text)
        self.path = None if self.remote else Path(self.text)
        self._fs_key = None

    # -- names ---------------------------------------------------------------------------------
    def __truediv__(self, part: str) -> "Location":
        return self.joinpath(part)

    def joinpath(self, *parts: str) -> "Location":
        if not self.remote:
            return Location(self.path.joinpath(*parts))
        return Location("/".join([self.text, *(str(p).strip("/") for p in parts)]))

    @property
    def name(self) -> str:
        return PurePosixPath(urlsplit(self.text).path).name if self.remote else self.path.name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> "Location":
        return Location(self.text.rpartition("/")[0]) if self.remote else Location(self.path.parent)

    def resolve(self) -> "Location":
        return self if self.remote else Location(self.path.resolve())

    def __fspath__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Location({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    # -- queries -------------------------------------------------------------------------------
    @property
    def _fs(self):
        if self._fs_key is None:
            self._fs_key = filesystem(self.text)
        return self._fs_key

    def exists(self) -> bool:
        if not self.remote:
            return self.path.exists()
        fs, key = self._fs
        return bool(fs.exists(key))

    def is_file(self) -> bool:
        if not self.remote:
            return self.path.is_file()
        fs, key = self._fs
        return bool(fs.isfile(key))

    def published(self, commit: str = "zarr.json") -> bool:
        """Whether a multi-object output is complete here: locally it was renamed into place, so it
        exists; on object storage its commit object was uploaded last, so that object decides."""
        return self.exists() if not self.remote else (self / commit).is_file()

    def files(self) -> list[str]:
        """The relative POSIX paths of every file under this location, sorted ([] when there is none)."""
        if not self.remote:
            return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()) \
                if self.path.is_dir() else []
        fs, key = self._fs
        return sorted(k[len(key) + 1:] for k in fs.find(key) if k.startswith(key + "/"))

    def fingerprint(self) -> dict:
        """What identifies this file's content: path, size and mtime (local) or ETag (object)."""
        if not self.remote:
            st = self.path.stat()
            return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        fs, key = self._fs
        info = fs.info(key)
        return {"path": self.text, "size": info.get("size"),
                "etag": str(info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or "")}

    # -- reading -------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        if not self.remote:
            return self.path.read_bytes()
        fs, key = self._fs
        return fs.cat_file(key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    # -- writing (each whole or not at all) ---------------------------------------------------
    def mkdir(self) -> None:
        """A local folder (and its parents); object stores need no folders."""
        if not self.remote:
            self.path.mkdir(parents=True, exist_ok=True)

    def write_bytes(self, data: bytes) -> None:
        """Atomically: a temporary file renamed into place, or one PUT."""
        if self.remote:
            fs, key = self._fs
            fs.pipe_file(key, data)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def upload(self, local_file: str | os.PathLike) -> None:
        """A finished local file to this location, whole (a copy renamed into place, or one upload:
        a multipart upload too becomes visible only when complete)."""
        if self.remote:
            fs, key = self._fs
            fs.put_file(os.fspath(local_file), key)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        shutil.copyfile(local_file, tmp)
        os.replace(tmp, self.path)

    def remove(self, commit: str | None = "zarr.json") -> None:
        """Delete this file or tree if present; on object storage the commit object goes first, so a
        half-deleted output never looks complete."""
        if not self.remote:
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink(missing_ok=True)
            return
        fs, key = self._fs
        if commit and (self / commit).is_file():
            fs.rm_file(f"{key}/{commit}")
        rest = fs.find(key)
        if rest:
            fs.rm(rest)

    def publish_tree(self, local_dir: str | os.PathLike, commit: str = "zarr.json") -> None:
        """A finished local folder becomes this output: a rename, or an upload with ``commit`` last.
        A previous output here is removed first (on object storage nothing is visible in between)."""
        local_dir = Path(local_dir)
        if not self.remote:
            if self.path.exists():
                shutil.rmtree(self.path)
            os.replace(local_dir, self.path)
            return
        self.remove(commit)
        fs, key = self._fs
        names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
        try:
            for rel in sorted(names, key=lambda n: n == commit):
                fs.put_file(str(local_dir / rel), f"{key}/{rel}")
        except BaseException:
            self.remove(commit)
            raise

    def move_tree(self, dst: "Location", commit: str = "zarr.json") -> None:
        """Move this tree to ``dst`` (same kind of place): a rename, or copies with ``commit`` last and
        then the source's deletion, commit first (a kill in between leaves a complete copy to resume)."""
        if not self.remote:
            if dst.path.exists():
                shutil.rmtree(dst.path)
            os.replace(self.path, dst.path)
            return
        fs, key = self._fs
        _, dst_key = dst._fs
        dst.remove(commit)
        for rel in sorted(self.files(), key=lambda n: n == commit):
            fs.copy(f"{key}/{rel}", f"{dst_key}/{rel}")
        self.remove(commit)

    @contextlib.contextmanager
    def writing(self):
        """A local file path to write this output to: the path itself, or a scratch file that is
        uploaded whole (one PUT) when the block ends without an error."""
        if not self.remote:
            yield self.path
            return
        tmp = scratch_dir("upload") / f"{uuid.uuid4().hex[:12]}-{self.name}"
        try:
            yield tmp
            self.upload(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def staging(self) -> Path:
        """A local folder for the intermediate files of this output (warped VRTs, ...): the folder
        itself, or a scratch folder of this URL."""
        if not self.remote:
            return self.path
        return scratch_dir("staging", hashlib.sha1(self.text.encode()).hexdigest()[:16])

    # -- zarr ----------------------------------------------------------------------------------
    def zarr_store(self, read_only: bool = False):
        """What ``zarr.open_group(store=...)`` / ``xarray.open_zarr`` take: the path, or an fsspec store."""
        if not self.remote:
            return str(self.path)
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.text, storage_options=storage_options(self.text), read_only=read_only)


def location(path: "str | os.PathLike | Location") -> Location:
    """The :class:`Location` of a path or URL (``file://`` is local)."""
    return path if isinstance(path, Location) else Location(path)


def write_text(path: "str | os.PathLike | Location", text: str) -> None:
    """Write a small text output atomically (a temporary name renamed into place, or one object PUT)."""
    location(path).write_text(text)
