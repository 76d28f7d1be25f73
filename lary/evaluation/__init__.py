"""LARY probes over extracted latent actions (or encoder features): classification and regression."""

from .classification import AttentiveProbe, ClassificationConfig, train_classification
from .features import ExtractedSplit, load_split
from .regression import MLPResNet, RegressionConfig, train_regression

__all__ = [
    "AttentiveProbe",
    "ClassificationConfig",
    "ExtractedSplit",
    "MLPResNet",
    "RegressionConfig",
    "load_split",
    "train_classification",
    "train_regression",
]
