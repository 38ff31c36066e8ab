"""Metrics over embeddings: property silhouettes, NR-Prec, embedding-space and retrieval metrics.

Plain functions over arrays (numpy or torch); bad input raises CarprobeError. Tables are tidy:
columns `model, factor, subset, metric, value` (+ extra columns where needed).
"""

from .bootstrap import bootstrap_mean_ci
from .factors import (FactorTables, check_bins, continuous_factors, factor_columns, factor_labels,
                      silhouette_by_factor)
from .nrprec import SIGNIFICANT_Z, NRPrecision, bin_factor, nr_precision
from .retrieval import nmi_kmeans, retrieval_metrics
from .silhouette import (
    DEFAULT_SAMPLE_SIZE,
    EXACT_EUCLIDEAN_MAX_ROWS,
    SilhouetteEstimate,
    silhouette_estimate,
    silhouette_samples,
    silhouette_score,
)
from .space import class_distances, embedding_space_metrics, singular_values, spectral_decay, spectral_decay_of

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "EXACT_EUCLIDEAN_MAX_ROWS",
    "FactorTables",
    "NRPrecision",
    "SIGNIFICANT_Z",
    "SilhouetteEstimate",
    "bin_factor",
    "bootstrap_mean_ci",
    "check_bins",
    "continuous_factors",
    "class_distances",
    "embedding_space_metrics",
    "factor_columns",
    "factor_labels",
    "nmi_kmeans",
    "nr_precision",
    "retrieval_metrics",
    "silhouette_by_factor",
    "silhouette_estimate",
    "silhouette_samples",
    "silhouette_score",
    "singular_values",
    "spectral_decay",
    "spectral_decay_of",
]
