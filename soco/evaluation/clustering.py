"""Clustering metrics for CoKe's heads: accuracy under the best one-to-one matching of clusters
to classes (Hungarian, scipy's linear_sum_assignment), NMI and ARI (scikit-learn)."""

from typing import Dict

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["clustering_accuracy", "clustering_metrics"]


def clustering_accuracy(labels, clusters) -> float:
    """Fraction of items whose cluster maps to their class under the best one-to-one matching.

    labels, clusters: (N,) integer arrays. With more clusters than classes, unmatched clusters
    count as wrong (the SCAN / CoKe protocol evaluates the head whose K equals the class count).
    """
    labels, clusters = np.asarray(labels, dtype=np.int64), np.asarray(clusters, dtype=np.int64)
    if labels.shape != clusters.shape or labels.ndim != 1:
        raise ValueError(f"clustering_accuracy: labels {labels.shape} and clusters {clusters.shape} must be equal 1-D")
    _, label_ids = np.unique(labels, return_inverse=True)
    _, cluster_ids = np.unique(clusters, return_inverse=True)
    counts = np.zeros((cluster_ids.max() + 1, label_ids.max() + 1), dtype=np.int64)
    np.add.at(counts, (cluster_ids, label_ids), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum()) / len(labels)


def clustering_metrics(labels, clusters) -> Dict[str, float]:
    """{"acc", "nmi", "ari"} of a clustering against ground-truth labels (fractions)."""
    return {
        "acc": clustering_accuracy(labels, clusters),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }
