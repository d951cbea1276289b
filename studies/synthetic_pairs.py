"""Adaptation pairs no study has used, from the project's own generator: the multi-city demo's three cities
(``city_a``/``city_b``/``city_c`` through sensors A, B, C; each city draws its own scenes, so the class mixes
differ too) as `jobs/adapt.py` configs, one per ordered pair.

    python studies/synthetic_pairs.py --out runs/synthetic --pairs a:c c:a b:c
    python jobs/adapt.py --config runs/synthetic/configs/synthetic-a-to-c.yaml --seed 0 --run-dir runs/synthetic/a-to-c-s0

Why: issue 19 asks that the label-free score rank methods on pairs that are not the three Dubai dev pairs. Sensor
C (warm, low contrast, very soft, hue rotated the other way than B) entered no study of the score, and the data
is generated here, so the check needs nothing from ``../shared``. The configs carry the built-in demo's settings
(`jobs/configs/demo.yaml`: quick profile, U-nets 200 + 60 steps, every method but CycleGAN), so a run takes minutes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from semi2i.demo.cities import MULTICITY_DEMO, make_multicity_demo

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "demo.yaml"


def pair_config(data: Path, source: str, target: str, demo: dict) -> dict:
    """The adapt config of ``city_<source>`` -> ``city_<target>`` with the demo's profile, methods and overrides."""
    def city(letter: str) -> dict:
        name = f"city_{letter}"
        return {"name": name, "images": str(data / name / "images" / "*.tif"),
                "labels": str(data / name / "labels" / "*.tif"), "classes": str(data / "classes.json")}

    return {"name": f"synthetic-{source}-to-{target}", "profile": demo["profile"], "source": city(source),
            "target": city(target), "classes": demo["classes"], "methods": demo["methods"],
            "overrides": demo["overrides"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the cities (data/) and configs (configs/)")
    p.add_argument("--pairs", nargs="+", default=["a:c", "c:a", "b:c"], help="source:target city letters")
    p.add_argument("--size", type=int, default=512, help="raster side in pixels (the demo's)")
    p.add_argument("--rasters", type=int, default=2, help="rasters per city (the demo's)")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed (not the runs')")
    args = p.parse_args(argv)
    letters = {name.removeprefix("city_") for name, _ in MULTICITY_DEMO}
    pairs = [tuple(pair.split(":")) for pair in args.pairs]
    bad = [":".join(pair) for pair in pairs if len(pair) != 2 or not set(pair) <= letters or pair[0] == pair[1]]
    if bad:
        p.error(f"--pairs {' '.join(bad)}: expected source:target with two different letters of {sorted(letters)}")
    data = (args.out / "data").resolve()
    make_multicity_demo(data, size=args.size, rasters_per_city=args.rasters, seed=args.seed)
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    (args.out / "configs").mkdir(parents=True, exist_ok=True)
    for source, target in pairs:
        path = args.out / "configs" / f"synthetic-{source}-to-{target}.yaml"
        path.write_text(yaml.safe_dump(pair_config(data, source, target, demo), sort_keys=False))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
