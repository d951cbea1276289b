"""The bad-input battery of issue 20: what a new user does wrong with jobs/ingest.py, jobs/adapt.py and
jobs/map_region.py, and what each must answer: exit 2, ONE line naming the user's file (or option) and
the problem, and nothing partial left behind. Cases that always worked are kept so they stay working.

The jobs run in process (``main(argv)``; no interpreter start per case) and no case starts Ray: every
check here must happen before Ray starts. Stateful cases (resumes, interruptions) and the few that
must succeed (warnings, --resample, the 3 -> 1 band adaptation) follow the table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.crs import CRS
from rasterio.transform import from_origin

from conftest import REPO, UTM40, write_raster
from semi2i.data.normalize import BandStats
from semi2i.data.store import CityStore
from semi2i.models.unet import UNet

CLASSES5 = ["building", "road", "vegetation", "water", "land"]
PALETTE = {"classes": [{"index": i, "name": n, "rgb": [40 * i + 10, 20, 200 - 30 * i]} for i, n in enumerate(CLASSES5)],
           "ignore": [[0, 0, 0]]}
SMALL = {"patch_size": 32, "overlap": 8, "unet": {"patch_size": 32}, "semi2i": {"patch_size": 32},
         "colormapgan": {"patch_size": 32}, "cyclegan": {"patch_size": 32}}


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOBS = {name: _job(name) for name in ("ingest", "adapt", "map_region")}


def _img(h=64, w=64, bands=3, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    base = rng.uniform(1, 250, (bands, h // 8 + 1, w // 8 + 1))
    return np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)[:, :h, :w].astype(dtype)


def _unet(path: Path, bands: int = 3, grid: bool = True) -> Path:
    """A tiny U-net checkpoint (fit_unet's format), trained on EPSG:32640 at 0.5 m when ``grid``."""
    torch.manual_seed(0)
    model = UNet(bands, 3, base_width=4, depth=2).eval()
    stats = BandStats.from_pixels(np.random.default_rng(0).uniform(0, 255, (bands, 500)))
    state = {"model": model.state_dict(), "in_bands": bands, "num_classes": 3, "class_names": ["a", "b", "c"],
             "ignore_index": 255, "unet": {"base_width": 4, "depth": 2, "patch_size": 32}, "stats": stats.to_attrs()}
    if grid:
        state["grid"] = {"crs_wkt": UTM40.to_wkt(), "resolution": [0.5, 0.5]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


class World:
    """One tmp folder with the files the cases need, built lazily."""

    def __init__(self, root: Path):
        self.root = root

    def p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def city(self, name="city", n=2, bands=3, labels="index", size=64) -> tuple[str, str | None]:
        """``n`` rasters (and labels) under ``name/``; written once (a case may have replaced one on purpose)."""
        for i in range(n if not self.p(name, "img").exists() else 0):
            write_raster(self.p(name, "img", f"r{i}.tif"), _img(size, size, bands, seed=i))
            if labels == "index":
                write_raster(self.p(name, "lbl", f"r{i}.tif"), (np.arange(size * size).reshape(size, size) % 5).astype(np.uint8))
            elif labels == "rgb":
                rgb = np.array(PALETTE["classes"][i % 5]["rgb"], np.uint8)[:, None, None] * np.ones((1, size, size), np.uint8)
                write_raster(self.p(name, "lbl", f"r{i}.tif"), rgb)
        return str(self.p(name, "img", "*.tif")), (str(self.p(name, "lbl", "*.tif")) if labels else None)

    def palette(self, classes=CLASSES5) -> str:
        doc = {"classes": [c for c in PALETTE["classes"] if c["name"] in classes], "ignore": PALETTE["ignore"]}
        doc["classes"] = [{**c, "index": i} for i, c in enumerate(sorted(doc["classes"], key=lambda c: classes.index(c["name"])))]
        self.p("palette.json").write_text(json.dumps(doc))
        return str(self.p("palette.json"))

    def classes(self, names=CLASSES5) -> str:
        self.p("classes.json").write_text(json.dumps({"classes": [{"index": i, "name": n} for i, n in enumerate(names)]}))
        return str(self.p("classes.json"))

    def truncated(self, name="trunc.tif", size=256, bands=3) -> str:
        full = write_raster(self.p("full", name), np.random.default_rng(3).integers(0, 5, (bands, size, size), dtype=np.uint8))
        data = full.read_bytes()
        self.p("bad").mkdir(exist_ok=True)
        self.p("bad", name).write_bytes(data[: int(len(data) * 0.4)])
        return str(self.p("bad", name))

    def config(self, *, source=None, target=None, classes=CLASSES5, **extra) -> str:
        src_img, src_lbl = self.city("src")
        tgt_img, tgt_lbl = self.city("tgt")
        doc = {"name": "t", "classes": classes, "overrides": SMALL,
               "source": source or {"images": src_img, "labels": src_lbl, "classes": self.classes()},
               "target": target or {"images": tgt_img, "labels": tgt_lbl, "classes": self.classes()}, **extra}
        self.p("cfg.yaml").write_text(yaml.safe_dump(doc))
        return str(self.p("cfg.yaml"))

    def run_args(self, cfg: str) -> list[str]:
        return ["--config", cfg, "--run-dir", str(self.p("run"))]


@dataclass
class Case:
    id: str
    tool: str  # ingest | adapt | map_region
    argv: Callable[[World], list[str]]
    expect: str  # regex the one line must match (it names the user's file or option)


def _ingest(w: World, images, *more) -> list[str]:
    return ["--images", images, "--out", str(w.p("out.zarr")), "--min-size", "16", *more]


def _map(w: World, inputs, *more, ckpt=None) -> list[str]:
    return ["--input", *([inputs] if isinstance(inputs, str) else inputs), "--out", str(w.p("maps")), "--local",
            "--checkpoint", str(ckpt or _unet(w.p("unet.pt"))), "--overlap", "8", "--no-cog", *more]


def _write(w: World, name, array, **kw) -> str:
    return str(write_raster(w.p("in", name), array, **kw))


CASES = [
    # ---- ingest: worked before issue 20 ----------------------------------------------------------------------------------
    Case("ingest-missing-file", "ingest", lambda w: _ingest(w, str(w.p("nope.tif"))), r"nope\.tif: image file not found"),
    Case("ingest-empty-glob", "ingest", lambda w: _ingest(w, str(w.p("none", "*.tif"))), r"none/\*\.tif: no image files match"),
    Case("ingest-size-mismatch", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.zeros((60, 64), np.uint8)), "--classes", w.classes()), r"l/a\.tif: label is 60x64"),
    Case("ingest-label-crs", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.zeros((64, 64), np.uint8), crs=CRS.from_epsg(32631)), "--classes", w.classes()),
         r"l/a\.tif: label CRS EPSG:32631 differs"),
    Case("ingest-unknown-colour", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.full((3, 64, 64), 7, np.uint8)), "--palette", w.palette()), r"l/a\.tif: 1 colour\(s\) not in the palette"),
    Case("ingest-index-out-of-range", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.full((64, 64), 9, np.uint8)), "--classes", w.classes()), r"l/a\.tif: label values \[9\]"),
    Case("ingest-mixed-bands", "ingest", lambda w: (_write(w, "a.tif", _img()), _write(w, "b.tif", _img(bands=4)),
         _ingest(w, str(w.p("in", "*.tif"))))[-1], r"in/b\.tif: has 4 bands but a\.tif has 3"),
    Case("ingest-too-small", "ingest", lambda w: _ingest(w, _write(w, "s.tif", _img(20, 64)), "--min-size", "32"),
         r"s\.tif: raster is 20x64, smaller than one 32x32 patch"),
    Case("ingest-all-nodata", "ingest", lambda w: _ingest(w, _write(w, "n.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)),
         r"n\.tif: every pixel is nodata"),
    Case("ingest-not-a-tiff", "ingest", lambda w: (w.p("x.tif").write_bytes(b"II*\x00 not a tiff"), _ingest(w, str(w.p("x.tif"))))[-1],
         r"x\.tif: cannot read image raster"),
    Case("ingest-empty-file", "ingest", lambda w: (w.p("e.tif").write_bytes(b""), _ingest(w, str(w.p("e.tif"))))[-1],
         r"e\.tif: cannot read image raster"),
    Case("ingest-folder-as-image", "ingest", lambda w: (w.p("d").mkdir(), _ingest(w, str(w.p("d"))))[-1], r"/d: cannot read image raster"),
    Case("ingest-existing-store", "ingest", lambda w: (w.p("out.zarr").mkdir(), _ingest(w, _write(w, "a.tif", _img())))[-1],
         r"out\.zarr: output store already exists"),
    Case("ingest-labels-unpaired", "ingest", lambda w: (_write(w, "i/a.tif", _img()), _write(w, "i/b.tif", _img()),
         _ingest(w, str(w.p("in", "i", "*.tif")), "--labels", _write(w, "l/x.tif", np.zeros((64, 64), np.uint8))))[-1],
         r"2 images but 1 labels"),
    Case("ingest-palette-missing", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.zeros((3, 64, 64), np.uint8)), "--palette", str(w.p("nopal.json"))), r"nopal\.json"),
    Case("ingest-classes-gap", "ingest", lambda w: (w.p("c.json").write_text('{"classes": [{"index": 0, "name": "a"}, '
         '{"index": 2, "name": "b"}]}'), _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.zeros((64, 64), np.uint8)), "--classes", str(w.p("c.json"))))[-1], r"c\.json: class indices must be 0\.\.1"),
    Case("ingest-fractional-label", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.full((64, 64), 1.5, np.float32)), "--classes", w.classes()), r"l/a\.tif: 4096 pixels hold label values"),
    # ---- ingest: issue 20 --------------------------------------------------------------------------------------------------
    Case("ingest-inf-pixel (4)", "ingest", lambda w: _ingest(w, _write(w, "f.tif", np.where(np.arange(64 * 64).reshape(1, 64, 64) == 5,
         np.inf, _img(bands=1)).astype(np.float32))), r"f\.tif: 1 pixels are \+-inf"),
    Case("ingest-truncated (7)", "ingest", lambda w: _ingest(w, w.truncated()), r"bad/trunc\.tif: cannot read the image raster's pixels"),
    Case("ingest-truncated-label (7)", "ingest", lambda w: _ingest(w, str(write_raster(w.p("ok", "trunc.tif"), _img(256, 256))),
         "--labels", w.truncated(bands=1), "--classes", w.classes()), r"bad/trunc\.tif: cannot read the label raster's pixels"),
    Case("ingest-chunk-size-0 (8)", "ingest", lambda w: _ingest(w, _write(w, "a.tif", _img()), "--chunk-size", "0"), r"--chunk-size must be"),
    Case("ingest-compressor", "ingest", lambda w: _ingest(w, _write(w, "a.tif", _img()), "--compressor", "gzip"),
         r"--compressor must be one of lz4, zstd, got 'gzip'"),
    Case("ingest-ignore-index-300 (8)", "ingest", lambda w: _ingest(w, _write(w, "a.tif", _img()), "--ignore-index", "300"),
         r"--ignore-index must be in 0\.\.255"),
    Case("ingest-min-size-0", "ingest", lambda w: _ingest(w, _write(w, "a.tif", _img()), "--min-size", "0"), r"--min-size must be >= 1"),
    Case("ingest-palette-and-classes (12)", "ingest", lambda w: _ingest(w, _write(w, "i/a.tif", _img()), "--labels",
         _write(w, "l/a.tif", np.zeros((3, 64, 64), np.uint8)), "--palette", w.palette(), "--classes", w.classes()),
         r"either --palette .* or --classes .*not both"),
    # ---- adapt: worked before -------------------------------------------------------------------------------------------
    Case("adapt-config-missing", "adapt", lambda w: ["--config", str(w.p("no.yaml")), "--run-dir", str(w.p("run"))],
         r"no\.yaml: config file not found"),
    Case("adapt-unknown-key", "adapt", lambda w: w.run_args(w.config(colour=1)), r"unknown key 'colour'"),
    Case("adapt-source-without-labels", "adapt", lambda w: w.run_args(w.config(source={"images": w.city("s2")[0]})),
         r"'source\.labels' is required"),
    Case("adapt-palette-and-classes", "adapt", lambda w: w.run_args(w.config(source={"images": w.city("s2")[0], "labels":
         w.city("s2")[1], "palette": w.palette(), "classes": w.classes()})), r"'source' takes either palette .* or classes"),
    Case("adapt-workers-0", "adapt", lambda w: [*w.run_args(w.config()), "--workers", "0"], r"'workers' must be >= 1"),
    # ---- adapt: issue 20 (all before Ray starts) -----------------------------------------------------------------------
    Case("adapt-image-glob-empty (9)", "adapt", lambda w: w.run_args(w.config(source={"images": str(w.p("nowhere", "*.tif")),
         "labels": w.city("s2")[1], "classes": w.classes()})), r"nowhere/\*\.tif: no source image files match"),
    Case("adapt-label-glob-empty (9)", "adapt", lambda w: w.run_args(w.config(target={"images": w.city("t2")[0],
         "labels": str(w.p("nolabels", "*.tif")), "classes": w.classes()})), r"nolabels/\*\.tif: no target label files match"),
    Case("adapt-palette-4-vs-5 (3)", "adapt", lambda w: w.run_args(w.config(source={"images": w.city("s2", labels="rgb")[0],
         "labels": w.city("s2", labels="rgb")[1], "palette": w.palette()}, classes=CLASSES5[:4])),
         r"palette\.json: classes .* differ from the config's classes"),
    Case("adapt-classes-reordered (3)", "adapt", lambda w: w.run_args(w.config(classes=CLASSES5[::-1])),
         r"classes\.json: classes .* differ from the config's classes"),
    Case("adapt-mixed-bands (9)", "adapt", lambda w: (w.city("src"), write_raster(w.p("src", "img", "r1.tif"), _img(bands=4)),
         w.run_args(w.config()))[-1], r"src/img/r1\.tif: has 4 bands but r0\.tif has 3"),
    Case("adapt-raster-smaller-than-patch", "adapt", lambda w: w.run_args(w.config(target={"images": w.city("t3", size=24)[0]})),
         r"t3/img/r0\.tif: raster is 24x24, smaller than one 32x32 patch"),
    # ---- map_region: worked before ------------------------------------------------------------------------------------
    Case("map-missing-input", "map_region", lambda w: _map(w, str(w.p("gone.tif"))), r"gone\.tif: input raster not found"),
    Case("map-empty-glob", "map_region", lambda w: _map(w, str(w.p("none", "*.tif"))), r"none/\*\.tif: no raster matches"),
    Case("map-missing-checkpoint", "map_region", lambda w: _map(w, _write(w, "a.tif", _img()), ckpt=w.p("nope.pt")),
         r"nope\.pt: U-net checkpoint not found"),
    Case("map-no-model", "map_region", lambda w: ["--input", _write(w, "a.tif", _img()), "--out", str(w.p("maps"))],
         r"give --run-dir .* or --checkpoint"),
    Case("map-2-bands", "map_region", lambda w: _map(w, _write(w, "two.tif", _img(bands=2))), r"in/two\.tif: 2 bands, but .*unet\.pt expects 3"),
    Case("map-stylize-without-run", "map_region", lambda w: [*_map(w, _write(w, "a.tif", _img())), "--stylize"], r"--stylize needs --run-dir"),
    # ---- map_region: issue 20 -----------------------------------------------------------------------------------------
    Case("map-1-band-for-3 (11)", "map_region", lambda w: _map(w, _write(w, "pan.tif", _img(bands=1))),
         r"in/pan\.tif: 1 band, but .*unet\.pt expects 3"),
    Case("map-truncated (7)", "map_region", lambda w: _map(w, w.truncated()), r"bad/trunc\.tif: cannot read"),
    Case("map-chunk-size-0 (8)", "map_region", lambda w: [*_map(w, _write(w, "a.tif", _img())), "--chunk-size", "0"],
         r"--chunk-size must be an integer >= 1"),
    Case("map-batch-tiles-0", "map_region", lambda w: [*_map(w, _write(w, "a.tif", _img())), "--batch-tiles", "0"], r"--batch-tiles must be"),
    Case("map-workers-0", "map_region", lambda w: [*_map(w, _write(w, "a.tif", _img())), "--workers", "0"], r"--workers must be"),
    Case("map-overlap-too-big", "map_region", lambda w: [*_map(w, _write(w, "a.tif", _img())), "--overlap", "64"],
         r"--overlap 64 must be smaller than the 64 px windows"),  # windows of twice the 32 px patch
    Case("map-folder-as-input", "map_region", lambda w: (w.p("dir").mkdir(), _map(w, str(w.p("dir"))))[-1], r"dir: input raster not found \(a folder"),
    Case("map-not-a-unet", "map_region", lambda w: (torch.save({"config": {}, "generator": {}}, w.p("semi2i.pt")),
         _map(w, _write(w, "a.tif", _img()), ckpt=w.p("semi2i.pt")))[-1], r"semi2i\.pt: not a U-net checkpoint"),
    Case("map-corrupt-checkpoint", "map_region", lambda w: (w.p("bad.pt").write_bytes(b"PK\x03\x04 broken"),
         _map(w, _write(w, "a.tif", _img()), ckpt=w.p("bad.pt")))[-1], r"bad\.pt: cannot read the checkpoint"),
    Case("map-resample-without-grid (5)", "map_region", lambda w: [*_map(w, _write(w, "a.tif", _img()),
         ckpt=_unet(w.p("old.pt"), grid=False)), "--resample"], r"old\.pt: records no training CRS/resolution"),
]


