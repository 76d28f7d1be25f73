"""The probes learn what the features carry and nothing more (small widths, seconds on CPU); they train exactly the
same on the lazy feature store as on dense tensors, and each process reads only its own rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_evaluation_features import write_extract_output

from lary.evaluation.classification import (
    PAPER_HEADS,
    AttentiveProbe,
    ClassificationConfig,
    train_classification,
)
from lary.evaluation.features import load_split, one_hot_indices
from lary.evaluation.regression import RegressionConfig, train_regression
from lary.evaluation.training import held_out_split

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


def two_robots(rng, rows: int, w3: np.ndarray, w5: np.ndarray):
    """`rows` rows of each of two robots with dof 3 and 5; the second's actions shifted and scaled."""
    x3, y3 = linear_targets(rng, rows, w3, dof=3)
    x5, y5 = linear_targets(rng, rows, w5, dof=5)
    # per-robot z-scoring must remove the shift and scale
    return torch.cat([x3, x5]), y3 + [action * 10 + 100 for action in y5], ["r3"] * rows + ["r5"] * rows


def test_regression_pads_robot_types_with_different_dof(accelerator):
    rng = np.random.default_rng(3)
    # One probe serves both robots and cannot tell their rows apart, so their first 3 dof follow the same map.
    w5 = rng.normal(size=(32, 2, 5)).astype(np.float32)
    w3, w5 = w5[..., :3].reshape(32, 6), w5.reshape(32, 10)
    (x, actions, robots), (vx, val_actions, val_robots) = two_robots(rng, 512, w3, w5), two_robots(rng, 64, w3, w5)
    config = RegressionConfig(hidden_dim=64, epochs=20, batch_size=32, lr=1e-3)
    result = train_regression(x, actions, vx, val_actions, config, accelerator, robots, val_robots)
    assert set(result.per_robot_mse) == {"r3", "r5"}
    assert len(result.per_dimension_mse) == 5
    r5 = np.concatenate(actions[512:])
    assert np.allclose(result.normalization["r5"]["mean"], r5.mean(0), rtol=1e-4)
    # On rows it never trained on: predicting each robot's train mean scores about 1.0, a probe that learned the
    # linear map well below it.
    assert all(value < 0.3 for value in result.per_robot_mse.values()), result.per_robot_mse
    # r5's dof 3-4 as well (0.36 when r3's zero padding is trained on as targets: the probe cannot tell the rows apart)
    assert max(result.per_dimension_mse) < 0.2, result.per_dimension_mse
    # The same probe fit to shuffled targets learns nothing that transfers: the bound tells the two apart.
    order = rng.permutation(len(actions))
    shuffled = train_regression(x, [actions[i] for i in order], vx, val_actions, config, accelerator,
                                [robots[i] for i in order], val_robots)
    assert all(value > 0.8 for value in shuffled.per_robot_mse.values()), shuffled.per_robot_mse


def stored(tmp_path, name: str, features: np.ndarray, column: str = "latent_actions"):
    """`features` (rows in id order) through `lary extract`'s layout and `load_split`: the lazy store."""
    ids = [f"row{i:05d}" for i in range(len(features))]
    write_extract_output(tmp_path / name, {"id": ids, column: features.tolist()}, shards=3)
    return load_split(tmp_path / name, column, cache_dir=tmp_path / "cache")


