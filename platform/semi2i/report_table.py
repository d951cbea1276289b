"""report.md's table for jobs/adapt.py (one row per method; not-applicable methods say why)."""

from __future__ import annotations

import numpy as np


def report_markdown(report: dict) -> str:
    classes = report["classes"]
    lines = [f"# {report['source']} -> {report['target']} ({report['profile']} profile, seed {report.get('seed', 0)})", "",
             "IoU in percent on the target's labels (ignore pixels excluded).", "",
             "| method | " + " | ".join(classes) + " | mIoU | pixel acc. |",
             "|---" * (len(classes) + 3) + "|"]
    for name, m in report["methods"].items():
        if "not_applicable" in m:
            lines.append(f"| {name} | " + " | ".join("-" for _ in classes) + " | not applicable | - |")
            continue
        cells = [pct(m["iou"].get(c)) for c in classes]
        label = f"{name} (upper bound)" if name == "target_oracle" else name
        lines.append(f"| {label} | " + " | ".join(cells) + f" | **{pct(m['miou'])}** | {pct(m['pixel_accuracy'])} |")
    if choice := report.get("semi2i_choice"):
        lines += ["", f"SemI2I: {choice['chosen']} (seed {choice['seed']}) was chosen without target labels "
                  f"({choice['criterion']})."]
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


def pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"