def _leftovers(w: World, before: set[Path]) -> list[Path]:
    """New outputs, temporary stores or run folders at the top of the case's folder."""
    return sorted(p for p in set(w.root.iterdir()) - before if p.name in ("out.zarr", "maps", "run") or ".tmp" in p.name)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_one_line_exit_2_nothing_left(case, tmp_path, capsys):
    w = World(tmp_path)
    argv = case.argv(w)
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    rc = JOBS[case.tool].main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith(f"{case.tool}:"), err
    import re

    assert re.search(case.expect, err), err
    assert _leftovers(w, before) == []


# ---------------------------------------------------------------------------------------------------------------------
# stateful cases: resumes, interruptions, and what must succeed


def _interrupted_map(w: World, src: Path) -> Path:
    from semi2i.mapping import map_region

    out = w.p("maps")

    def die(_chunk):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        map_region(str(src), _unet(w.p("unet.pt")), out, chunk_size=32, overlap=8, cog=False, quicklook=False, on_chunk=die)
    assert (out / ".partial" / "done").is_dir()
    return out


def test_input_replaced_in_place_is_never_resumed_from_the_stale_copy(tmp_path, capsys):  # (1)
    from semi2i.mapping import read_classes

    w = World(tmp_path)
    src = write_raster(w.p("in", "scene.tif"), _img(seed=1))
    out = _interrupted_map(w, src)
    time.sleep(0.01)
    write_raster(src, _img(seed=2))  # same name, same size, other pixels
    assert JOBS["map_region"].main(_map(w, str(src))) == 2
    err = capsys.readouterr().err.strip()
    assert "scene.tif changed since it was started" in err and err.count("\n") == 0, err
    assert JOBS["map_region"].main([*_map(w, str(src)), "--overwrite"]) == 0
    fresh = w.p("fresh")
    assert JOBS["map_region"].main(["--input", str(src), "--out", str(fresh), "--local", "--checkpoint", str(w.p("unet.pt")),
                                    "--overlap", "8", "--no-cog"]) == 0
    assert (read_classes(out, "scene") == read_classes(fresh, "scene")).all()  # the NEW scene was mapped


