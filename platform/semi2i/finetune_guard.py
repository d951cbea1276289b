"""Do no harm: a fine-tune that the label-free score does not show closer to the target is not used.

Every stylizing method fine-tunes the source U-net on its stylized source. Where the stylized imagery is
*farther* from the target than the original source (a generator that painted content the target does not
have onto flat ground, a colour map fitted to two cities that differ in content more than in look), the
fine-tune can only teach the U-net a wrong appearance: on the mild Dubai pair the fine-tunes scored below the
source U-net they started from in 23 of 24 cases (4 methods, the six runs of stops 50-53). The label-free score
(:mod:`semi2i.domain_distance`: the Fréchet distance between a U-net's training imagery and the target in its
own deepest features) sees exactly that comparison without target labels, so the guard asks it: when the
method's fine-tuned U-net does not score *clearly* higher than the source U-net, the method maps with a fallback
instead (below). "Clearly": the score is the mean over draws of random patches
(:data:`semi2i.domain_distance.DRAWS`), and one draw's score moves between draws by as much as the gaps the guard
must judge (docs/label-free-selection.md, "How much of the score is the draw"); so the fine-tune is kept only when
it leads the source U-net in a one-sided paired t-test over the draws (both U-nets are scored on the same places)
at :data:`SIGNIFICANCE` for the whole run: the burden of proof is on the change, as "do no harm" asks. A run guards
several fine-tunes (four on the Dubai configs) and the user is handed the best-scored of those kept, so one test at
5 % per fine-tune would keep a noise lead somewhere in up to 1 − 0.95⁴ ≈ 19 % of runs; each test is therefore taken at
:data:`SIGNIFICANCE` divided by the number of fine-tunes the run guards (Bonferroni: at most a 5 % chance that any of
them is kept on noise, since 2026-12-07; :func:`threshold`). Where the fine-tune leads by far (every SemI2I run of the
main and reverse pairs), nothing changes. The signal is not a law: on a control pair with no sensor shift
(jobs/configs/dubai-bright-control.yaml) it rated a SemI2I fine-tune that lost 5.7 mIoU to source-only the closest
to the target (docs/adaptation-study.md, "Do no harm").

What the method maps with instead (``unet.finetune_guard``): ``source_unet``, the source U-net itself (the
quick profile since 2026-12-06: over 39 firings on record the average mapped 1.60 mIoU *below* source-only on
average and 9.79 at worst, 21 times below and 18 above, docs/adaptation-study.md; with no evidence that the change
helps, "do no harm" keeps what the user had), or ``weight_average``, the average of the two U-nets' weights
(WiSE-FT, Wortsman et al., CVPR 2022: the weight-space average of a model before and after fine-tuning keeps much
of the fine-tune's gain and of the original's robustness; 0.5 is their choice when no labelled target data can
set the mix; the quick profile's from 2026-12-05 to 2026-12-06).

Files: ``guard/<method>.json`` records both scores, the test and the decision (``maps_with``: ``fine_tune``,
``weight_average`` or ``source_unet``; ``weight_average``: the fine-tuned weights' share in what is mapped, 0.5 or 0,
None when the fine-tune is kept). A method that falls back keeps its fine-tuned U-net as ``guard/unet_<method>.pt``
and maps with the fallback's weights, written to ``unet_<method>.pt`` (the name every later stage and the report
use). The report's label-free score for it is the source U-net's where it maps with it, else no higher than that
(:func:`trusted_score`). A resumed run whose setting changed since a decision carries the decision over to the new
fallback (or back to the fine-tune for ``off``) and maps that method again (:func:`guard`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from scipy.stats import ttest_1samp

from semi2i import placement
from semi2i.checkpoints import load_checkpoint, save_checkpoint
from semi2i.label_free import score_methods, score_unet, scored_unet, training_store
from semi2i.locations import write_text

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)

#: the fine-tuned weights' share of the average (WiSE-FT's mixing coefficient without target labels)
FINE_TUNED_SHARE = 0.5
#: the fine-tuned weights' share in what a method maps with when its fine-tune shows no clear lead, per
#: ``unet.finetune_guard`` value (a share of 0 is the source U-net's weights, exactly)
FALLBACK_SHARES = {"weight_average": FINE_TUNED_SHARE, "source_unet": 0.0}
#: the chance, over all the fine-tunes of one run, that the guard keeps one on a lead that is noise (the conventional
#: 5 %; each test's p-value must be below this over the number of tests: :func:`threshold`)
SIGNIFICANCE = 0.05
#: what each fallback is, in a decision's words
_FALLBACK_NAMES = {"weight_average": "the average of the two's weights", "source_unet": "the source U-net"}
#: the methods a guard never touches: nothing fine-tuned from the source U-net
UNGUARDED = ("source_only", "target_oracle")
#: the two lanes guard at once: one of them scores the source U-net (label_free/source_only.json), the other reads it
_SOURCE_SCORE = threading.Lock()


def average_weights(source: dict, fine_tuned: dict, share: float = FINE_TUNED_SHARE) -> dict:
    """The checkpoint ``fine_tuned`` with every floating-point tensor of its model (weights and batch-norm
    statistics) replaced by ``share`` of its own plus ``1 - share`` of ``source``'s; counters are the
    fine-tune's, and no optimizer state is kept (the average was never trained)."""
    a, b = source["model"], fine_tuned["model"]
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("the two U-nets differ in architecture: a weight average needs the fine-tune's own start")
    model = {k: torch.lerp(a[k].float(), b[k].float(), share).to(b[k].dtype) if b[k].is_floating_point() else b[k]
             for k in b}
    return {**{k: v for k, v in fine_tuned.items() if k != "optimizer"}, "model": model, "weight_average": share}


