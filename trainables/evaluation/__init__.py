"""Metrics on frozen features and classifier outputs: pure functions of tensors.

Defined once here; online evaluation during training and the offline analysis both call them.
"""

from trainables.evaluation.calibration import expected_calibration_error
from trainables.evaluation.features import (
    alignment,
    classwise_uniformity,
    feature_distance_matrix,
    geometry_scalars,
    uniformity,
)
from trainables.evaluation.knn import knn_accuracy, knn_predict, knn_scores
from trainables.evaluation.probe import linear_probe

__all__ = [
    "alignment",
    "classwise_uniformity",
    "expected_calibration_error",
    "feature_distance_matrix",
    "geometry_scalars",
    "knn_accuracy",
    "knn_predict",
    "knn_scores",
    "linear_probe",
    "uniformity",
]
