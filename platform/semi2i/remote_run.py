"""A run folder on object storage (``--run-dir s3://bucket/prefix/run``): the driver works in a local copy
and publishes it to the bucket after every stage.

Why a copy: the stages write through the file system (torch checkpoints, TensorBoard, GeoTIFFs, zarr),
and keeping one code path for them is worth a local disk the size of the run. Ray Train keeps its own
checkpoints on the bucket (``<run>/ray``, :func:`ray_storage`), so a killed training resumes from there.

Publication keeps the on-disk guarantees. A file is one PUT (atomic). A zarr store is published with its
root ``zarr.json`` last and a map folder (``maps/<method>``) with its ``job.json`` last; a changed one
loses its commit object first. :meth:`RemoteRun.pull` fetches only complete outputs, so a run resumed on
any machine skips exactly the stages whose outputs were published, and redoes the rest. Hidden paths
(``.partial`` map work, temporary files) are never published. Deletions are not propagated.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

from semi2i import io_paths, locations

#: In the local copy: the URL it mirrors (read by :func:`ray_storage`) and what was last published.
REMOTE_FILE, STATE_FILE = ".semi2i-remote", ".semi2i-published.json"


def _commit_of(rel: str) -> list[str]:
    """The commit objects ``rel`` depends on, outermost first (empty for a plain file)."""
    parts, commits = PurePosixPath(rel).parts, []
    if len(parts) > 2 and parts[0] == "maps":
        commits.append(f"maps/{parts[1]}/job.json")
    for i, part in enumerate(parts[:-1]):
        if part.endswith(".zarr"):
            commits.append("/".join(parts[: i + 1]) + "/zarr.json")
    return [c for c in commits if c != rel]


def _rank(rel: str) -> int:
    """Upload order: plain objects, then zarr roots, then map folders' job.json (the outermost commit)."""
    parts = PurePosixPath(rel).parts
    if len(parts) == 3 and parts[0] == "maps" and parts[2] == "job.json":
        return 2
    return 1 if len(parts) > 1 and parts[-1] == "zarr.json" and parts[-2].endswith(".zarr") else 0


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") for p in PurePosixPath(rel).parts)


class RemoteRun:
    """The local copy of a run folder on object storage, and its synchronisation with the bucket."""

    def __init__(self, url: str):
        self.url = str(url).rstrip("/")
        self.remote = locations.location(self.url)
        self.local = locations.scratch_dir("runs", hashlib.sha1(self.url.encode()).hexdigest()[:16])
        (self.local / REMOTE_FILE).write_text(self.url)

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> "RemoteRun | None":
        """A :class:`RemoteRun` for a URL, ``None`` for a local folder (used as it is)."""
        return cls(os.fspath(run_dir)) if io_paths.is_url(run_dir) else None

    def _state(self) -> dict:
        try:
            return json.loads((self.local / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict) -> None:
        locations.location(self.local / STATE_FILE).write_text(json.dumps(state))

    @staticmethod
    def _signature(path: Path) -> list[int] | None:
        """Size and modification time; None for a file that is gone."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def pull(self) -> int:
        """Download the complete outputs the bucket holds and this copy lacks; returns the file count."""
        names = self.remote.files()
        present, state, fetched = set(names), self._state(), 0
        fs, key = self.remote._fs
        for rel in names:
            local = self.local / rel
            if _hidden(rel) or rel.startswith("ray/") or local.exists() or not set(_commit_of(rel)) <= present:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.tmp-{os.getpid()}")
            fs.get_file(f"{key}/{rel}", str(tmp))
            os.replace(tmp, local)
            state[rel], fetched = self._signature(local), fetched + 1
        self._save_state(state)
        return fetched

    def publish(self) -> int:
        """Upload what changed in the local copy since the last publication, commit objects last;
        returns the file count."""
        state = self._state()
        # a file gone since the listing (None) was another lane's temporary (semi2i.lanes): nothing to publish
        signatures = {rel: self._signature(self.local / rel) for rel in locations.location(self.local).files()
                      if not _hidden(rel)}
        changed = [rel for rel, signature in signatures.items() if signature is not None and state.get(rel) != signature]
        if not changed:
            return 0
        # a complete output that changes disappears first (its commit object), so no mix is ever visible
        for commit in sorted({c for rel in changed for c in _commit_of(rel)}):
            if commit in state:
                (self.remote / commit).remove(commit=None)
                if commit not in changed:
                    changed.append(commit)
        for rel in sorted(changed, key=lambda r: (_rank(r), r)):
            try:
                (self.remote / rel).upload(self.local / rel)
            except FileNotFoundError:  # gone since the listing (as above): the next publication sees what replaced it
                continue
            state[rel] = signatures.get(rel) or self._signature(self.local / rel)
        self._save_state(state)
        return len(changed)


def ray_storage(run_dir: str | os.PathLike) -> str:
    """Ray Train / Tune ``storage_path`` for a run folder: ``<url>/ray`` on the bucket for the local copy of
    a remote run (any node can resume from it), else ``<run_dir>/ray``."""
    marker = Path(run_dir) / REMOTE_FILE
    if marker.is_file():
        return marker.read_text().strip() + "/ray"
    return str((Path(run_dir) / "ray").resolve())
