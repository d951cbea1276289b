"""How sure is the label-free pick? ``report.json["label_free_pick"]`` (since 2026-12-07) for finished run folders,
including runs whose report was written before the key existed, with the mIoU of the pick and of its runner-up.

    python studies/pick_evidence.py runs/s61/main-s0 runs/s61/main-s1 ...

It calls the product's :func:`semi2i.adapt_report.pick_evidence` on each folder's report rows and kept scores
(``label_free/<method>.json``) and guard records, so the table is what the report says now.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from semi2i.adapt_report import pick_evidence


class _RunFolder:
    """What pick_evidence reads of a finished run: its files."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def row(run: Path) -> dict:
    report = json.loads((run / "report.json").read_text())
    scores = {m: json.loads(f.read_text()) for m in report["methods"] if (f := run / "label_free" / f"{m}.json").exists()}
    evidence = pick_evidence(_RunFolder(run), report["methods"], scores)
    miou = {m: r.get("miou") for m, r in report["methods"].items()}
    return {"run": str(run), "pair": f"{report['source']} -> {report['target']}", "seed": report.get("seed", 0),
            **evidence, "pick_miou": miou[evidence["method"]],
            "runner_up_miou": miou.get(evidence["runner_up"]) if evidence["runner_up"] else None}


def main(runs: list[Path]) -> None:
    print("| pair | seed | pick (mIoU) | runner-up (mIoU) | lead | p | significant |")
    print("|---|---|---|---|---|---|---|")
    for r in map(row, runs):
        rival = f"{r['runner_up']} ({r['runner_up_miou']:.2f})" if r["runner_up"] else "none (all map as the pick)"
        lead = "" if r["lead"] is None else f"{r['lead']:+.4f}"
        p = "" if r["p_value"] is None else f"{r['p_value']:.4f}"
        print(f"| {r['pair']} | {r['seed']} | {r['method']} ({r['pick_miou']:.2f}) | {rival} | {lead} | {p} | "
              f"{'' if r['significant'] is None else ('yes' if r['significant'] else 'no')} |")


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