def test_other_input_in_an_unfinished_job_is_refused(tmp_path, capsys):  # (2)
    w = World(tmp_path)
    a = write_raster(w.p("in", "a.tif"), _img(seed=1))
    b = write_raster(w.p("in", "b.tif"), _img(seed=2))
    out = _interrupted_map(w, a)
    assert JOBS["map_region"].main(_map(w, str(b))) == 2
    err = capsys.readouterr().err.strip()
    assert "it was started for other input (a.tif)" in err and "--overwrite" in err, err
    assert not (out / "job.json").exists()
    assert JOBS["map_region"].main([*_map(w, str(b)), "--overwrite"]) == 0
    assert list(json.loads((out / "job.json").read_text())["rasters"]) == ["b"]


def test_bad_input_does_not_block_the_folder(tmp_path, capsys):  # (11)
    w = World(tmp_path)
    pan = write_raster(w.p("in", "pan.tif"), _img(bands=1))
    assert JOBS["map_region"].main(_map(w, str(pan))) == 2
    assert not w.p("maps").exists()
    w.p("maps").mkdir()  # an existing output folder is not removed, but nothing is left in it
    assert JOBS["map_region"].main(_map(w, w.truncated())) == 2
    assert list(w.p("maps").iterdir()) == []
    rgb = write_raster(w.p("in", "rgb.tif"), _img())
    assert JOBS["map_region"].main(_map(w, str(rgb))) == 0


