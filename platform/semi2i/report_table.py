"""report.md's table for jobs/adapt.py (one row per method; not-applicable methods say why; the label-free
score beside the mIoU, or alone when the target has no labels)."""

from __future__ import annotations

import numpy as np

from semi2i.finetune_guard import maps_with
from semi2i.source_fit import MIN_RECALL


def report_markdown(report: dict) -> str:
    classes = report["classes"]
    rows = report["methods"]
    free = any("label_free" in m for m in rows.values())
    agreement = report.get("reference_agreement") or {}
    agree = bool(agreement)
    title = f"# {report['source']} -> {report['target']} ({report['profile']} profile, seed {report.get('seed', 0)})"
    if not any("miou" in m for m in rows.values()) and free:  # a target without labels: the label-free scores alone
        lines = [title, "", "The target has no labels: each method's label-free score (higher = better; "
                 "docs/label-free-selection.md says how well it tracks mIoU)"
                 + ("; reference agreement: the mIoU of its map against the colour-blind reference map." if agree else "."),
                 "", "| method | label-free |" + (" reference agreement |" if agree else ""), "|---|---|" + ("---|" if agree else "")]
        lines += [f"| {name} | " + ("not applicable" if "not_applicable" in m else f"{m['label_free']:.4f}") + " |"
                  + (f" {pct(agreement.get(name))} |" if agree else "") for name, m in rows.items()]
    else:
        lines = [title, "", "IoU in percent on the target's labels (ignore pixels excluded)"
                 + ("; label-free: the score computed without them (higher = better)" if free else "")
                 + ("; reference agreement: the mIoU of the method's map against the colour-blind reference map, also "
                    "computed without them" if agree else "") + ".", "",
                 "| method | " + " | ".join(classes) + " | mIoU | pixel acc. |" + (" label-free |" if free else "")
                 + (" reference agreement |" if agree else ""),
                 "|---" * (len(classes) + 3 + free + agree) + "|"]
        for name, m in rows.items():
            extra = (" " + (f"{m['label_free']:.4f}" if "label_free" in m else "-") + " |") if free else ""
            extra += (" " + (pct(agreement[name]) if name in agreement else "-") + " |") if agree else ""
            if "not_applicable" in m:
                lines.append(f"| {name} | " + " | ".join("-" for _ in classes) + " | not applicable | - |" + extra)
                continue
            cells = [pct(m["iou"].get(c)) for c in classes]
            label = f"{name} (upper bound)" if name == "target_oracle" else name
            lines.append(f"| {label} | " + " | ".join(cells) + f" | **{pct(m['miou'])}** | {pct(m['pixel_accuracy'])} |" + extra)
    if pick := label_free_pick(rows, agreement):
        why = ("its map agrees best with the colour-blind reference map" if agree else "the highest label-free score")
        lines += ["", f"Without target labels the platform would trust **{pick}** ({why}; the oracle, trained on the "
                  "target's labels, is left out)."]
        if (evidence := report.get("label_free_pick") or {}).get("runner_up"):
            lines[-1] += " " + pick_evidence_line(evidence)
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
    if fit := report.get("source_fit"):
        lines += ["", source_fit_line(fit)]
    decisions = report.get("finetune_guard", {})
    on_source = [name for name, decision in decisions.items() if maps_with(decision) == "source_unet"]
    averaged = [name for name, decision in decisions.items() if maps_with(decision) == "weight_average"]
    if on_source:
        lines += ["", "Mapped with the source U-net, as the label-free score did not rate their fine-tune clearly above it "
                  "(unet.finetune_guard; their label-free score is the source U-net's): " + ", ".join(on_source) + "."]
    if averaged:
        lines += ["", "Mapped with the average of the fine-tuned and the source U-net's weights, as the label-free score "
                  "did not rate the fine-tune clearly above the source U-net (unet.finetune_guard; their label-free score is "
                  "capped at the source U-net's): " + ", ".join(averaged) + "."]
    return "\n".join(lines) + "\n"


def source_fit_line(fit: dict) -> str:
    """What report.md says of the source U-net's fit on its own city (semi2i.source_fit)."""
    tries = len(fit["attempts"])
    line = f"Source U-net on its own city (source labels): mIoU {fit['miou']:.2f}"
    if tries > 1:
        line += f", attempt {fit['chosen'] + 1} of {tries} (seed {fit['seed']}; unet.source_retrains)"
    if fit["unlearned"]:
        return line + (f". **Not learned: {', '.join(fit['unlearned'])}** (found on less than {MIN_RECALL:.0%} of its pixels there): "
                       "no method's map can be trusted for it.")
    return line + ", every class learned."


def pick_evidence_line(evidence: dict) -> str:
    """How sure the score is of its pick (:func:`semi2i.adapt_report.pick_evidence`)."""
    if evidence.get("by") == "reference_agreement":
        return (f"It agrees with the reference {evidence['lead']:.2f} points more than {evidence['runner_up']}, the "
                "runner-up (one reference map: no test; docs/label-free-selection.md says how well this tracks mIoU).")
    test = f"one-sided paired t-test over the score's draws, p = {evidence['p_value']:.4f}"
    if evidence["significant"]:
        # beyond the draws' noise is not a right order: on pairs no study used, 4 of 7 such picks mapped 22.84-61.66
        # below the best method (docs/label-free-selection.md, "Pairs from the project's own generator")
        return (f"Its lead over {evidence['runner_up']}, the runner-up, is significant ({test}): the draws agree on the "
                "order, which the score can still get wrong between two methods that both adapted.")
    return (f"Its lead over {evidence['runner_up']}, the runner-up, is **not** significant ({test}): the score does not "
            "separate the two, so their order is a hint.")


def pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"


def label_free_pick(rows: dict[str, dict], agreement: dict[str, float] | None = None) -> str | None:
    """The method the platform would trust without target labels, the oracle left out (None: no scores): the one
    whose map agrees best with the colour-blind reference where ``agreement`` (report["reference_agreement"],
    :mod:`semi2i.colour_blind`) is given, else the highest ``label_free`` score. A tie goes to the method listed
    first, source-only in a report (a method the guard maps with the source U-net has its map and its score)."""
    scored = ({n: agreement[n] for n in rows if n in agreement} if agreement else
              {n: m["label_free"] for n, m in rows.items() if "label_free" in m})
    scored.pop("target_oracle", None)
    return max(scored, key=scored.get) if scored else None
