"""previews/adaptation.png shows what it says: six panels side by side, each the right picture (the class
panels in the class colours of the rasters they show), and a legend of every class."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semi2i.data.ingest import ingest_city
from semi2i.previews import IGNORE_COLOUR, adaptation_preview, class_colours, to_rgb8

CLASSES = ["building", "road", "vegetation", "water", "land"]
SIZE, TITLE, LEGEND = 64, 18, 22  # raster side = crop = panel side, so every panel is its raster unscaled


class FakeRun:
    """What adaptation_preview reads from an AdaptRun: the stores and the run folder's files."""

    def __init__(self, root: Path, stores: dict):
        self.root, self.stores = root, stores

    def store(self, role: str):
        return self.stores[role]

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


@pytest.fixture
def run(tmp_path, write):
    rng = np.random.default_rng(0)
    labels = {role: rng.integers(0, len(CLASSES), (SIZE, SIZE), dtype=np.uint8) for role in ("source", "target")}
    labels["target"][:4] = 255  # unlabelled rows: grey in the ground truth
    stores = {}
    for role, scale in (("source", 1.0), ("target", 0.5)):
        image = (rng.random((3, SIZE, SIZE)) * 200 * scale + 20).astype(np.uint8)
        write(tmp_path / role / "img" / "r0.tif", image)
        write(tmp_path / role / "lbl" / "r0.tif", labels[role])
        stores[role] = ingest_city(str(tmp_path / role / "img" / "*.tif"), tmp_path / "run" / "stores" / f"{role}.zarr",
                                   labels=str(tmp_path / role / "lbl" / "*.tif"), classes=CLASSES, min_size=32,
                                   progress=False)
    run = FakeRun(tmp_path / "run", stores)
    write(run.path("stylized", "semi2i", "images", "r0.tif"), (rng.random((3, SIZE, SIZE)) * 255).astype(np.uint8))
    run.maps = {m: rng.integers(0, len(CLASSES), (SIZE, SIZE), dtype=np.uint8) for m in ("source_only", "semi2i")}
    for method, classes in run.maps.items():
        write(run.path("maps", method, "cog", "r0.tif"), classes)
    run.labels = labels
    return run


def _panels(png: np.ndarray, n: int) -> list[np.ndarray]:
    """The picture of each panel (below its title line)."""
    return [png[TITLE:TITLE + SIZE, i * SIZE:(i + 1) * SIZE] for i in range(n)]


def test_adaptation_preview_has_six_panels_with_the_right_pictures(run):
    import rasterio

    out = adaptation_preview(run, run.path("previews", "adaptation.png"), crop=SIZE, panel=SIZE)
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (SIZE + TITLE + LEGEND, 6 * SIZE, 3)
    source, stylized, target, truth, source_only, semi2i = _panels(png, 6)
    src, tgt = run.store("source"), run.store("target")
    np.testing.assert_array_equal(source, to_rgb8(src.dataset("r0").image.values, src.band_stats))
    with rasterio.open(run.path("stylized", "semi2i", "images", "r0.tif")) as f:
        np.testing.assert_array_equal(stylized, to_rgb8(f.read(), tgt.band_stats))  # shown in the target's stretch
    np.testing.assert_array_equal(target, to_rgb8(tgt.dataset("r0").image.values, tgt.band_stats))
    lut = class_colours(len(CLASSES))
    np.testing.assert_array_equal(truth, lut[run.labels["target"]])
    assert (truth[:4] == IGNORE_COLOUR).all()
    np.testing.assert_array_equal(source_only, lut[run.maps["source_only"]])
    np.testing.assert_array_equal(semi2i, lut[run.maps["semi2i"]])
    # the legend: one swatch per class and one for ignore, in their colours
    legend = {tuple(c) for c in png[SIZE + TITLE + 4:SIZE + TITLE + 14].reshape(-1, 3)}
    assert {tuple(int(v) for v in lut[k]) for k in range(len(CLASSES))} | {IGNORE_COLOUR} <= legend


def test_missing_outputs_leave_their_panels_out(run):
    for method in ("source_only", "semi2i"):
        run.path("maps", method, "cog", "r0.tif").unlink()
    run.path("stylized", "semi2i", "images", "r0.tif").unlink()
    out = adaptation_preview(run, run.path("previews", "adaptation.png"), crop=SIZE, panel=SIZE)
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape[1] == 3 * SIZE  # source | target | ground truth
    np.testing.assert_array_equal(_panels(png, 3)[2], class_colours(len(CLASSES))[run.labels["target"]])