def test_other_crs_and_resolution_warns_and_resample_warps(tmp_path, caplog):  # (5)
    w = World(tmp_path)
    merc = write_raster(w.p("in", "merc.tif"), _img(60, 80), crs=CRS.from_epsg(3857),
                        transform=from_origin(6140000.0, 2930000.0, 0.6, 0.6))
    with caplog.at_level("WARNING"):
        assert JOBS["map_region"].main(_map(w, str(merc))) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("merc.tif: EPSG:3857 at 0.6 x 0.6" in m and "EPSG:32640 at 0.5 x 0.5 m" in m and "--resample" in m
               for m in warned), warned
    out = w.p("resampled")
    assert JOBS["map_region"].main(["--input", str(merc), "--out", str(out), "--local", "--checkpoint", str(w.p("unet.pt")),
                                    "--overlap", "8", "--resample"]) == 0
    with rasterio.open(out / "cog" / "merc.tif") as cog:
        assert cog.crs == UTM40 and cog.res == pytest.approx((0.5, 0.5))


def test_index_labels_without_classes_say_so_and_label_nodata_is_ignore(tmp_path, caplog):  # (12), label nodata
    w = World(tmp_path)
    lbl = np.zeros((64, 64), np.uint8)
    lbl[:3, :3] = 7  # 9 stray pixels
    lbl[10:20] = 0
    lbl[40:] = 9  # the label raster's own nodata value
    img = _write(w, "i/a.tif", _img())
    label = _write(w, "l/a.tif", lbl, nodata=9)
    with caplog.at_level("WARNING"):
        assert JOBS["ingest"].main(_ingest(w, img, "--labels", label)) == 0
    assert any("l/a.tif: no class names given (--classes)" in r.getMessage() and "class_0..class_7" in r.getMessage()
               for r in caplog.records)
    store = CityStore(w.p("out.zarr"))
    assert store.class_names == [f"class_{k}" for k in range(8)]
    assert (store.dataset("a").label.values[40:] == 255).all()  # nodata 9 -> ignore, not class 9 (out of range)


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    import zarr

    w = World(tmp_path)
    img = _write(w, "a.tif", _img())

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr, "open_group", full)
    assert JOBS["ingest"].main(_ingest(w, img)) == 2
    err = capsys.readouterr().err.strip()
    assert "out.zarr: cannot write the store (no space left on the device)" in err and err.count("\n") == 0
    assert not any(p.name.startswith(".out.zarr") or p.name == "out.zarr" for p in tmp_path.iterdir())