def lead_p_value(fine_tuned: Sequence[float], source: Sequence[float]) -> float:
    """One-sided p-value of the paired t-test that the fine-tune's score exceeds the source U-net's, draw by draw
    (the same places in both); draws that all differ by the same amount give 0 for a lead, 1 otherwise."""
    lead = np.subtract(fine_tuned, source, dtype=float)
    if len(lead) < 2 or np.ptp(lead) == 0:
        return 0.0 if lead.mean() > 0 else 1.0
    return float(ttest_1samp(lead, 0.0, alternative="greater").pvalue)


def threshold(family: int) -> float:
    """The p-value below which one fine-tune's lead counts when the run guards ``family`` fine-tunes: Bonferroni's
    :data:`SIGNIFICANCE` / ``family``, which holds the run-wide chance of a kept noise lead to :data:`SIGNIFICANCE`
    whatever the tests' dependence, and needs no other decision of the run (the two lanes decide apart)."""
    return SIGNIFICANCE / max(family, 1)


def _rule(significance: float, family: int, fallback: str) -> str:
    return (f"keep the fine-tune when its label-free lead over the source U-net is significant (one-sided paired t-test "
            f"over the draws, p < {SIGNIFICANCE}/{family} = {significance:.4g}: Bonferroni over the {family} fine-tune(s) "
            f"this run guards), else map with {_FALLBACK_NAMES[fallback]}")


def maps_with(record: dict) -> str:
    """What a decision maps the method with: ``fine_tune``, ``weight_average`` or ``source_unet`` (a record
    written before 2026-12-06 says it by its share alone)."""
    return record.get("maps_with") or ("weight_average" if record.get("weight_average") else "fine_tune")


def fell_back(record: dict | None) -> bool:
    """Whether the guard maps the method with something other than its fine-tune."""
    return record is not None and maps_with(record) != "fine_tune"


def trusted_score(fine_tuned: float, source: float, mapped_with: str) -> float:
    """The label-free score a report gives a method: its fine-tune's where it is kept; the source U-net's where
    the method maps with the source U-net (it *is* that U-net); for a weight average, its fine-tune's but no higher
    than the source U-net's. The guard found no clear lead there, so a lead in the mean is not evidence the
    report may rank on (the weight average itself is no measure: :func:`semi2i.label_free.scored_unet`)."""
    return {"fine_tune": fine_tuned, "source_unet": source}.get(mapped_with, min(fine_tuned, source))


