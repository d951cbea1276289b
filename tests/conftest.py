"""Shared fixtures: tiny rasters written on the fly, the real data folder, and one Ray per session."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

UTM40 = CRS.from_epsg(32640)


def load_study(name: str):
    """A script of studies/ as a module: the folder is no package, so its scripts are loaded by path."""
    spec = importlib.util.spec_from_file_location(name, REPO / "studies" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Ray Train V2 starts a preemption watcher actor (a process of its own) beside every run's workers, to hear of
#: cloud nodes being reclaimed. The tests' clusters are processes on this one machine, which no cloud reclaims, and
#: on 2 cores the extra start-up costs each run ~2.7 s (a no-op TorchTrainer on a two-node local cluster, Zen 1
#: EPYC: 17.3 -> 14.6 s; Ray 2.60). Set before any Ray starts, so the test clusters and `ray job submit` inherit it.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

#: The loopback S3 API server of the object-storage tests (started on demand by the ``s3`` fixture); its
#: environment also goes to the session Ray's workers, which read and write the bucket themselves.
S3_PORT = _free_port()
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    # GDAL's /vsis3/ (rasterio reading a COG from the bucket)
    "AWS_S3_ENDPOINT": f"127.0.0.1:{S3_PORT}", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
}


def write_raster(path: Path, array: np.ndarray, *, crs=UTM40, transform=None, nodata=None, driver="GTiff", colormap=None) -> Path:
    """Write (bands, H, W) or (H, W) as a raster; the default grid is 0.5 m UTM 40N."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    if transform is None and crs is not None:
        transform = from_origin(326000.0, 2790000.0, 0.5, 0.5)
    profile = dict(driver=driver, height=array.shape[1], width=array.shape[2], count=array.shape[0], dtype=array.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        if colormap is not None:
            dst.write_colormap(1, colormap)
    return path


@pytest.fixture
def write():
    return write_raster


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (it lives beside the repo as ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for the whole test session, shaped like a production cluster: a head node with no CPUs
    (Ray's advice for large clusters: it holds only the drivers, this process), a worker node with 2
    CPUs and one with 1, so every task, actor and Ray Train worker of every Ray test runs on a node other
    than the driver's, and two 1-CPU Ray Train workers still leave a CPU for Ray Data to read their
    patches on. A real multi-node cluster (``ray.cluster_utils.Cluster``), on this one machine."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = None
    if not ray.is_initialized():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 256 * 2**20,
                                                               "include_dashboard": False})
        cluster.add_node(num_cpus=2, object_store_memory=1024 * 2**20)
        cluster.add_node(num_cpus=1, object_store_memory=256 * 2**20)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": S3_ENV})
    yield ray
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


def ran_off_the_driver(places: dict[str, list[dict]]) -> list[str]:
    """The stages of a ``placement`` record (:mod:`semi2i.placement`) that ran any piece in this process
    or on this process's node (the zero-CPU head of ``ray_session``): should be none."""
    import ray

    head = ray.get_runtime_context().get_node_id()
    return sorted(stage for stage, where in places.items()
                  if any(p["pid"] == os.getpid() or p["node"] in (None, head) for p in where))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API server (moto) on 127.0.0.1, with this process's AWS_* environment pointing at it."""
    import logging

    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    yield S3_ENV["AWS_ENDPOINT_URL"]
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    server.stop()


@pytest.fixture
def bucket(s3_server, request):
    """A fresh, empty bucket on the loopback S3 server: its ``s3://`` URL."""
    import re

    import s3fs

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return f"s3://{name}"