def test_killed_ingest_leftover_is_removed_by_the_next_run(tmp_path):  # (10)
    w = World(tmp_path)
    write_raster(w.p("big", "a.tif"), np.random.default_rng(0).integers(0, 255, (3, 2048, 2048), dtype=np.uint8))
    out = w.p("city.zarr")
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "ingest.py"), "--images", str(w.p("big", "*.tif")),
                             "--out", str(out), "--chunk-size", "128"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".city.zarr.tmp-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".city.zarr.tmp-")]
    assert leftovers and not out.exists()
    assert JOBS["ingest"].main(["--images", str(w.p("big", "*.tif")), "--out", str(out)]) == 0
    assert not any(p.exists() for p in leftovers) and out.exists()


def _adapt_resume(w: World, capsys, mutate: Callable[[World], None], expect: str) -> None:
    """A run folder whose stores were ingested, then something the resume would skip on no longer fits."""
    from semi2i.data.ingest import ingest_city

    cfg = w.config()
    doc = yaml.safe_load(Path(cfg).read_text())
    for role in ("source", "target"):
        spec = doc[role]
        ingest_city(spec["images"], w.p("run", "stores", f"{role}.zarr"), labels=spec["labels"], classes=spec["classes"],
                    min_size=32, progress=False)
    mutate(w)
    before = sorted(p for p in w.p("run").rglob("*"))
    capsys.readouterr()
    assert JOBS["adapt"].main(w.run_args(cfg)) == 2
    err = capsys.readouterr().err.strip()
    import re

    assert err.count("\n") == 0 and re.search(expect, err), err
    assert sorted(p for p in w.p("run").rglob("*")) == before  # nothing trained, nothing written