def guard(run: "AdaptRun", methods: Sequence[str], setting: str = "source_unet") -> dict[str, dict]:
    """Decide, for each fine-tuned method of ``methods`` (fine-tuned from the source U-net: the two cities have
    the same bands), whether it maps with its fine-tuned U-net or, under ``setting`` (``unet.finetune_guard``),
    the fallback; returns ``{method: record}`` (also ``guard/<method>.json``). Each decision is taken once: a
    resumed run reads it (also one taken before 2026-12-06 by comparing one draw's scores: its maps were made with
    it), and a fine-tuned U-net moved aside is found there. A decision taken under another setting, or at another
    p-value threshold (before 2026-12-07 every test was at 5 %; a run that now guards more or fewer fine-tunes), is
    carried over to this one (:func:`_carry_over`); ``off`` takes no new decisions. The run's family of tests is
    ``run.guarded_methods()``, all of its fine-tunes, not only ``methods`` (a lane decides on its own)."""
    family = len(run.guarded_methods())
    significance = threshold(family)
    todo: dict[str, tuple[str, str]] = {}
    records: dict[str, dict] = {}
    for method in methods:
        if method in UNGUARDED or run.not_applicable(method):
            continue
        record_path = run.path("guard", f"{method}.json")
        if record_path.exists():
            record = _carry_over(run, method, json.loads(record_path.read_text()), setting, family)
            if record is not None:
                records[method] = record
            continue
        if setting == "off":
            continue
        fine_tuned = scored_unet(run, method)  # the fine-tune, moved aside or not
        training = training_store(run, method)
        if fine_tuned is None or training is None:
            continue
        todo[method] = (str(fine_tuned), str(training))
    if not todo:
        return records
    with _SOURCE_SCORE:
        source = score_methods(run, ["source_only"])["source_only"]
    score = functools.partial(score_unet, target=str(run.path("stores", "target.zarr")), device="cuda" if run.cfg.gpu else "cpu")
    results = placement.run_each(score, list(todo.values()), stage="finetune_guard", num_gpus=1 if run.cfg.gpu else 0)
    for method, result in zip(todo, results):
        p_value = lead_p_value(result["draws"], source["draws"])
        mapped_with = "fine_tune" if p_value < significance else setting
        record = {"label_free_fine_tuned": result["label_free"], "label_free_source_only": source["label_free"],
                  "maps_with": mapped_with, "weight_average": FALLBACK_SHARES.get(mapped_with),
                  "p_value": round(p_value, 4), "significance": significance, "family": family,
                  "draws_fine_tuned": result["draws"], "draws_source_only": source["draws"],
                  "rule": _rule(significance, family, setting)}
        if mapped_with != "fine_tune":
            _publish_fallback(run, method, FALLBACK_SHARES[mapped_with])
        else:  # moved aside by an earlier decision: back in place
            _restore_fine_tune(run, method)
        # the report's score, not computed again; its U-net named where it now is (moved aside on a fallback)
        write_text(run.path("label_free", f"{method}.json"), json.dumps({**result, "checkpoint": str(scored_unet(run, method))}, indent=1))
        write_text(run.path("guard", f"{method}.json"), json.dumps(record, indent=1))
        log.info("finetune guard: %s maps with %s (label-free %.4f, source-only %.4f, p %.4f, needs < %.4g)", method,
                 mapped_with, result["label_free"], source["label_free"], p_value, significance)
        records[method] = record
    return records


