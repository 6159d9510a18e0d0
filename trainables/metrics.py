"""Every value a trial reports, named once: when it comes and where it is recorded.

``run_trial`` reports one dict per epoch (the last one with the final metrics and ``done``);
each key is declared here. The MLflow writer (``sweeps.tracking``) logs by these declarations,
analysis and the sweep CLI read by these names, and ``tests/trainables/test_metrics.py`` runs
real trials and fails on any reported key that is not declared, so a new metric is one function
that returns it plus one line below. No torch, no Ray: every layer may import it.

``when``: ``epoch`` (every epoch's report), ``eval`` (evaluation epochs and the final report),
``final`` (the final report only).
``record``: ``metric`` (an MLflow metric, step = epoch), ``final`` (only in the run's
``final_metrics.json``), ``artifact`` (a JSON artifact of its own, ``<name>.json``), ``tag`` (an
MLflow tag, set once per launch), ``step`` (the step itself), ``internal`` (bookkeeping, not
recorded). Per-class values ``<name>/<class>`` of ``PER_CLASS`` go to ``per_class.json``.
"""

from __future__ import annotations

import dataclasses

from trainables import schema

EPOCH, EVAL, FINAL = "epoch", "eval", "final"
RECORDS = ("metric", "final", "artifact", "tag", "step", "internal")


@dataclasses.dataclass(frozen=True)
class Reported:
    """One key of ``run_trial``'s reports."""

    name: str
    when: str
    record: str
    meaning: str
    every_method: bool = True  # False: only the methods (or settings) that compute it report it


REPORTED: dict[str, Reported] = {
    r.name: r
    for r in (
        Reported("epoch", EPOCH, "step", "epochs done (1-based); MLflow's step"),
        Reported("loss", EPOCH, "metric", "the method's training loss, mean over the epoch's steps"),
        Reported("lr", EPOCH, "metric", "learning rate at the epoch's last step"),
        Reported(
            "samples_per_s", EPOCH, "metric", "training images per second (a two-view method counts each image once)"
        ),
        Reported("epoch_time_s", EPOCH, "metric", "wall seconds of the epoch's training steps"),
        Reported(
            "train_acc", EPOCH, "metric", "supervised: top-1 (%) on the augmented training batches, epoch mean", False
        ),
        Reported("momentum", EPOCH, "metric", "MoCo: the key encoder's EMA momentum, epoch mean", False),
        Reported("memory_format", EPOCH, "tag", "channels_last or contiguous (trainables.memory_format)"),
        Reported("memory_format_reason", EPOCH, "tag", "why that memory format on this machine"),
        Reported("knn_acc", EVAL, "metric", "weighted kNN top-1 (%) on the evaluation-corrupted test split"),
        Reported("knn_acc_study", EVAL, "metric", "the study's kNN (solo-learn's: k 200, euclidean) (%)"),
        Reported("uniformity", EVAL, "metric", "uniformity of the normalised test features (higher: more uniform)"),
        Reported("classwise_uniformity_mean", EVAL, "metric", "class-wise uniformity, mean over classes"),
        Reported("intra_distance", EVAL, "metric", "mean squared distance within a class, mean over classes"),
        Reported("inter_distance", EVAL, "metric", "mean squared distance between classes, mean over classes"),
        Reported("knn_acc_init", EVAL, "metric", "with eval.knn_at_init: kNN (%) of the untrained network", False),
        Reported("knn_gain", EVAL, "metric", "with eval.knn_at_init: knn_acc - knn_acc_init (points)", False),
        Reported("probe_acc", FINAL, "metric", "with eval.probe: linear probe top-1 (%) on frozen features", False),
        Reported("ece", FINAL, "metric", "with eval.probe: the probe's expected calibration error", False),
        Reported(
            "finetune_acc",
            FINAL,
            "metric",
            "with eval.finetune: top-1 (%) of the whole network fine-tuned with a new linear head",
            False,
        ),
        Reported("finetune_loss", FINAL, "metric", "with eval.finetune: fine-tuning loss, last epoch's mean", False),
        Reported("alignment", FINAL, "metric", "alignment of two augmented views' normalised features"),
        Reported("train_time_s", FINAL, "metric", "wall seconds of the whole training"),
        Reported("final_eval_s", FINAL, "metric", "wall seconds of the final evaluation (IEEE fp32 features)"),
        Reported("classwise_uniformity", FINAL, "artifact", "(C,) uniformity of each class's features"),
        Reported("feature_distance", FINAL, "artifact", "(C, C) mean squared distance between classes' features"),
        Reported("device", FINAL, "final", "the device the trial ran on"),
        Reported("precision", FINAL, "final", "fp32 or bf16 as resolved on that device"),
        Reported("eval_precision", FINAL, "final", "ieee-fp32: the final metrics' features (knn_acc_init's too)"),
        Reported("n_test", FINAL, "final", "evaluated test images"),
        Reported("image_size", FINAL, "final", "image side in pixels"),
        Reported("done", FINAL, "internal", "True on the final report"),
    )
}
# Names the other layers read (analysis, the sweep CLI): each is a declared key (checked below).
LOSS, KNN_ACC, KNN_ACC_STUDY, PROBE_ACC, UNIFORMITY, ECE, FINETUNE_ACC = (
    "loss",
    "knn_acc",
    "knn_acc_study",
    "probe_acc",
    "uniformity",
    "ece",
    "finetune_acc",
)
CLASSWISE_UNIFORMITY, FEATURE_DISTANCE = "classwise_uniformity", "feature_distance"
INTRA_DISTANCE, INTER_DISTANCE = "intra_distance", "inter_distance"
_NAMED = (
    LOSS,
    KNN_ACC,
    KNN_ACC_STUDY,
    PROBE_ACC,
    UNIFORMITY,
    ECE,
    FINETUNE_ACC,
    CLASSWISE_UNIFORMITY,
    FEATURE_DISTANCE,
    INTRA_DISTANCE,
    INTER_DISTANCE,
)
assert set(_NAMED) <= set(REPORTED), sorted(set(_NAMED) - set(REPORTED))
# Per-class values, reported as "<name>/<class index>" at every evaluation (C per name).
PER_CLASS = (CLASSWISE_UNIFORMITY, INTRA_DISTANCE, INTER_DISTANCE)
PER_CLASS_ARTIFACT = schema.PER_CLASS_ARTIFACT
# Keys the runtime adds to a report (Ray Tune's bookkeeping, the adapter's replay mark): not the trial's.
RUNTIME = frozenset(
    {
        "replayed",
        "node_id",
        "trial_id",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "training_iteration",
        "date",
        "hostname",
        "pid",
        "config",
        "checkpoint_dir_name",
        "should_checkpoint",
        "iterations_since_restore",
        "time_since_restore",
        "experiment_tag",
    }
)


def names(record: str | None = None, when: str | None = None, every_method: bool | None = None) -> tuple[str, ...]:
    """Declared names, filtered by how they are recorded, when they come, and whether every trial reports them."""
    return tuple(
        r.name
        for r in REPORTED.values()
        if (record is None or r.record == record)
        and (when is None or r.when == when)
        and (every_method is None or r.every_method == every_method)
    )


def per_class_name(key: str) -> str | None:
    """``intra_distance`` for ``intra_distance/3``; None for any other key."""
    name, slash, label = key.partition("/")
    return name if slash and name in PER_CLASS and label.isdigit() else None


def undeclared(keys) -> list[str]:
    """The keys of a report that are neither declared, per-class, nor the runtime's (sorted)."""
    return sorted(k for k in keys if k not in REPORTED and per_class_name(k) is None and k not in RUNTIME)