def _semi2i_settings(w: World, **changes) -> dict:
    """The SemI2I settings this World's config resolves to (as a checkpoint stores them), with ``changes``."""
    from semi2i.adapt_config import load_adapt_config

    return {**dataclasses.asdict(load_adapt_config(w.p("cfg.yaml")).profile.semi2i), **changes}


def _unet_settings(w: World, **changes) -> dict:
    """The U-net settings this World's config resolves to (as a U-net checkpoint stores them), with ``changes``."""
    from semi2i.adapt_config import load_adapt_config

    return {**dataclasses.asdict(load_adapt_config(w.p("cfg.yaml")).profile.unet), **changes}


def _four_classes(w: World) -> None:
    """The config (and its classes file) now say 4 classes; the stores were ingested with 5."""
    four = w.p("classes4.json")
    four.write_text(json.dumps({"classes": [{"index": i, "name": n} for i, n in enumerate(CLASSES5[:4])]}))
    specs = {role: {"images": w.city(city)[0], "labels": w.city(city)[1], "classes": str(four)} for role, city in
             (("source", "src"), ("target", "tgt"))}
    w.config(classes=CLASSES5[:4], **specs)


@pytest.mark.parametrize("mutate,expect", [
    (lambda w: w.config(classes=CLASSES5[:4]), r"classes\.json: classes .* differ from the config's"),  # (3): palette/classes file
    (lambda w: _four_classes(w), r"stores/source\.zarr: ingested with classes .* but the config says"),  # (3): a kept store
    (lambda w: (time.sleep(0.01), write_raster(w.p("src", "img", "r0.tif"), _img(seed=9))), r"src/img/r0\.tif: changed since it was ingested"),
    (lambda w: (write_raster(w.p("src", "img", "r2.tif"), _img()), write_raster(w.p("src", "lbl", "r2.tif"), np.zeros((64, 64), np.uint8))),
     r"stores/source\.zarr: ingested from other images"),
    (lambda w: torch.save({"class_names": ["x"] * 5, "in_bands": 3}, w.p("run", "unet_source.pt")),
     r"unet_source\.pt: trained on classes"),
    (lambda w: torch.save({"class_names": CLASSES5, "in_bands": 4}, w.p("run", "unet_source.pt")), r"unet_source\.pt: takes 4 band"),
    (lambda w: torch.save({"config": {"in_bands_a": 3, "in_bands_b": 1}}, w.p("run", "semi2i.pt")), r"semi2i\.pt: trained for 3 -> 1 bands"),
    (lambda w: torch.save({"config": _semi2i_settings(w, decay_epoch=3, lr_schedule="epoch", seed=5, log_every=1)},
                          w.p("run", "semi2i_seed1.pt")),  # the quick profile's schedule before 2026-12-03
     r"semi2i_seed1\.pt: trained with other SemI2I settings \(decay_epoch: 3 there, 0 now; lr_schedule: 'epoch' there, "
     r"'step' now\); a resumed run would reuse it"),
    (lambda w: torch.save({"class_names": CLASSES5, "in_bands": 3, "unet": _unet_settings(w, train_steps=7, tf32=True)},
                          w.p("run", "unet_source.pt")),
     r"unet_source\.pt: trained with other U-net settings \(train_steps: 7 there, \d+ now\); a resumed run would reuse it"),
], ids=["config-classes", "store-classes", "file-changed", "other-images", "unet-classes", "unet-bands", "gan-bands",
        "semi2i-settings", "unet-settings"])
