"""K SemI2I generators per run (``semi2i.seeds``) and the label-free choice among them.

A GAN's result depends on its seed (on the Dubai main pair two seeds of one setting gave 46.9 and 28.0
target mIoU), and a user without target labels cannot see which draw they got. So the run trains K
generators (seeds ``seed + 1000·k``: k = 0 is the generator a one-seed run trains), stylizes, fine-tunes
and maps with each as its own method ``semi2i_seed<k>``, then chooses one **without target labels**:
seeds whose stylized source inverted the tones are rejected, and of the rest the **medoid** wins, the
seed whose target map agrees best (mean IoU of map against map) with the other kept seeds' maps. The
draws of one method that fail (an inversion the tone check missed, invented content) fail each in their
own way, so the typical draw is the safe one: the choice trims the lottery's bad tail; it does not
promise the best draw. With two kept seeds the medoid cannot tell them apart and the lower k is kept:
use K >= 3. Why the medoid and not the label-free score (``label_free``): neither rule has shown it is the
better one. On groups of three finished Dubai runs both kept a run above the group's mean
(``studies/seed_medoid.py``); the score's picks fell below the mean on the older mild-pair groups
(``studies/seed_pick.py``); inside one K = 3 reverse-pair run the score kept the best seed and the medoid
the middle one (docs/label-free-selection.md). The medoid asks less of a score (avoid the outlier). The choice is published under the names a one-seed run uses (``semi2i.pt``,
``unet_semi2i.pt``, ``stylized/semi2i``, ``maps/semi2i``, ``scores/semi2i.json``, as hard links), so
map_region, previews and report readers see one SemI2I.
``semi2i_choice.json`` records the choice; it is written last, so an interrupted publish is redone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from semi2i.reuse import link_or_copy

if TYPE_CHECKING:
    from semi2i.pipeline import AdaptRun

log = logging.getLogger(__name__)

SEED_STRIDE = 1000
PREFIX = "semi2i_seed"


def seed_methods(k: int) -> list[str]:
    """The SemI2I method names of a run with ``k`` seeds: ``["semi2i"]`` for one, else one per seed."""
    return ["semi2i"] if k <= 1 else [f"{PREFIX}{i}" for i in range(k)]


def is_seed_method(method: str) -> bool:
    return method.startswith(PREFIX) and method[len(PREFIX):].isdigit()


def base_method(method: str) -> str:
    """``semi2i_seed<k>`` → ``semi2i`` (the stylizer it uses); any other name is its own."""
    return "semi2i" if is_seed_method(method) else method


def seed_of(base_seed: int, method: str) -> int:
    return base_seed + SEED_STRIDE * int(method[len(PREFIX):]) if is_seed_method(method) else base_seed


def seed_trainings(run: "AdaptRun", fit: Callable[..., Any]) -> list[tuple[str, Callable[[Any], None]]]:
    """One training per missing ``semi2i_seed<k>.pt`` (the adapt run trains them alongside its other models,
    :mod:`semi2i.trainings`)."""
    source, target = run.store("source"), run.store("target")
    todo = [m for m in seed_methods(run.cfg.profile.semi2i.seeds) if not run.path(f"{m}.pt").exists()]

    def training(method: str) -> Callable[[Any], None]:
        cfg = dataclasses.replace(run.cfg.profile.semi2i, seed=seed_of(run.cfg.seed, method))
        return lambda scaling: fit(cfg, source.path, target.path, run.run_dir, overlap=run.cfg.profile.overlap,
                                   scaling=scaling, name=method)

    return [(m, training(m)) for m in todo]


def kept_seeds(candidates: list[str], tone: dict[str, float | None]) -> list[str]:
    """The seeds whose stylized source kept the tone order (all of them if none did)."""
    from semi2i.diagnostics import INVERTED_BELOW

    return [m for m in candidates if tone[m] is None or tone[m] >= INVERTED_BELOW] or list(candidates)


def medoid(kept: list[str], agreement: dict[str, float]) -> str:
    """The seed with the highest mean agreement with the others; ties go to the lower k."""
    return max(kept, key=lambda m: (agreement.get(m, 0.0), -kept.index(m)))


def seed_agreement(run: "AdaptRun", seeds: list[str]) -> dict[str, float]:
    """Each seed's mean agreement (mIoU of map against map) with the other seeds' target maps."""
    from semi2i.selection import agreement_matrix, agreement_scores

    target = run.store("target")
    names, matrix = agreement_matrix({m: _TargetMaps(run, m) for m in seeds}, target.num_classes)
    return {m: round(v["mean"], 4) for m, v in agreement_scores(names, matrix).items()}


def choose(run: "AdaptRun", candidates: list[str]) -> dict:
    """Pick the seed to use without target labels (tone check, then the medoid), publish it under the
    one-seed names and record the choice in ``semi2i_choice.json``."""
    record_path = run.path("semi2i_choice.json")
    if record_path.exists():
        return json.loads(record_path.read_text())
    tone = {m: run.tone_check(m) for m in candidates}
    kept = kept_seeds(candidates, tone)
    agreement = seed_agreement(run, kept) if len(kept) > 1 else {}
    chosen = medoid(kept, agreement)
    record = {
        "chosen": chosen,
        "seed": seed_of(run.cfg.seed, chosen),
        "criterion": ("medoid: the kept seed whose target map agrees best with the other kept seeds' maps "
                      "(seeds whose tone order is < 0 are not kept)"),
        "agreement": agreement,
        "tone_order": tone,
        "rejected_inverted": [m for m in candidates if m not in kept],
    }
    _publish(run, chosen)
    tmp = record_path.with_name(f".{record_path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, record_path)
    log.info("semi2i: chose %s (agreement %s) of %s", chosen, agreement.get(chosen), ", ".join(candidates))
    return record


class _TargetMaps(Sequence):
    """One method's class maps of the target rasters, read on indexing (one raster in memory at a time)."""

    def __init__(self, run: "AdaptRun", method: str):
        self.run, self.method = run, method
        self.rasters = [r.id for r in run.store("target").rasters]

    def __len__(self) -> int:
        return len(self.rasters)

    def __getitem__(self, index: int) -> Any:
        from semi2i.mapping import read_classes

        return read_classes(self.run.path("maps", self.method), self.rasters[index])


def _publish(run: "AdaptRun", chosen: str) -> None:
    """Hard-link the chosen seed's outputs to the names a one-seed run writes (a copy where links fail)."""
    for src, dst in ((f"{chosen}.pt", "semi2i.pt"), (f"unet_{chosen}.pt", "unet_semi2i.pt")):
        _link_file(run.path(src), run.path(dst))
    for folder in ("stylized", "maps"):
        src, dst = run.path(folder, chosen), run.path(folder, "semi2i")
        if src.exists():
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, copy_function=link_or_copy)
            shutil.rmtree(dst, ignore_errors=True)
            os.replace(tmp, dst)
    score = run.path("scores", f"{chosen}.json")
    if score.exists():
        data = {**json.loads(score.read_text()), "method": "semi2i", "chosen_from": chosen}
        tmp = run.path("scores", ".semi2i.json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, run.path("scores", "semi2i.json"))


def _link_file(src: Path, dst: Path) -> None:
    if not src.exists():
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    link_or_copy(src, tmp)
    os.replace(tmp, dst)
