"""The probes learn what the features carry and nothing more (small widths, seconds on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from lary.evaluation.classification import AttentiveProbe, ClassificationConfig, train_classification
from lary.evaluation.regression import RegressionConfig, train_regression

NUM_CLASSES = 4
SMALL_CLASSIFIER = ClassificationConfig(hidden_dim=32, pooler_depth=2, attention_heads=4, epochs=5, batch_size=32)
SMALL_REGRESSOR = RegressionConfig(hidden_dim=128, epochs=20, batch_size=64, lr=1e-3)


@pytest.fixture(scope="module")
def accelerator() -> Accelerator:
    return Accelerator(cpu=True)


def labelled_features(rng, rows: int, prototypes: np.ndarray | None, noise: float = 1.0):
    labels = rng.integers(0, NUM_CLASSES, rows)
    features = noise * rng.normal(size=(rows, 4, 16)).astype(np.float32)
    if prototypes is not None:
        features += prototypes[labels]
    return torch.from_numpy(features), torch.from_numpy(labels)


def test_classification_reaches_95_percent_when_features_carry_the_label(accelerator):
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(NUM_CLASSES, 4, 16)).astype(np.float32)
    result = train_classification(
        *labelled_features(rng, 256, prototypes), *labelled_features(rng, 128, prototypes), SMALL_CLASSIFIER, accelerator
    )
    assert result.accuracy >= 0.95
    assert len(result.history) == 5 and len(result.history[-1]["validation_accuracy"]) == 5
    assert result.accuracy == max(result.history[-1]["validation_accuracy"])


def test_classification_stays_near_chance_on_random_features(accelerator):
    rng = np.random.default_rng(1)
    result = train_classification(
        *labelled_features(rng, 256, None), *labelled_features(rng, 256, None), SMALL_CLASSIFIER, accelerator
    )
    assert result.accuracy < 0.4  # chance is 0.25


def test_temporal_embedding_tells_pair_order_apart(accelerator):
    # Class 0 is (A, B) over the two pairs of a clip, class 1 is (B, A): the same tokens, only their order differs.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 1, 3, 16)).astype(np.float32)

    def clips(rows):
        labels = rng.integers(0, 2, rows)
        features = np.where(labels[:, None, None, None] == 0, np.concatenate([a, b]), np.concatenate([b, a]))
        features = features + 0.3 * rng.normal(size=features.shape).astype(np.float32)
        return torch.from_numpy(features.astype(np.float32)), torch.from_numpy(labels)

    config = ClassificationConfig(hidden_dim=32, pooler_depth=2, attention_heads=4, epochs=20, batch_size=32, heads=((3e-3, 0.01),))
    result = train_classification(*clips(256), *clips(128), config, accelerator)
    assert result.accuracy >= 0.95


def test_probe_accepts_pairs_and_clips():
    config = ClassificationConfig(hidden_dim=16, pooler_depth=3, attention_heads=2)
    assert AttentiveProbe(8, 5, 1, config)(torch.randn(2, 6, 8)).shape == (2, 5)
    assert AttentiveProbe(8, 5, 3, config)(torch.randn(2, 3, 6, 8)).shape == (2, 5)


def linear_targets(rng, rows: int, weights: np.ndarray | None, dof: int = 3):
    # Rows standardized to mean 0, std 1: the probe's input LayerNorm then keeps all of their information.
    features = rng.normal(size=(rows, 32)).astype(np.float32)
    features = (features - features.mean(1, keepdims=True)) / features.std(1, keepdims=True)
    targets = features @ weights if weights is not None else rng.normal(size=(rows, 2 * dof))
    return torch.from_numpy(features.reshape(rows, 2, 16)), list(targets.astype(np.float32).reshape(rows, 2, dof))


def test_regression_mse_below_0_1_for_linear_targets(accelerator):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(32, 6)).astype(np.float32)
    result = train_regression(
        *linear_targets(rng, 2048, weights), *linear_targets(rng, 256, weights), SMALL_REGRESSOR, accelerator
    )
    assert result.mse < 0.1
    assert result.mse == min(entry["validation_mse"] for entry in result.history)
    assert len(result.per_dimension_mse) == 3


def test_regression_mse_near_1_on_random_features(accelerator):
    rng = np.random.default_rng(1)
    result = train_regression(*linear_targets(rng, 1024, None), *linear_targets(rng, 256, None), SMALL_REGRESSOR, accelerator)
    assert 0.8 < result.mse < 1.3


def test_regression_pads_robot_types_with_different_dof(accelerator):
    rng = np.random.default_rng(3)
    w3, w5 = rng.normal(size=(32, 6)).astype(np.float32), rng.normal(size=(32, 10)).astype(np.float32)
    x3, y3 = linear_targets(rng, 64, w3, dof=3)
    x5, y5 = linear_targets(rng, 64, w5, dof=5)
    # Shift one robot's actions: per-robot z-scoring must remove it.
    y5 = [action * 10 + 100 for action in y5]
    features, actions, robots = torch.cat([x3, x5]), y3 + y5, ["r3"] * 64 + ["r5"] * 64
    config = RegressionConfig(hidden_dim=32, epochs=2, batch_size=32)
    result = train_regression(features, actions, features, actions, config, accelerator, robots, robots)
    assert set(result.per_robot_mse) == {"r3", "r5"}
    assert len(result.per_dimension_mse) == 5
    assert np.allclose(result.normalization["r5"]["mean"], np.concatenate(y5).mean(0), rtol=1e-4)
    assert all(value < 10 for value in result.per_robot_mse.values())