def test_resumed_adapt_revalidates_what_it_skips_on(mutate, expect, tmp_path, capsys):
    _adapt_resume(World(tmp_path), capsys, mutate, expect)


def test_a_recopied_input_is_not_a_changed_one_but_a_same_size_edit_is(tmp_path):
    """A dataset copied again (new mtime, same bytes) keeps its stores usable, so a resumed run or --reuse-from
    does not redo everything; an edit that keeps the file's size is still refused, by its SHA-256."""
    import shutil

    from semi2i.config import ConfigError
    from semi2i.data.ingest import ingest_city
    from semi2i.preflight import _check_store_provenance

    w = World(tmp_path)
    images, labels = w.city("src")
    store = ingest_city(images, w.p("src.zarr"), labels=labels, classes=w.classes(), progress=False, min_size=32)
    pairs = [(w.p("src", "img", f"r{i}.tif"), w.p("src", "lbl", f"r{i}.tif")) for i in range(2)]
    raster = w.p("src", "img", "r0.tif")
    shutil.copyfile(raster, w.p("copy.tif"))  # the same bytes with a new mtime, as a re-provisioned dataset has
    os.replace(w.p("copy.tif"), raster)
    os.utime(raster, ns=(time.time_ns(), time.time_ns() + 10**9))
    _check_store_provenance(CityStore(store.path), "source", pairs)
    data = bytearray(raster.read_bytes())
    data[-1] ^= 0xFF  # one byte flipped: same size, new mtime
    raster.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"src/img/r0\.tif: changed since it was ingested into .*src\.zarr"):
        _check_store_provenance(CityStore(store.path), "source", pairs)


def test_semi2i_settings_check_ignores_the_arithmetic_and_names_what_changes_the_generator(tmp_path):
    """A run resumes in either precision (fp32 weights and statistics in both): bf16/TF32 there, fp32 now passes;
    a changed loss weight does not."""
    from semi2i.config import ConfigError, load_profile
    from semi2i.preflight import _check_semi2i_settings

    current = load_profile("quick").semi2i
    stored = dataclasses.asdict(current) | {"precision": "bf16", "tf32": True, "seed": 7, "log_every": 1}
    _check_semi2i_settings(tmp_path / "semi2i.pt", stored, current, tmp_path)
    with pytest.raises(ConfigError, match=r"semi2i\.pt: trained with other SemI2I settings \(lambda_grad: 10\.0 there, "
                                          r"20\.0 now\)"):
        _check_semi2i_settings(tmp_path / "semi2i.pt", stored | {"lambda_grad": 10.0}, current, tmp_path)


def test_unet_settings_check_knows_which_settings_shaped_which_unet(tmp_path):
    """The arithmetic and layout never count; the fine-tune's budget and schedule count for a fine-tuned U-net
    only; a checkpoint from before ``train_lr_schedule`` existed was trained at a constant rate."""
    from semi2i.config import ConfigError, load_profile
    from semi2i.preflight import _check_unet_settings

    current = load_profile("quick").unet
    stored = dataclasses.asdict(current) | {"precision": "fp32", "tf32": True, "channels_last": False}
    for name in ("unet_source.pt", "unet_target_oracle.pt", "unet_semi2i.pt"):
        _check_unet_settings(tmp_path / name, stored, current)
    _check_unet_settings(tmp_path / "unet_source.pt", stored | {"finetune_steps": 7}, current)
    with pytest.raises(ConfigError, match=r"unet_semi2i\.pt: trained with other U-net settings \(finetune_steps: 7 there, "
                                          r"100 now\)"):
        _check_unet_settings(tmp_path / "unet_semi2i.pt", stored | {"finetune_steps": 7}, current)
    old = {k: v for k, v in stored.items() if k != "train_lr_schedule"}
    cosine = dataclasses.replace(current, train_lr_schedule="cosine")
    _check_unet_settings(tmp_path / "unet_source.pt", old, dataclasses.replace(current, train_lr_schedule="constant"))
    with pytest.raises(ConfigError, match=r"unet_target_oracle\.pt: trained with other U-net settings "
                                          r"\(train_lr_schedule: 'constant' there, 'cosine' now\)"):
        _check_unet_settings(tmp_path / "unet_target_oracle.pt", old, cosine)


