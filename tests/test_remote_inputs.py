"""Object-store style inputs: a city ingested from http:// URLs (globs listed by fsspec, rasters read
by GDAL's /vsicurl with range requests) equals the same city ingested from local files. A loopback
HTTP server with Range support stands in for S3/GCS, whose code path differs only in the scheme."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading

import numpy as np
import pytest

from semi2i import io_paths
from semi2i.data.ingest import IngestError, ingest_city


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single-range ``Range: bytes=a-b`` requests (what GDAL sends)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or os.path.isdir(path):
            return super().send_head()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(remaining))
        self._remaining = None


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "bucket"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_city_from_urls_equals_city_from_files(served, tmp_path, write):
    root, url = served
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write(root / "images" / f"{name}.tif", rng.integers(0, 255, (3, 40, 56), dtype=np.uint8))
        write(root / "labels" / f"{name}.tif", rng.integers(0, 3, (40, 56), dtype=np.uint8))
    (root / "classes.json").write_text(json.dumps({"classes": [{"index": i, "name": n} for i, n in enumerate("xyz")]}))

    remote = ingest_city(f"{url}/images/*.tif", tmp_path / "remote.zarr", labels=f"{url}/labels/*.tif",
                         classes=f"{url}/classes.json", min_size=32, progress=False)
    local = ingest_city(str(root / "images" / "*.tif"), tmp_path / "local.zarr", labels=str(root / "labels" / "*.tif"),
                        classes=str(root / "classes.json"), min_size=32, progress=False)
    assert [r.id for r in remote.rasters] == [r.id for r in local.rasters] == ["a", "b"]
    assert remote.class_names == ["x", "y", "z"]
    for r in local.rasters:
        a, b = remote.dataset(r.id), local.dataset(r.id)
        np.testing.assert_array_equal(a.image.values, b.image.values)
        np.testing.assert_array_equal(a.label.values, b.label.values)
        assert remote.rasters[[x.id for x in remote.rasters].index(r.id)].transform == r.transform
    assert (remote.rasters[0].source_image, remote.rasters[0].source_label) == (f"{url}/images/a.tif", f"{url}/labels/a.tif")


def test_missing_remote_inputs_are_one_line_errors(served, tmp_path):
    _, url = served
    with pytest.raises(IngestError, match=r"nothing/\*\.tif: no image objects match"):
        ingest_city(f"{url}/nothing/*.tif", tmp_path / "x.zarr", progress=False)
    with pytest.raises(IngestError, match=r"gone\.tif: image object not found"):
        ingest_city(f"{url}/gone.tif", tmp_path / "x.zarr", progress=False)
    assert not (tmp_path / "x.zarr").exists()


def test_url_helpers_keep_urls_intact(tmp_path):
    assert io_paths.resolve("s3://bucket/city/*.tif", tmp_path) == "s3://bucket/city/*.tif"
    assert io_paths.resolve("data/x.tif", tmp_path) == tmp_path / "data" / "x.tif"
    p = io_paths.as_path("s3://bucket/city/tile_1/img.tif")
    assert (p.name, p.stem, p.parent.name, str(p), os.fspath(p)) == (
        "img.tif", "img", "tile_1", "s3://bucket/city/tile_1/img.tif", "s3://bucket/city/tile_1/img.tif")
    assert io_paths.as_path("file:///tmp/x.tif") == io_paths.Path("/tmp/x.tif")
