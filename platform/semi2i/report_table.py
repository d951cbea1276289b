"""report.md's table for jobs/adapt.py (one row per method; not-applicable methods say why)."""

from __future__ import annotations

import numpy as np


def report_markdown(report: dict) -> str:
    classes = report["classes"]
    scored = any("miou" in m for m in report["methods"].values())
    title = f"# {report['source']} -> {report['target']} ({report['profile']} profile, seed {report.get('seed', 0)})"
    if not scored:  # no target labels: the label-free score is all there is
        lines = [title, "", "The target has no labels. Label-free score (agreement of each method's target map with "
                 "the others', higher = more trustworthy):", "", "| method | label-free |", "|---|---|"]
        lines += [f"| {name} | " + ("not applicable" if "not_applicable" in m else _score(m.get("label_free"))) + " |"
                  for name, m in report["methods"].items()]
        return "\n".join(lines + _choice_lines(report)) + "\n"
    lines = [title, "",
             "IoU in percent on the target's labels (ignore pixels excluded); label-free: the score a user without "
             "labels sees (agreement with the other methods' maps, higher = more trustworthy).", "",
             "| method | " + " | ".join(classes) + " | mIoU | pixel acc. | label-free |",
             "|---" * (len(classes) + 4) + "|"]
    for name, m in report["methods"].items():
        if "not_applicable" in m:
            lines.append(f"| {name} | " + " | ".join("-" for _ in classes) + " | not applicable | - | - |")
            continue
        cells = [_pct(m["iou"].get(c)) for c in classes]
        label = f"{name} (upper bound)" if name == "target_oracle" else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | **{_pct(m['miou'])}** | {_pct(m['pixel_accuracy'])} | "
                     f"{_score(m.get('label_free'))} |")
    lines += _choice_lines(report)
    if "semi2i_gap_closed" in report:
        lines += ["", f"SemI2I closes {100 * report['semi2i_gap_closed']:.1f}% of the source-only -> oracle mIoU gap."]
    skipped = [f"{name}: {m['not_applicable']}" for name, m in report["methods"].items() if "not_applicable" in m]
    if skipped:
        lines += ["", "Not applicable to this pair: " + "; ".join(skipped) + "."]
    orders = {name: m["tone_order"] for name, m in report["methods"].items() if "tone_order" in m}
    if orders:
        lines += ["", "Tone order of each stylized source (Spearman ρ of pixel brightness before/after; 1 = order kept, "
                  "< 0 = tones inverted): " + ", ".join(f"{n} {v:.2f}" + (" **(inverted)**" if v < 0 else "")
                                                      for n, v in orders.items()) + "."]
    return "\n".join(lines) + "\n"


def _choice_lines(report: dict) -> list[str]:
    choice = report.get("semi2i_choice")
    if not choice:
        return []
    return ["", f"SemI2I: {choice['chosen']} (seed {choice['seed']}) was chosen without target labels "
            f"({choice['criterion']})."]


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"