def test_adapt_error_found_in_pixels_is_one_line(tmp_path, capsys, monkeypatch):
    """An unknown mask colour is only found while ingesting (after Ray started): still one line, exit 2, no store."""
    w = World(tmp_path)
    img, lbl = w.city("src", labels="rgb")
    write_raster(w.p("src", "lbl", "r1.tif"), np.full((3, 64, 64), 7, np.uint8))
    cfg = w.config(source={"images": img, "labels": lbl, "palette": w.palette()})
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: None)  # the failure comes before any Ray work
    assert JOBS["adapt"].main(w.run_args(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert "src/lbl/r1.tif: 1 colour(s) not in the palette" in err and err.count("\n") == 0, err
    assert not w.p("run", "stores", "source.zarr").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_three_band_source_to_one_band_target_end_to_end(tmp_path, ray_session):  # (6)
    """RGB source -> panchromatic target: SemI2I and the oracle are segmented and scored, source-only and the
    per-band baselines are reported as not applicable (with why), report.md says so."""
    from semi2i.demo.cities import make_demo_cities
    from semi2i.adapt_config import load_adapt_config
    from semi2i.pipeline import AdaptRun

    files = make_demo_cities(tmp_path / "data", size=96, rasters_per_city=1, seed=2)
    tgt = files["demo_target"]
    with rasterio.open(tgt.images[0]) as f:
        pan = f.read().astype(np.float32).mean(axis=0).astype(f.dtypes[0])
        pan_path = write_raster(tmp_path / "pan" / "t0.tif", pan, transform=f.transform, crs=f.crs, nodata=f.nodata)
    classes = str(tmp_path / "data" / "classes.json")
    tiny = {"base_width": 4, "n_res_blocks": 1, "disc_width": 4, "patch_size": 32, "epochs": 2, "decay_epoch": 1,
            "max_steps_per_epoch": 2, "checkpoint_every": 2, "log_every": 1}
    cfg = {"name": "pan", "classes": CLASSES5, "profile": "quick",
           "methods": ["source_only", "histogram_matching", "gray_world", "colormapgan", "semi2i", "target_oracle"],
           "source": {"images": [str(p) for p in files["demo_source"].images], "labels": [str(p) for p in files["demo_source"].labels],
                      "classes": classes},
           "target": {"images": [str(pan_path)], "labels": [str(p) for p in tgt.labels], "classes": classes},
           "overrides": {"patch_size": 32, "overlap": 8, "semi2i": tiny, "colormapgan": {"patch_size": 32},
                         "cyclegan": {"patch_size": 32},
                         "unet": {"base_width": 4, "depth": 2, "patch_size": 32, "batch_size": 2, "train_steps": 2, "finetune_steps": 2}}}
    path = tmp_path / "pan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    report = AdaptRun(load_adapt_config(path), tmp_path / "run").run()

    assert list(report["methods"]) == cfg["methods"]
    for name in ("source_only", "histogram_matching", "gray_world", "colormapgan"):
        assert set(report["methods"][name]) == {"not_applicable"} and "3 band(s)" in report["methods"][name]["not_applicable"]
    for name in ("semi2i", "target_oracle"):
        m = report["methods"][name]
        assert set(m) >= {"iou", "miou", "pixel_accuracy"} and set(m["iou"]) == set(CLASSES5)
    assert "semi2i_gap_closed" not in report
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| source_only | - | - | - | - | - | not applicable | - |" in md and "Not applicable to this pair" in md
    assert not (tmp_path / "run" / "maps" / "source_only").exists() and (tmp_path / "run" / "maps" / "semi2i" / "job.json").exists()
    assert (tmp_path / "run" / "previews" / "adaptation.png").exists()
    # no colour-blind reference: a U-net trained on the 3-band source cannot read the 1-band target; the label-free
    # score picks instead
    assert "reference_agreement" not in report and not (tmp_path / "run" / "reference").exists()
    assert report["label_free_pick"]["by"] == "label_free"