def test_store_trains_exactly_like_dense_tensors(accelerator, tmp_path):
    # The in-memory loader handed the probes these dense tensors; the store must give bit-identical runs.
    rng = np.random.default_rng(4)
    prototypes = rng.normal(size=(NUM_CLASSES, 4, 16)).astype(np.float32)
    (x, y), (vx, vy) = labelled_features(rng, 80, prototypes), labelled_features(rng, 40, prototypes)
    config = ClassificationConfig(
        hidden_dim=16, pooler_depth=2, attention_heads=2, epochs=2, batch_size=32, heads=PAPER_HEADS[:2]
    )
    dense = train_classification(x, y, vx, vy, config, accelerator)
    store, val_store = stored(tmp_path, "x", x.numpy()).features, stored(tmp_path, "vx", vx.numpy()).features
    lazy = train_classification(store, y, val_store, vy, config, accelerator)
    assert lazy.history == dense.history
    np.testing.assert_array_equal(lazy.predictions, dense.predictions)

    (x, actions), (vx, val_actions) = linear_targets(rng, 100, None), linear_targets(rng, 30, None)
    config = RegressionConfig(hidden_dim=16, epochs=2, batch_size=32)
    dense = train_regression(x, actions, vx, val_actions, config, accelerator)
    store, val_store = stored(tmp_path, "r", x.numpy()).features, stored(tmp_path, "vr", vx.numpy()).features
    lazy = train_regression(store, actions, val_store, val_actions, config, accelerator)
    assert (lazy.history, lazy.per_dimension_mse) == (dense.history, dense.per_dimension_mse)


def test_one_hot_per_batch_trains_exactly_like_dense_one_hot(accelerator, tmp_path):
    rng = np.random.default_rng(5)
    codes, val_codes = rng.integers(0, 6, (64, 2, 3)), rng.integers(0, 7, (16, 2, 3))  # codebook size from both splits
    labels, val_labels = torch.from_numpy(codes[:, 0, 0] % 2), torch.from_numpy(val_codes[:, 0, 0] % 2)
    train, val = stored(tmp_path, "c", codes, "action_indices"), stored(tmp_path, "vc", val_codes, "action_indices")
    assert one_hot_indices(train, val) == 7
    config = ClassificationConfig(
        hidden_dim=16, pooler_depth=2, attention_heads=2, epochs=2, batch_size=16, heads=PAPER_HEADS[:1]
    )
    one_hot = np.eye(7, dtype=np.float32)  # what the in-memory loader did to the whole split
    dense = train_classification(
        torch.from_numpy(one_hot[codes]), labels, torch.from_numpy(one_hot[val_codes]), val_labels, config, accelerator
    )
    lazy = train_classification(train.features, labels, val.features, val_labels, config, accelerator)
    assert lazy.history == dense.history


class RecordedRows:
    """Dense rows that record which row numbers were read."""

    def __init__(self, rows: torch.Tensor):
        self.rows, self.reads = rows, []
        self.shape = rows.shape

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        self.reads.append(rows.tolist())
        return self.rows[rows]


def test_a_process_reads_only_its_share_of_each_batch(monkeypatch):
    # Process 1 of 2 (patched onto a single-process Accelerator: only the row bookkeeping is under test).
    monkeypatch.setattr(Accelerator, "process_index", property(lambda self: 1))
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    rng = np.random.default_rng(6)
    (x, actions), (vx, val_actions) = linear_targets(rng, 64, None), linear_targets(rng, 20, None)
    train, val = RecordedRows(x), RecordedRows(vx)
    config = RegressionConfig(hidden_dim=8, epochs=2, batch_size=16)
    train_regression(train, actions, val, val_actions, config, Accelerator(cpu=True))
    assert [len(rows) for rows in train.reads] == [8] * 8  # half of every global batch of 16, 4 steps x 2 epochs
    for epoch in (train.reads[:4], train.reads[4:]):
        assert len({row for rows in epoch for row in rows}) == 32  # distinct rows: a shard of the epoch's permutation
    assert sorted(row for rows in val.reads for row in rows) == sorted([*range(1, 20, 2)] * 2)  # odd rows, each epoch


