"""How much of the label-free score is the draw of its patches (issues 18 and 19).

The score (:mod:`semi2i.domain_distance`) compares Gaussian fits of a U-net's deepest features over ``count`` random
patches of its training imagery and of the target. This re-scores the U-nets of finished adapt runs with other
patch counts and other draws (``seed`` picks the places; the target's are ``seed + 1``, as the shipped score's),
so the spread between draws can be set beside the differences between methods that the score is asked to rank.
Each run's U-nets are the ones its report scored (a guard-averaged method: its fine-tune, as
:func:`semi2i.label_free.scored_unet` says). Rows: ``<out>``, one JSON line per (run, method, count, seed) with
the method's target mIoU from report.json; a re-run skips what is there.

    cd studies && python study_score_samples.py --runs ../runs/s57/mild-s1 --counts 48 384 --seeds 0 2 4 \\
        --out ../runs/score-samples.jsonl
    python studies/study_score_samples.py --table docs/results/score-samples-2026-12-06.jsonl
    python studies/study_score_samples.py --guard docs/results/score-samples-2026-12-06.jsonl \\
        --guard-rows docs/results/finetune-guard-all-2026-12-06.jsonl

``--table`` prints, per run and patch count, each draw's Spearman ρ with mIoU and pick loss (a tie counts against
the score), the same for the mean over the draws, and how far the source U-net's, SemI2I's and ColorMapGAN's
scores move between draws (max − min). ``--guard`` sets the fine-tune guard's two rules side by side on the runs
that ``study_finetune_guard.py --all`` mapped both ways (``--guard-rows``): before 2026-12-06 (average when draw
0 rates the source U-net higher) and now (average unless the paired t-test over the five 48-patch draws, seeds
0, 2, …, 8, finds a lead at p < 0.05), with the mIoU each rule maps the method at. ``--trust`` ranks each of those
runs' methods as the test over draws maps them, by the fine-tune's score and by the report's (capped at the source
U-net's for an averaged method, since 2026-12-06):

    python studies/study_score_samples.py --trust docs/results/score-samples-2026-12-06.jsonl \
        --guard-rows docs/results/finetune-guard-all-2026-12-06.jsonl docs/results/finetune-guard-demo-2026-12-06.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from finished_runs import written_rows
from fit_score_table import pick_of
from semi2i.domain_distance import store_distance

log = logging.getLogger("study_score_samples")

#: the methods a report ranks (the oracle saw the target's labels)
METHODS = ("source_only", "histogram_matching", "gray_world", "colormapgan", "semi2i")


def scored_paths(run: Path, method: str) -> tuple[Path, Path] | None:
    """(U-net, its training imagery) whose score is ``method``'s in ``run``, or None when absent."""
    if method == "source_only":
        unet, training = run / "unet_source.pt", run / "stores" / "source.zarr"
    else:
        kept = run / "guard" / f"unet_{method}.pt"
        unet, training = (kept if kept.exists() else run / f"unet_{method}.pt"), run / "stylized" / method / "store.zarr"
    return (unet, training) if unet.exists() and training.exists() else None


