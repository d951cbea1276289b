"""The K-seed choice rules measured against mIoU: the medoid of the seeds' target maps, and the label-free score.

    python studies/seed_medoid.py --group NAME RUN RUN RUN [--group NAME RUN ...] [--method semi2i]

``semi2i.seeds: K`` keeps the seed whose target map agrees best with the other seeds' maps (the medoid,
:mod:`semi2i.semi2i_seeds`); ``studies/seed_pick.py`` measured the other candidate rule, the highest
``label_free``, on the committed rows. This reads finished ``jobs/adapt.py`` runs of one setting (a group: the
same pair and config, different ``--seed``), computes the agreement of their ``--method`` target maps with
:func:`semi2i.selection.agreement_matrix` (what the product computes among the K seeds of a run) and says which
run each rule keeps, against the group's mean and best mIoU. The runs of a group differ in their source U-net as
well as their generator, where K seeds of one run share the source U-net: a proxy for the product's choice,
measured on draws that are on disk.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semi2i.data.store import CityStore
from semi2i.mapping import read_classes
from semi2i.selection import agreement_matrix, agreement_scores


class _Maps(list):
    """One run's class maps of the target rasters, read on indexing."""

    def __init__(self, run: Path, method: str, rasters: list[str]):
        super().__init__(rasters)
        self.run, self.method = run, method

    def __getitem__(self, index: int):
        return read_classes(self.run / "maps" / self.method, list.__getitem__(self, index))


def measure(name: str, runs: list[Path], method: str) -> dict:
    target = CityStore(runs[0] / "stores" / "target.zarr")
    rasters = [r.id for r in target.rasters]
    reports = {str(r): json.loads((r / "report.json").read_text())["methods"][method] for r in runs}
    names, matrix = agreement_matrix({str(r): _Maps(r, method, rasters) for r in runs}, target.num_classes)
    agreement = {n: v["mean"] for n, v in agreement_scores(names, matrix).items()}
    miou = {n: reports[n]["miou"] for n in names}
    medoid = max(names, key=lambda n: (agreement[n], -names.index(n)))
    by_score = max(names, key=lambda n: reports[n].get("label_free", float("-inf")))
    mean = sum(miou.values()) / len(miou)
    return {"group": name, "method": method, "runs": names, "miou": miou, "agreement": agreement,
            "label_free": {n: reports[n].get("label_free") for n in names},
            "medoid": medoid, "medoid_miou": miou[medoid], "label_free_pick": by_score,
            "label_free_pick_miou": miou[by_score], "mean": round(mean, 2), "best": max(miou.values()),
            "worst": min(miou.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--group", nargs="+", action="append", required=True, metavar="NAME RUN",
                   help="a name and the group's run folders (two or more)")
    p.add_argument("--method", default="semi2i")
    p.add_argument("--jsonl", type=Path, help="append one row per group")
    args = p.parse_args()
    print("| group | seeds | mIoU per seed | worst | mean | best | medoid keeps | medoid - mean | label-free keeps | label-free - mean |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, *runs in args.group:
        if len(runs) < 2:
            raise SystemExit(f"--group {name}: needs two run folders or more")
        row = measure(name, [Path(r) for r in runs], args.method)
        per_seed = " / ".join(f"{row['miou'][r]:.2f}" for r in row["runs"])
        print(f"| {name} | {len(runs)} | {per_seed} | {row['worst']:.2f} | {row['mean']:.2f} | {row['best']:.2f} | "
              f"{row['medoid_miou']:.2f} | {row['medoid_miou'] - row['mean']:+.2f} | {row['label_free_pick_miou']:.2f} | "
              f"{row['label_free_pick_miou'] - row['mean']:+.2f} |")
        if args.jsonl:
            with args.jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