def test_validation_selection_picks_the_head_and_epoch_on_the_validation_rows(accelerator):
    # LARYBench's protocol and the default: the reported number is the best the validation rows allow.
    rng = np.random.default_rng(7)
    prototypes = rng.normal(size=(NUM_CLASSES, 4, 16)).astype(np.float32)
    config = ClassificationConfig(hidden_dim=16, pooler_depth=2, attention_heads=2, epochs=2, batch_size=32)
    result = train_classification(*labelled_features(rng, 96, prototypes), *labelled_features(rng, 48, prototypes), config, accelerator)
    last = result.history[-1]["validation_accuracy"]
    assert result.selection == {"on": "validation", "head": int(np.argmax(last)), "score": max(last)}
    assert result.accuracy == max(last) and "held_out_accuracy" not in result.history[-1]

    (x, actions), (vx, val_actions) = linear_targets(rng, 96, None), linear_targets(rng, 32, None)
    result = train_regression(x, actions, vx, val_actions, RegressionConfig(hidden_dim=16, epochs=3, batch_size=32), accelerator)
    mse = [entry["validation_mse"] for entry in result.history]
    assert result.selection == {"on": "validation", "epoch": int(np.argmin(mse)) + 1, "score": min(mse)}


def test_held_out_selection_never_trains_on_its_slice_nor_looks_at_validation(accelerator):
    rng = np.random.default_rng(8)
    prototypes = rng.normal(size=(NUM_CLASSES, 4, 16)).astype(np.float32)
    (x, y), (vx, vy) = labelled_features(rng, 200, prototypes, noise=3.0), labelled_features(rng, 64, prototypes, noise=3.0)
    config = ClassificationConfig(hidden_dim=16, pooler_depth=2, attention_heads=2, epochs=3, batch_size=32,
                                  selection="held-out", held_out_fraction=0.25)
    train = RecordedRows(x)
    result = train_classification(train, y, vx, vy, config, accelerator)
    assert {key: result.selection[key] for key in ("held_out_fraction", "held_out_rows", "train_rows")} == {
        "held_out_fraction": 0.25, "held_out_rows": 50, "train_rows": 150}
    # The slice is read only to score it, once an epoch, never in a training batch.
    _, held = held_out_split(200, 0.25, config.seed)
    held = set(held.tolist())
    scoring = [rows for rows in train.reads if set(rows) <= held]
    assert sorted(sum(scoring, [])) == sorted(list(held) * config.epochs)
    assert all(not set(rows) & held for rows in train.reads if rows not in scoring)

    last = result.history[-1]
    assert result.best_head == result.selection["head"] == int(np.argmax(last["held_out_accuracy"]))
    assert result.selection["score"] == max(last["held_out_accuracy"])
    assert result.accuracy == last["validation_accuracy"][result.best_head]
    # Nothing about the validation rows reaches the choice: other validation labels, the same choice and scores.
    other = train_classification(x, y, vx, (vy + 1) % NUM_CLASSES, config, accelerator)
    assert other.selection == result.selection
    assert [e["held_out_accuracy"] for e in other.history] == [e["held_out_accuracy"] for e in result.history]


def test_held_out_selection_of_the_regression_epoch(accelerator):
    rng = np.random.default_rng(9)
    weights = rng.normal(size=(32, 6)).astype(np.float32)
    (x, actions), (vx, val_actions) = linear_targets(rng, 160, weights), linear_targets(rng, 32, weights)
    config = RegressionConfig(hidden_dim=32, epochs=4, batch_size=32, lr=1e-3, selection="held-out")
    train = RecordedRows(x)
    result = train_regression(train, actions, vx, val_actions, config, accelerator)
    assert (result.selection["held_out_rows"], result.selection["train_rows"]) == (16, 144)
    _, held = held_out_split(160, 0.1, config.seed)
    assert sum((rows for rows in train.reads if set(rows) <= set(held.tolist())), []) == held.tolist() * config.epochs
    scores = [entry["held_out_mse"] for entry in result.history]
    assert result.best_epoch == result.selection["epoch"] == int(np.argmin(scores)) + 1
    assert result.selection["score"] == min(scores)
    assert result.mse == result.history[result.best_epoch - 1]["validation_mse"]
    # Normalized with all train rows either way: the same units as validation selection.
    assert result.normalization == train_regression(x, actions, vx, val_actions, RegressionConfig(epochs=1, hidden_dim=8), accelerator).normalization
    shifted = train_regression(x, actions, vx, [a + 1 for a in val_actions], config, accelerator)
    assert shifted.selection == result.selection