def rho_and_loss(miou: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Spearman ρ of ``score`` with ``miou`` and the pick loss (best mIoU − mIoU of the top score; ties: the worst)."""
    return float(spearmanr(miou, score).statistic), float(miou.max() - miou[pick_of(miou, score)])


def table(paths: list[Path]) -> None:
    rows = _lines(paths)
    print("| run | patches | draws | ρ per draw | pick loss per draw | ρ, mean of draws | pick loss, mean of draws | "
          "spread between draws: source-only / SemI2I / ColorMapGAN |")
    print("|---|---|---|---|---|---|---|---|")
    for run in dict.fromkeys(r["run"] for r in rows):
        for count in sorted({r["count"] for r in rows if r["run"] == run}):
            mine = [r for r in rows if r["run"] == run and r["count"] == count]
            methods = [m for m in METHODS if any(r["method"] == m for r in mine)]
            seeds = sorted({r["seed"] for r in mine})
            score = {(r["method"], r["seed"]): r["label_free"] for r in mine}
            if any((m, s) not in score for m in methods for s in seeds):
                continue  # an unfinished study
            miou = np.array([next(r["miou"] for r in mine if r["method"] == m) for m in methods])
            draws = np.array([[score[m, s] for m in methods] for s in seeds])  # (draws, methods)
            each = [rho_and_loss(miou, d) for d in draws]
            rho, loss = rho_and_loss(miou, draws.mean(0))
            spread = " / ".join(f"{np.ptp(draws[:, methods.index(m)]):.3f}" if m in methods else "-"
                                for m in ("source_only", "semi2i", "colormapgan"))
            print(f"| {Path(run).name} | {count} | {len(seeds)} | {' / '.join(f'{e[0]:.2f}' for e in each)} | "
                  f"{' / '.join(f'{e[1]:.2f}' for e in each)} | {rho:.2f} | {loss:.2f} | {spread} |")


def _lines(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]


def five_draws(paths: list[Path]) -> dict[tuple[str, str], dict[int, float]]:
    """{(run, method): {seed: score}} of the shipped score's five 48-patch draws (seeds 0, 2, …, 8) in these rows."""
    draws: dict[tuple[str, str], dict[int, float]] = {}
    for r in _lines(paths):
        if r["count"] == 48 and r["seed"] in (0, 2, 4, 6, 8):
            draws.setdefault((r["run"], r["method"]), {})[r["seed"]] = r["label_free"]
    return draws


def guard_table(paths: list[Path], guard_rows: list[Path]) -> None:
    from semi2i.finetune_guard import SIGNIFICANCE, lead_p_value

    draws, mapped = five_draws(paths), _lines(guard_rows)
    print("| run | method | lead, draw 0 | mean lead, 5 draws | p | before: mIoU | now: mIoU | fine-tune | average | "
          "source-only |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in mapped:
        mine, source = draws.get((g["run"], g["method"]), {}), draws.get((g["run"], "source_only"), {})
        if len(mine) < 5 or len(source) < 5:
            continue
        ft, src = [mine[k] for k in sorted(mine)], [source[k] for k in sorted(source)]
        p = lead_p_value(ft, src)
        before = g["miou_average"] if ft[0] < src[0] else g["miou_fine_tuned"]
        now = g["miou_fine_tuned"] if p < SIGNIFICANCE else g["miou_average"]
        print(f"| {Path(g['run']).name} | {g['method']} | {ft[0] - src[0]:+.3f} | {np.mean(ft) - np.mean(src):+.3f} | "
              f"{p:.3f} | {before:.2f} | {now:.2f} | {g['miou_fine_tuned']:.2f} | {g['miou_average']:.2f} | "
              f"{g['miou_source_only']:.2f} |")


def trust_table(paths: list[Path], guard_rows: list[Path]) -> None:
    """Per run: how the report's scores rank the methods as the guard of 2026-12-06 maps them (its test over the
    five draws), with an averaged method scored as its fine-tune (until 2026-12-06) and, as the report now scores
    it, no higher than the source U-net (:func:`semi2i.finetune_guard.trusted_score`)."""
    from semi2i.finetune_guard import SIGNIFICANCE, lead_p_value, trusted_score

    draws, mapped = five_draws(paths), _lines(guard_rows)
    print("| run | methods averaged | ρ, fine-tune's score | pick loss | ρ, capped at the source U-net's | pick loss | "
          "pick, capped |")
    print("|---|---|---|---|---|---|---|")
    for run in dict.fromkeys(g["run"] for g in mapped):
        source = [v for _, v in sorted(draws[run, "source_only"].items())]
        names, miou, plain, capped, averaged = ["source_only"], [], [np.mean(source)], [np.mean(source)], []
        for g in (g for g in mapped if g["run"] == run):
            fine = [v for _, v in sorted(draws[run, g["method"]].items())]
            average = not lead_p_value(fine, source) < SIGNIFICANCE
            names.append(g["method"])
            miou.append(g["miou_average"] if average else g["miou_fine_tuned"])
            plain.append(np.mean(fine))
            capped.append(trusted_score(np.mean(fine), np.mean(source), average))
            averaged += [g["method"]] if average else []
        miou = np.array([g["miou_source_only"]] + miou)
        rho, loss = rho_and_loss(miou, np.array(plain))
        rho_c, loss_c = rho_and_loss(miou, np.array(capped))
        pick = names[pick_of(miou, np.array(capped))]
        print(f"| {Path(run).name} | {', '.join(averaged) or '-'} | {rho:.2f} | {loss:.2f} | {rho_c:.2f} | {loss_c:.2f} | "
              f"{pick} ({miou[names.index(pick)]:.2f}) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", nargs="+", type=Path, help="print the table of these rows and stop")
    p.add_argument("--guard", nargs="+", type=Path, help="print the guard's table of these rows and stop")
    p.add_argument("--trust", nargs="+", type=Path, help="print the report's ranking as the guard maps (with --guard-rows)")
    p.add_argument("--guard-rows", nargs="+", type=Path, default=[], help="study_finetune_guard.py --all rows")
    p.add_argument("--runs", nargs="+", type=Path, help="finished adapt run folders")
    p.add_argument("--counts", nargs="+", type=int, default=[48], help="patches per side")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="draws (the target's places: seed + 1)")
    p.add_argument("--out", type=Path, help="the rows (JSON lines)")
    args = p.parse_args()
    if args.table:
        return table(args.table)
    if args.guard:
        return guard_table(args.guard, args.guard_rows)
    if args.trust:
        return trust_table(args.trust, args.guard_rows)
    if not args.runs or not args.out:
        p.error("--runs and --out, or --table")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    done = written_rows(args.out, "run", "method", "count", "seed")
    for run in args.runs:
        report = json.loads((run / "report.json").read_text())["methods"]
        for count in args.counts:
            for seed in args.seeds:
                for method in METHODS:
                    paths = scored_paths(run, method)
                    if paths is None or "miou" not in report.get(method, {}) or (str(run), method, count, seed) in done:
                        continue
                    start = time.perf_counter()
                    scored = store_distance(*paths, run / "stores" / "target.zarr", count=count, seed=seed)
                    row = {"run": str(run), "method": method, "count": count, "seed": seed,
                           "label_free": scored["label_free"], "distance": scored["distance"],
                           "miou": round(report[method]["miou"], 2), "seconds": round(time.perf_counter() - start, 1)}
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    log.info("%s %s %d patches, draw %d: %.4f (%.1f s)", run, method, count, seed,
                             row["label_free"], row["seconds"])


if __name__ == "__main__":
    main()
