"""Ray Tune sweeps of SemI2I's loss weights λ1-λ4 and decay epoch, with ASHA early stopping (``jobs/tune.py``).

One sweep lives in one run folder::

    shared/                      ingest + source-only U-net, computed once for all trials (AdaptRun stages)
                                 and the source-only baseline's score on the target (when it has labels)
    trials/<trial id>/           each trial's own files: semi2i.pt, ray/ (its Ray Train runs), tensorboard/,
                                 rung<k>/metrics.json (+ the last rung's stylized source, U-net and maps)
    tune/sweep/                  Ray Tune's experiment state: Tuner.restore resumes an interrupted sweep
    results.csv, results.md      one row per trial, sorted by the objective
    rungs.csv                    every rung of every trial (mIoU beside the label-free score and the proxy)
    best.yaml                    the winner as a ready-to-use adapt config (overrides.semi2i)

A trial is a plain Tune function (the *driver*, ``driver_cpus`` CPUs) that, rung by rung, launches
Ray Train ``TorchTrainer`` runs through :func:`fit_semi2i` / :func:`fit_unet` (workers x 1 CPU or 1 GPU,
in their own placement group) and reports the rung's objective with ``ray.tune.report``:

1. continue SemI2I training for ``epochs_per_rung`` epochs (Ray Train resumes the trial's own run);
2. stylize the source (at most ``stylize_rasters`` rasters, evenly spread) with the trial's generator;
3. fine-tune the shared source U-net on it for ``finetune_steps``;
4. segment the target (the region-mapping code path), score it when it has labels, and compute the
   label-free score (:mod:`semi2i.domain_distance`, the objective without labels) and the older
   unsupervised proxy (:func:`style_distance` + :func:`structure_loss`);
5. ``tune.report({"miou", "label_free", "proxy", ...}, checkpoint=<rung number>)``: ASHA compares trials at each rung.

The objective is computed by the driver after the Train run, so the driver reports to Tune itself; Ray
Train's per-step reports (losses) stay in the trial's TensorBoard logs, not in Tune (Train V2's
``ray.tune.integration.ray_train.TuneReportCallback`` would forward them as Tune iterations and
confuse ASHA's rung counting).

Resources: Train V2 workers are not part of the Tune trial's reservation, so a trial needs
``driver_cpus + workers`` CPUs (``driver_cpus`` and ``workers`` GPUs with ``gpu``) at the same time, and at
most ``cluster // per-trial`` trials may run at once; more would deadlock (every driver holding a CPU its
trainer's workers wait for). :func:`plan_concurrency` enforces this before anything starts.

The modules, in dependency order: :mod:`~semi2i.tuning.settings` (the ``tune:`` section),
:mod:`~semi2i.tuning.resources` (what fits at once), :mod:`~semi2i.tuning.sweep` (one sweep, its shared
stages), :mod:`~semi2i.tuning.proxy` (the unsupervised proxy), :mod:`~semi2i.tuning.outputs` (tables and
files), :mod:`~semi2i.tuning.rung` (one rung of a trial), :mod:`~semi2i.tuning.tuner` (Ray Tune).
"""
