"""Study: does the label-free distance rank one Tune sweep's trials when measured in one shared feature space?

A research harness, not the product's path. A sweep of ``jobs/tune.py`` keeps, for each trial's last rung,
its stylized source (``trials/<id>/rung<k>/stylized/store.zarr``) and its fine-tuned U-net (``unet.pt``),
and the sweep's source U-net (``shared/unet_source.pt``). For each such rung this measures the distances
of :func:`semi2i.domain_distance.store_distance` between the stylized source and the target twice: in the
rung's own U-net's features (what ``--metric label_free`` uses) and in the source U-net's (``base``: one
feature space for every trial), and prints the Spearman ρ of each level's ``-distance`` with the rung's
mIoU (from ``rungs.csv``).

    python studies/study_sweep_distance.py runs/tune-demo-lf
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from scipy.stats import spearmanr

from semi2i.domain_distance import store_distance


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", type=Path, help="a jobs/tune.py run folder")
    args = p.parse_args(argv)
    rungs = {(r["trial"], r["rung"]): float(r["miou"]) for r in csv.DictReader(open(args.sweep / "rungs.csv"))}
    target = args.sweep / "shared" / "stores" / "target.zarr"
    points = []
    for store in sorted(args.sweep.glob("trials/*/rung*/stylized/store.zarr")):
        rung_dir = store.parents[1]
        trial, rung = rung_dir.parent.name, rung_dir.name.removeprefix("rung")
        base = store_distance(args.sweep / "shared" / "unet_source.pt", store, target)["distance"]
        own = store_distance(rung_dir / "unet.pt", store, target)["distance"]
        points.append({"trial": trial, "rung": int(rung), "miou": rungs[(trial, rung)], "base": base, "own": own})
        print(json.dumps(points[-1]), flush=True)
    miou = [q["miou"] for q in points]
    for space in ("own", "base"):
        for level in ("deep", "mid", "pixel"):
            rho = spearmanr(miou, [-q[space][level] for q in points])[0]
            print(f"{space}_{level}: rho {rho:.2f} over {len(points)} rungs")


if __name__ == "__main__":
    main()
