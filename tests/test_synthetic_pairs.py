"""studies/synthetic_pairs.py: the generated cities and their adapt configs, read back by the product's config loader."""

import pytest
import rasterio

from conftest import REPO, load_study
from semi2i.adapt_config import load_adapt_config


def test_each_pair_is_a_valid_adapt_config_over_the_generated_cities(tmp_path):
    m = load_study("synthetic_pairs")
    assert m.main(["--out", str(tmp_path), "--pairs", "a:c", "c:b", "--size", "64", "--rasters", "1"]) == 0
    demo = load_adapt_config(REPO / "jobs" / "configs" / "demo.yaml")
    names = sorted(p.name for p in (tmp_path / "configs").iterdir())
    assert names == ["synthetic-a-to-c.yaml", "synthetic-c-to-b.yaml"]
    cfg = load_adapt_config(tmp_path / "configs" / "synthetic-c-to-b.yaml")
    assert cfg.name == "synthetic-c-to-b" and cfg.methods == demo.methods and cfg.profile == demo.profile
    image = next((tmp_path / "data" / "city_c" / "images").glob("*.tif"))
    with rasterio.open(image) as src:  # sensor C's camera: RGB, the requested size
        assert (src.count, src.height, src.width) == (3, 64, 64)
    assert cfg.source.images == [str(image.parent.resolve() / "*.tif")]
    assert cfg.target.labels == [str((tmp_path / "data" / "city_b" / "labels").resolve() / "*.tif")]


def test_a_pair_must_name_two_different_cities(tmp_path):
    m = load_study("synthetic_pairs")
    with pytest.raises(SystemExit):
        m.main(["--out", str(tmp_path), "--pairs", "a:a"])
    with pytest.raises(SystemExit):
        m.main(["--out", str(tmp_path), "--pairs", "a:d"])
    assert not (tmp_path / "data").exists()
