"""Were the fine-tune guard's decisions right, and does the label-free score rank what the guard compares?

The guard (:mod:`semi2i.finetune_guard`, ``unet.finetune_guard: source_unet``) keeps a method's fine-tuned U-net only
when the label-free score shows it clearly closer to the target than the source U-net; otherwise it moves the
fine-tune aside (``guard/unet_<method>.pt``) and the method maps as source-only. A finished run therefore never maps
the fine-tunes it set aside, and its report cannot say what a fallback gave up or saved. This maps each of them on
the target (as adapt does) and writes one row per guarded (run, method): the fine-tune's mIoU and score, the source
U-net's, and the guard's test. From the rows it prints

- per pair, the score's Spearman ρ with mIoU over the *candidates* the guard compares (each seed's source U-net and
  its fine-tunes, every one scored on its own features), and the pick loss of choosing among them by the score;
- per guard rule, how often it kept a fine-tune that mapped below the source U-net (harm) and fell back from one that
  mapped above it (a false alarm), with the mIoU each cost.

    python studies/study_guard_decisions.py --runs runs/s61/mild-s0 runs/s61/mild-s1 ... --out runs/s62/guard-decisions
    python studies/study_guard_decisions.py --rows docs/results/guard-decisions-2026-12-06.jsonl   # the tables again
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections import defaultdict
from pathlib import Path

import yaml
from scipy.stats import spearmanr

from semi2i.data.store import CityStore
from semi2i.finetune_guard import SIGNIFICANCE, UNGUARDED, threshold
from semi2i.mapping import map_region
from semi2i.pipeline import score_maps

log = logging.getLogger("study_guard_decisions")

#: the rules compared: whether each keeps the fine-tune, given the one-sided p-value of its lead, its mean lead and
#: how many fine-tunes the guard decided on in the same run
RULES = {
    f"lead significant at {SIGNIFICANCE} over the run's fine-tunes (p < {SIGNIFICANCE}/m, Bonferroni; the product since "
    "2026-12-07)": lambda p, lead, m: p < threshold(m),
    f"lead significant at {SIGNIFICANCE} each (p < {SIGNIFICANCE}; the product 2026-12-06)": lambda p, lead, m: p < SIGNIFICANCE,
    "lead in the mean (no test)": lambda p, lead, m: lead > 0,
    f"not significantly behind (p < {1 - SIGNIFICANCE})": lambda p, lead, m: p < 1 - SIGNIFICANCE,
    "always keep (off, the paper)": lambda p, lead, m: True,
}


def decision_rows(run: Path, out: Path) -> list[dict]:
    """One row per method the guard decided on in ``run``, its set-aside fine-tunes mapped into ``out/maps``."""
    report = json.loads((run / "report.json").read_text())
    profile = yaml.safe_load((run / "config.resolved.yaml").read_text())["resolved_profile"]
    target = CityStore(run / "stores" / "target.zarr")
    source_miou = report["methods"]["source_only"]["miou"]
    rows = []
    for record_path in sorted((run / "guard").glob("*.json")):
        method = record_path.stem
        if method in UNGUARDED:
            continue
        record = json.loads(record_path.read_text())
        if record["maps_with"] == "fine_tune":
            miou = report["methods"][method]["miou"] if method in report["methods"] else None
            if miou is None:  # a SemI2I seed the choice did not publish under its own name
                continue
        else:
            maps = out / "maps" / f"{run.name}_{method}"
            map_region(target.path, run / "guard" / f"unet_{method}.pt", maps, overlap=profile["overlap"], overwrite=True,
                       precision=profile["unet"]["precision"], tf32=profile["unet"]["tf32"])
            miou = score_maps(target, maps)["miou"]
        draws_lead = [a - b for a, b in zip(record["draws_fine_tuned"], record["draws_source_only"])]
        rows.append({"run": str(run), "pair": f"{report['source']} -> {report['target']}", "method": method,
                     "maps_with": record["maps_with"], "p_value": record["p_value"], "family": record.get("family"),
                     "mean_lead": round(statistics.mean(draws_lead), 6),
                     "label_free_fine_tuned": record["label_free_fine_tuned"],
                     "label_free_source_only": record["label_free_source_only"],
                     "miou_fine_tuned": round(miou, 2), "miou_source_only": round(source_miou, 2)})
    return rows


def candidate_ranking(rows: list[dict]) -> list[dict]:
    """Per pair: ρ(score, mIoU) over every run's source U-net and fine-tunes, and the pick loss per run (the best
    candidate's mIoU minus that of the one the score ranks first)."""
    by_pair: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        candidates = by_pair[r["pair"]][r["run"]]
        if not candidates:
            candidates.append((r["label_free_source_only"], r["miou_source_only"]))
        candidates.append((r["label_free_fine_tuned"], r["miou_fine_tuned"]))
    table = []
    for pair, runs in sorted(by_pair.items()):
        points = [c for candidates in runs.values() for c in candidates]
        losses = [max(m for _, m in c) - max(c)[1] for c in runs.values()]
        table.append({"pair": pair, "runs": len(runs), "points": len(points),
                      "rho": float(spearmanr([s for s, _ in points], [m for _, m in points]).statistic),
                      "mean_pick_loss": statistics.mean(losses), "worst_pick_loss": max(losses)})
    return table