def _carry_over(run: "AdaptRun", method: str, record: dict, setting: str, family: int) -> dict | None:
    """``record`` under ``setting`` and the run's ``family`` of tests: unchanged where the method maps as the setting
    and the threshold would have it; else the method's U-net is published anew (the fallback's weights, or its
    fine-tune back), its map and score are deleted so that the segment stage maps it again (and, for a SemI2I seed,
    the choice among the seeds is taken again: :mod:`semi2i.semi2i_seeds`), and the record is rewritten (deleted
    for ``off``: no decision stands). The test is the same under either fallback, so only a new threshold (a record
    of before 2026-12-07 was taken at 5 %) can turn a kept fine-tune into a fallback or back; its p-value is on
    record, so nothing is scored again. A record without one (before 2026-12-06) stands as taken."""
    significance = threshold(family)
    # taken at another threshold (before 2026-12-07 every record was at 5 %): decided again from its p-value
    stale = record.get("p_value") is not None and record.get("significance", SIGNIFICANCE) != significance
    kept = record["p_value"] < significance if stale else not fell_back(record)
    wanted = "fine_tune" if setting == "off" or kept else setting
    if maps_with(record) == wanted and setting != "off" and not stale:
        return record
    path = run.path("guard", f"{method}.json")
    if maps_with(record) != wanted:
        run.path("scores", f"{method}.json").unlink(missing_ok=True)  # first: a kill from here on redoes it all
        shutil.rmtree(run.path("maps", method), ignore_errors=True)
        if method.startswith("semi2i_seed"):  # the choice among seeds compared their maps and linked one as semi2i
            run.path("semi2i_choice.json").unlink(missing_ok=True)
        if wanted == "fine_tune":
            _restore_fine_tune(run, method)
        else:
            _publish_fallback(run, method, FALLBACK_SHARES[wanted])
        score = run.path("label_free", f"{method}.json")
        if score.exists():  # the same fine-tune's score, named where its U-net now is
            write_text(score, json.dumps({**json.loads(score.read_text()), "checkpoint": str(scored_unet(run, method))}, indent=1))
        log.info("finetune guard: %s decided under another setting or threshold; now maps with %s "
                 "(unet.finetune_guard: %s, p %s, needs < %.4g)", method, wanted, setting, record.get("p_value"), significance)
    if setting == "off":
        path.unlink()
        return None
    record = {**record, "maps_with": wanted, "weight_average": FALLBACK_SHARES.get(wanted)}
    if record.get("p_value") is not None:
        record.update(significance=significance, family=family, rule=_rule(significance, family, setting))
    write_text(path, json.dumps(record, indent=1))
    return record


def guard_record(run: "AdaptRun", method: str) -> dict | None:
    """The guard's decision on ``method`` (for ``semi2i`` with several seeds: on the chosen seed), or None."""
    path = run.path("guard", f"{method}.json")
    choice = run.path("semi2i_choice.json")
    if method == "semi2i" and not path.exists() and choice.exists():
        path = run.path("guard", f"{json.loads(choice.read_text())['chosen']}.json")
    return json.loads(path.read_text()) if path.exists() else None


def prepare_fine_tune(run: "AdaptRun", method: str) -> bool:
    """Whether ``method``'s fine-tune must be trained (its ``unet_<method>.pt`` being absent): not when the guard
    had moved the finished fine-tune aside and stopped before publishing the average (the guard finishes it);
    otherwise yes, and an older decision on this method and its label-free score are forgotten, as they were
    taken on another fine-tune."""
    record, kept = run.path("guard", f"{method}.json"), run.path("guard", f"unet_{method}.pt")
    if kept.exists() and not record.exists():
        return False
    record.unlink(missing_ok=True)
    run.path("label_free", f"{method}.json").unlink(missing_ok=True)
    kept.unlink(missing_ok=True)
    return True


def _restore_fine_tune(run: "AdaptRun", method: str) -> None:
    """Put a fine-tuned U-net that a fallback moved aside back under the method's U-net name (if it was moved)."""
    kept = run.path("guard", f"unet_{method}.pt")
    if kept.exists():
        os.replace(kept, run.unet_path(method))


def _publish_fallback(run: "AdaptRun", method: str, share: float) -> None:
    """Move the fine-tuned U-net aside (once), then publish the fallback (``share`` of the fine-tune's weights,
    the rest the source U-net's) under the method's U-net name."""
    published, kept = run.unet_path(method), run.path("guard", f"unet_{method}.pt")
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(published, kept)
    state = average_weights(load_checkpoint(run.unet_path("source_only")), load_checkpoint(kept), share)
    save_checkpoint(published, state)
