"""`lary evaluate`'s controls beside its numbers (majority class or mean predictor; the same probe on shuffled
targets), splits that name both sides, `--split-by clip` stratified by class for classification, and the expected
time said after a few steps, with what would make it quicker."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from test_evaluation_cli import SMALL_CLASSIFIER, SMALL_REGRESSOR, classification_split, regression_split
from test_evaluation_features import write_extract_output

from lary.cli import main as lary_main
from lary.configs.evaluate import EvaluateConfig
from lary.evaluation.evaluate import quicker
from lary.evaluation.features import load_split, split_by_groups
from lary.evaluation.training import TIMED_STEPS, train_epochs, warmup_constant

SOURCES = ["kitchen", "lab", "office", "yard"]


def evaluate(tmp_path: Path, *args: str) -> dict:
    assert lary_main(["evaluate", *args, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                      "--cpu"]) == 0
    return json.loads((tmp_path / "out" / "results.json").read_text())


def source_clips(root: Path, clips_per_source: dict[str, int], pairs: int = 3) -> Path:
    """Clips named `SOURCE/clip_J.mp4`, `pairs` rows each, labelled by their source (which the features carry)."""
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(len(SOURCES), 4, 8))
    ids, labels = [], []
    for label, source in enumerate(SOURCES):
        for clip in range(clips_per_source.get(source, 0)):
            ids += [f"{source}/clip_{clip}.mp4"] * pairs
            labels += [label] * pairs
    features = prototypes[labels] + 0.3 * rng.normal(size=(len(ids), 4, 8))
    return write_extract_output(root, {"id": ids, "latent_actions": features.astype(np.float32).tolist(), "label": labels},
                                label_names=SOURCES)


def test_clip_split_is_stratified_by_class_and_names_both_sides(tmp_path, caplog):
    folder = source_clips(tmp_path / "clips", dict.fromkeys(SOURCES, 4))
    whole = load_split(folder, target="label", group="id", cache_dir=tmp_path / "cache")
    # Unstratified, seed 0 leaves one source without a validation clip (an all-zero confusion row)...
    _, validation, _ = split_by_groups(whole, 0.2, 0)
    assert len(set(validation.labels.tolist())) < len(SOURCES)
    # ...which `lary evaluate --split-by clip` does not: one clip of each source is held out.
    with caplog.at_level(logging.WARNING):
        results = evaluate(tmp_path, "--task", "classification", "--data", str(folder), "--split-by", "clip", "--epochs",
                           "2", "--no-shuffled-control", *SMALL_CLASSIFIER)
    split = results["splits"]["split"]
    assert split["stratified_by"] == "label" and split["split_by"] == "id"
    assert sorted(name.split("/")[0] for name in split["validation_groups"]) == SOURCES
    assert len(split["train_groups"]) == 12 and not set(split["train_groups"]) & set(split["validation_groups"])
    assert all(sum(row) == 3 for row in results["confusion_matrix"])
    assert results["warnings"] == [] and not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_class_without_validation_sample_is_warned(tmp_path, caplog):
    folder = source_clips(tmp_path / "clips", {"kitchen": 4, "lab": 4, "office": 4, "yard": 1})
    with caplog.at_level(logging.WARNING):
        results = evaluate(tmp_path, "--task", "classification", "--data", str(folder), "--epochs", "1",
                           "--no-shuffled-control", *SMALL_CLASSIFIER)
    assert "yard/clip_0.mp4" in results["splits"]["split"]["train_groups"]
    assert results["confusion_matrix"][3] == [0, 0, 0, 0]
    assert results["warnings"] == [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert results["warnings"][0].startswith("no validation sample of class(es) 'yard':")


def test_classification_controls_sit_beside_the_accuracy(tmp_path, caplog, capsys):
    train, val = classification_split(tmp_path, "train", 192, 1), classification_split(tmp_path, "validation", 96, 2)
    with caplog.at_level(logging.INFO):
        results = evaluate(tmp_path, "--task", "classification", "--train", str(train), "--validation", str(val),
                           "--epochs", "4", *SMALL_CLASSIFIER)
    labels = load_split(train, target="label", cache_dir=tmp_path / "c").labels
    val_labels = load_split(val, target="label", cache_dir=tmp_path / "c").labels
    majority = int(np.bincount(labels).argmax())
    controls = results["controls"]
    assert controls["majority_class"] == {"class": results["label_names"][majority],
                                          "value": float(np.mean(val_labels == majority))}
    assert results["value"] >= 0.95 and controls["shuffled_targets"]["value"] < 0.6  # 3 classes: chance is 1/3
    assert controls["shuffled_targets"]["seed"] == 0
    assert "(controls: majority class " in capsys.readouterr().out
    # what will be trained, then its expected time, for the probe and then for its control
    said = [message for message in caplog.messages if message.startswith(("training the", "expected time"))]
    assert [message.split(":")[0] for message in said] == [
        "training the classification probe", "expected time of the probe",
        "training the classification shuffled-target control", "expected time of the shuffled-target control",
    ]
    # what makes it quicker, of what this run does not already use (4 epochs, a 32-wide 2-block pooler: one head)
    assert "(24 steps of " in said[1] and said[1].endswith("; quicker: one head instead of 5 (--lr 1e-3 --weight-decay 0.4)")
    assert "--no-shuffled-control skips it" in said[1]


def test_regression_controls_mean_predictor_and_shuffled_targets(tmp_path):
    train, val = regression_split(tmp_path, "train", 300, 1), regression_split(tmp_path, "validation", 60, 2)
    results = evaluate(tmp_path, "--task", "regression", "--train", str(train), "--validation", str(val), "--epochs", "6",
                       *SMALL_REGRESSOR)
    mean, shuffled = results["controls"]["mean_predictor"]["value"], results["controls"]["shuffled_targets"]["value"]
    assert 0.7 < mean < 1.5  # z-scored targets: about their variance
    assert results["value"] < 0.3 * mean and shuffled > 0.8 * mean
    assert results["splits"]["split"] is None


def test_expected_time_counts_every_step_of_every_epoch():
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant(0))
    features = torch.randn(50, 3)
    calls = []

    def loss(outputs, rows, batch):
        return outputs.square().mean(), [len(rows)]

    epochs = train_epochs(model, optimizer, scheduler, features, loss, 3, 8, accelerator, torch.Generator().manual_seed(0),
                          on_estimate=lambda seconds, steps: calls.append((seconds > 0, steps)))
    assert [sums for _, sums in epochs] == [[50.0]] * 3
    assert calls == [(True, 3 * 7)]  # once, after steps 2 to TIMED_STEPS + 1 were timed
    short = train_epochs(model, optimizer, scheduler, features, loss, 1, 50 // TIMED_STEPS, accelerator,
                         torch.Generator().manual_seed(0), on_estimate=lambda *_: pytest.fail("a run this short"))
    assert len(list(short)) == 1


def test_quicker_suggests_only_what_the_run_does_not_use(tmp_path):
    def hints(*args: str) -> list[str]:
        return quicker(EvaluateConfig(out=tmp_path, data=tmp_path, **dict(zip(args[::2], args[1::2]))))

    assert hints("task", "classification") == [
        "fewer epochs (--epochs 5)", "one head instead of 5 (--lr 1e-3 --weight-decay 0.4)",
        "a narrower probe (--hidden-dim 256 --pooler-depth 2)"]
    assert hints("task", "classification", "epochs", 5, "lr", [1e-3], "weight_decay", [0.4], "hidden_dim", 256,
                 "pooler_depth", 2) == []
    assert hints("task", "classification", "hidden_dim", 128) == [
        "fewer epochs (--epochs 5)", "one head instead of 5 (--lr 1e-3 --weight-decay 0.4)",
        "a narrower probe (--pooler-depth 2)"]
    assert hints("task", "regression") == ["fewer epochs (--epochs 5)", "a narrower probe (--hidden-dim 1024)"]
    assert hints("task", "regression", "epochs", 3, "hidden_dim", 512) == []
