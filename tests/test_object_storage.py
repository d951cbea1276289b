"""Outputs on object storage, against a real S3 API server on 127.0.0.1 (moto): city stores, region maps
and an adapt run folder on ``s3://`` keep the on-disk guarantees (nothing partial under the final name,
re-runs resume, a killed job resumes to the same result)."""

from __future__ import annotations

import numpy as np
import pytest

from semi2i import io_paths, locations
from semi2i.data.ingest import IngestError, ingest_city
from semi2i.data.store import CityStore



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
    from semi2i.cli import ingest as ingest_job

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
    fs, calls = io_paths.filesystem(bucket)[0], []  # fsspec hands every caller this one cached instance
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
        assert locations.location(f"{bucket}/stores/{name}").files() == []


def test_map_region_to_s3_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, write, bucket):
    import rasterio
    import torch
    import zarr

    from semi2i.data.normalize import BandStats
    from semi2i.mapping import map_region
    from semi2i.models.unet import UNet

    torch.manual_seed(0)
    stats = BandStats.from_pixels(np.random.default_rng(0).uniform(0, 255, (3, 1000)))
    ckpt = f"{bucket}/run/unet_semi2i.pt"  # the checkpoint is read from the bucket too
    locations.location(ckpt).write_bytes(_torch_bytes({
        "model": UNet(3, 3, base_width=4, depth=2).eval().state_dict(), "in_bands": 3, "num_classes": 3,
        "class_names": ["a", "b", "c"], "ignore_index": 255, "unet": {"base_width": 4, "depth": 2, "patch_size": 32},
        "stats": stats.to_attrs()}))
    rng = np.random.default_rng(1)
    image = np.repeat(np.repeat(rng.uniform(0, 255, (3, 16, 13)), 4, axis=1), 4, axis=2)[:, :56, :44].astype(np.uint8)
    src = str(write(tmp_path / "in" / "a.tif", image))
    options = dict(chunk_size=16, overlap=8, probabilities=True)
    reference = map_region(src, ckpt, tmp_path / "ref", **options)

    out, seen = f"{bucket}/maps/region", []

    def die_after_4(chunk):
        seen.append(chunk)
        if len(seen) == 4:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        map_region(src, ckpt, out, on_chunk=die_after_4, **options)
    names = locations.location(out).files()
    assert names and all(n.startswith(".partial/") for n in names)  # nothing published under the final names
    summary = map_region(src, ckpt, out, **options)
    assert summary["computed_chunks"] == summary["chunks"] - 4 == reference["chunks"] - 4
    assert not any(n.startswith(".partial/") for n in locations.location(out).files())
    a = zarr.open_group(str(tmp_path / "ref" / "maps.zarr"), mode="r")["a"]
    b = zarr.open_group(locations.location(f"{out}/maps.zarr").zarr_store(read_only=True), mode="r")["a"]
    assert (a["classes"][:] == b["classes"][:]).all() and (a["probabilities"][:] == b["probabilities"][:]).all()
    with rasterio.open(tmp_path / "ref" / "cog" / "a.tif") as x, rasterio.open(f"{out}/cog/a.tif") as y:  # /vsis3/
        assert (x.read() == y.read()).all() and x.crs == y.crs and x.transform == y.transform
    with pytest.raises(Exception, match="already mapped"):
        map_region(src, ckpt, out, **options)


def test_publishing_skips_a_file_gone_since_the_listing_and_never_uploads_hidden_ones(tmp_path, bucket, monkeypatch):
    """Two lanes write one local copy while each publishes it after its stages: a file another lane renames away
    between the listing and the upload is skipped (the next publication has what replaced it), not an error."""
    from semi2i.checkpoints import save_checkpoint
    from semi2i.remote_run import RemoteRun

    monkeypatch.setenv("SEMI2I_SCRATCH", str(tmp_path / "scratch"))
    run = RemoteRun(f"{bucket}/runs/r")
    (run.local / "scores").mkdir()
    (run.local / "scores" / "a.json").write_text("{}")
    save_checkpoint(run.local / "unet_a.pt", {"w": 1})  # its temporary name is hidden: never listed
    files = locations.Location.files  # the local copy's listing names a file that is gone when it is read
    monkeypatch.setattr(locations.Location, "files", lambda self: files(self) + ([] if self.remote else ["unet_b.pt.tmp"]))
    assert run.publish() == 2
    assert sorted(locations.location(run.url).files()) == ["scores/a.json", "unet_a.pt"]
    assert run.publish() == 0  # nothing changed since: the vanished file left no trace in the state either


def _torch_bytes(state: dict) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.ray
def test_tiny_adapt_demo_with_run_dir_on_s3_and_a_rerun_elsewhere_trains_nothing(tmp_path, bucket, ray_session, monkeypatch):
    import json

    import rasterio
    import yaml

    from semi2i.cli import adapt
    from test_adapt import TINY

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "methods": ["source_only", "gray_world", "semi2i"]}))
    run = f"{bucket}/runs/tiny"
    monkeypatch.setenv("SEMI2I_SCRATCH", str(tmp_path / "scratch-a"))  # this machine's local disk
    assert adapt.main(["--config", str(config), "--run-dir", run]) == 0
    bucket_files = locations.location(run).files()
    report = json.loads(locations.location(f"{run}/report.json").read_text())
    assert list(report["methods"]) == ["source_only", "gray_world", "semi2i"]
    assert {"report.md", "previews/adaptation.png", "semi2i.pt", "unet_semi2i.pt", "stores/target.zarr/zarr.json",
            "maps/semi2i/job.json"} <= set(bucket_files)
    assert not any(n.startswith(".") or "/.partial/" in n for n in bucket_files)
    assert any(n.startswith("ray/") for n in bucket_files)  # Ray Train's own storage is the bucket
    target_id = CityStore(f"{run}/stores/target.zarr").rasters[0].id
    with rasterio.open(f"/vsis3/{run.removeprefix('s3://')}/maps/semi2i/cog/{target_id}.tif") as f:
        assert f.crs is not None and f.nodata == 255 and f.read(1).shape == (96, 96)

    # the same command on another machine (an empty local disk) resumes from the bucket: nothing is trained
    fs, key = io_paths.filesystem(run)
    etags = {n: fs.info(f"{key}/{n}")["ETag"] for n in bucket_files if n.endswith(".pt")}
    monkeypatch.setenv("SEMI2I_SCRATCH", str(tmp_path / "scratch-b"))
    assert adapt.main(["--config", str(config), "--run-dir", run]) == 0
    assert {n: fs.info(f"{key}/{n}")["ETag"] for n in etags} == etags
    assert json.loads(locations.location(f"{run}/report.json").read_text()) == report
    assert set(locations.location(run).files()) == set(bucket_files)  # no new Ray Train run, no new TensorBoard log