def rule_outcomes(rows: list[dict]) -> list[dict]:
    """Per rule: its harms (a kept fine-tune below the source U-net) and false alarms (a fallback from a fine-tune
    above it), their counts and mIoU, and the mean mIoU gained over source-only by the methods it decides on."""
    counted = defaultdict(int)  # the fine-tunes each run's guard decided on: its rows (rows before 2026-12-07)
    for r in rows:
        counted[r["run"]] += 1
    table = []
    for name, keeps in RULES.items():
        harms, alarms, gains = [], [], []
        for r in rows:
            gain = r["miou_fine_tuned"] - r["miou_source_only"]
            kept = keeps(r["p_value"], r["mean_lead"], r.get("family") or counted[r["run"]])
            gains.append(gain if kept else 0.0)
            if kept and gain < 0:
                harms.append(-gain)
            if not kept and gain > 0:
                alarms.append(gain)
        table.append({"rule": name, "decisions": len(rows), "harms": len(harms), "harm_miou": sum(harms),
                      "worst_harm": max(harms, default=0.0), "false_alarms": len(alarms), "alarm_miou": sum(alarms),
                      "mean_gain": statistics.mean(gains)})
    return table


def markdown(rows: list[dict]) -> str:
    """The two tables of the module's docstring, as markdown."""
    out = ["| pair | runs | candidates | Spearman ρ | mean pick loss | worst pick loss |", "|---|---|---|---|---|---|"]
    out += [f"| {t['pair']} | {t['runs']} | {t['points']} | {t['rho']:.2f} | {t['mean_pick_loss']:.2f} | "
            f"{t['worst_pick_loss']:.2f} |" for t in candidate_ranking(rows)]
    out += ["", "| rule | decisions | harms (mIoU lost, worst) | false alarms (mIoU given up) | mean gain over source-only |",
            "|---|---|---|---|---|"]
    out += [f"| {t['rule']} | {t['decisions']} | {t['harms']} ({t['harm_miou']:.2f}, {t['worst_harm']:.2f}) | "
            f"{t['false_alarms']} ({t['alarm_miou']:.2f}) | {t['mean_gain']:+.2f} |" for t in rule_outcomes(rows)]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="*", default=[], type=Path, help="finished adapt run folders made with the guard")
    p.add_argument("--out", type=Path, help="where the set-aside fine-tunes' maps and results.jsonl go")
    p.add_argument("--rows", nargs="*", default=[], type=Path, help="results.jsonl files written before: only the tables")
    args = p.parse_args()
    if args.runs and not args.out:
        p.error("--runs needs --out")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    files = list(args.rows)
    if args.runs:
        args.out.mkdir(parents=True, exist_ok=True)
        results = args.out / "results.jsonl"
        from finished_runs import written_rows  # here: the tests import the tables' functions without studies/ on the path

        done = {run for run, in written_rows(results, "run")}
        for run in args.runs:
            if str(run) in done:
                continue
            lines = [json.dumps(r) for r in decision_rows(run, args.out)]  # a run's rows land together
            with results.open("a") as f:
                f.write("".join(line + "\n" for line in lines))
            log.info("%s: %d decisions", run, len(lines))
        files.append(results)
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    print(markdown(rows))


if __name__ == "__main__":
    main()
