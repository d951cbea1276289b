"""Outputs on object storage, against a real S3 API server on 127.0.0.1 (moto): city stores, region maps
and an adapt run folder on ``s3://`` keep the on-disk guarantees (nothing partial under the final name,
re-runs resume, a killed job resumes to the same result)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import REPO
from semi2i import io_paths
from semi2i.data.ingest import IngestError, ingest_city
from semi2i.data.store import CityStore

sys.path.insert(0, str(REPO / "jobs"))


def _city(tmp_path, write, *, bad_label: bool = False):
    rng = np.random.default_rng(0)
    for i in range(2):
        write(tmp_path / "img" / f"r{i}.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
        label = rng.integers(0, 3, (64, 64), dtype=np.uint8)
        if bad_label and i == 1:
            label[0, :5] = 9  # found in the pixel pass, after the first raster was written
        write(tmp_path / "lbl" / f"r{i}.tif", label)
    return dict(images=str(tmp_path / "img" / "*.tif"), labels=str(tmp_path / "lbl" / "*.tif"), classes=["a", "b", "c"],
                min_size=32, chunk_size=32, progress=False)


def test_ingest_to_s3_publishes_whole_refuses_existing_and_leaves_nothing_on_failure(tmp_path, write, bucket, monkeypatch):
    import ingest as ingest_job

    city = _city(tmp_path, write)
    url = f"{bucket}/stores/city.zarr"
    local = ingest_city(city["images"], tmp_path / "local.zarr", **{k: v for k, v in city.items() if k != "images"})
    remote = ingest_city(city["images"], url, **{k: v for k, v in city.items() if k != "images"})
    assert str(remote.path) == url and remote.class_names == ["a", "b", "c"]
    for a, b in zip(local.read_window("r1", 8, 8, 40, 40), CityStore(url).read_window("r1", 8, 8, 40, 40)):
        assert (a == b).all()
    assert CityStore(url).dataset("r0").rio.crs == local.dataset("r0").rio.crs

    # the CLI refuses an existing store (exit 2, one line naming the URL) unless --overwrite
    args = ["--images", city["images"], "--labels", city["labels"], "--out", url, "--min-size", "32", "--chunk-size", "32"]
    assert ingest_job.main(args) == 2
    assert ingest_job.main(args + ["--overwrite"]) == 0

    # a failure in the pixel pass or in the upload leaves nothing under the store's name
    bad = _city(tmp_path / "bad", write, bad_label=True)
    with pytest.raises(IngestError, match="out of range"):
        ingest_city(bad["images"], f"{bucket}/stores/bad.zarr", **{k: v for k, v in bad.items() if k != "images"})
    fs, calls = io_paths._fs(bucket)[0], []  # fsspec hands every caller this one cached instance
    original = fs.put_file

    def flaky_put(lpath, rpath, *a, **k):  # the connection drops during the upload
        calls.append(rpath)
        if len(calls) == 5:
            raise OSError("connection reset")
        return original(lpath, rpath, *a, **k)

    monkeypatch.setattr(fs, "put_file", flaky_put)
    with pytest.raises(IngestError, match="cannot write the store"):
        ingest_city(city["images"], f"{bucket}/stores/cut.zarr", **{k: v for k, v in city.items() if k != "images"})
    monkeypatch.undo()
    assert len(calls) == 5
    for name in ("bad.zarr", "cut.zarr"):
        assert io_paths.location(f"{bucket}/stores/{name}").files() == []
