"""Representation evaluation: weighted kNN, linear probe on frozen features, clustering metrics."""

from .clustering import clustering_accuracy, clustering_metrics
from .knn import knn_accuracy, knn_predict
from .linear_probe import linear_probe_accuracy, train_linear_probe

__all__ = [
    "clustering_accuracy", "clustering_metrics", "knn_accuracy", "knn_predict",
    "linear_probe_accuracy", "train_linear_probe",
]
