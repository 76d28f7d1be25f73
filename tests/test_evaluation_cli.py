"""`lary evaluate` and `lary leaderboard` as real commands, on one process and under `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import accelerate_launch
from test_evaluation_features import write_extract_output

SMALL_CLASSIFIER = ["--hidden-dim", "32", "--pooler-depth", "2", "--attention-heads", "4", "--batch-size", "32"]
SMALL_REGRESSOR = ["--hidden-dim", "64", "--batch-size", "64", "--lr", "1e-3"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def classification_split(root: Path, split: str, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(0).normal(size=(3, 2, 4, 8))
    labels = rng.integers(0, 3, rows)
    clips = prototypes[labels] + 0.5 * rng.normal(size=(rows, 2, 4, 8))  # clips: pairs x tokens x D
    return write_extract_output(
        root / split,
        {"id": [f"{split}{i:04d}" for i in range(rows)], "latent_actions": clips.astype(np.float32).tolist(),
         "label": labels.tolist()},
        split=split, config="robot_1st", label_names=["pick", "place", "push"],
    )


def regression_split(root: Path, split: str, rows: int, seed: int, model: str = "tiny-lam") -> Path:
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(0).normal(size=(16, 6))
    features = rng.normal(size=(rows, 16))
    features = (features - features.mean(1, keepdims=True)) / features.std(1, keepdims=True)
    actions = (features @ weights).reshape(rows, 2, 3)
    return write_extract_output(
        root / split,
        {"id": [f"{split}{i:04d}" for i in range(rows)], "latent_actions": features.reshape(rows, 4, 4).astype(np.float32).tolist(),
         "action": actions.astype(np.float32).tolist(), "robot_type": ["arm"] * rows},
        split=split, config="calvin", model=model,
    )


def test_evaluate_classification_command_writes_results_and_plots(tmp_path):
    train, val = classification_split(tmp_path, "train", 192, 1), classification_split(tmp_path, "validation", 96, 2)
    out = tmp_path / "results"
    completed = run(sys.executable, "-m", "lary", "evaluate", "--train", str(train), "--validation", str(val),
                    "--task", "classification", "--out", str(out), "--epochs", "4", "--cache-dir", str(tmp_path / "cache"),
                    *SMALL_CLASSIFIER)
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "top1_accuracy" and results["value"] >= 0.95
    assert results["value"] == results["heads"][results["best_head"]]["accuracy"]
    assert results["selection"] == {"on": "validation", "head": results["best_head"], "score": results["value"]}
    assert (results["model"], results["config"], results["feature"]) == ("tiny-lam", "robot_1st", "latent_actions")
    assert results["label_names"] == ["pick", "place", "push"]
    assert np.sum(results["confusion_matrix"]) == 96
    assert (out / "training_curves.png").stat().st_size > 0 and (out / "confusion_matrix.png").stat().st_size > 0
    assert "top1_accuracy" in completed.stdout


@pytest.fixture(scope="module")
def regression_results(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regression")
    train, val = regression_split(root, "train", 510, 1), regression_split(root, "validation", 101, 2)
    # --selection held-out: its slice of the train split is scored by both processes' shares as well
    args = ["-m", "lary", "evaluate", "--train", str(train), "--validation", str(val), "--task", "regression",
            "--epochs", "3", "--cpu", "--selection", "held-out", *SMALL_REGRESSOR]
    run(sys.executable, *args, "--out", str(root / "one"), "--cache-dir", str(root / "cache-one"))
    run(sys.executable, *accelerate_launch(), *args, "--out", str(root / "two"), "--cache-dir", str(root / "cache-two"))
    return {"one": root / "one", "two": root / "two", "cache-two": root / "cache-two"}


def test_two_processes_match_one(regression_results):
    one = json.loads((regression_results["one"] / "results.json").read_text())
    two = json.loads((regression_results["two"] / "results.json").read_text())
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    # Same global batches and the same averaged gradients: only float summation order differs.
    for a, b in zip(one["history"], two["history"]):
        assert b["validation_mse"] == pytest.approx(a["validation_mse"], rel=1e-4)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["held_out_mse"] == pytest.approx(a["held_out_mse"], rel=1e-4)
    assert one["selection"]["epoch"] == two["selection"]["epoch"]
    assert (regression_results["two"] / "per_dimension_error.png").exists()
    # Each split's feature store was written once, nothing left half-written.
    assert sorted(path.name.split("-")[0] for path in regression_results["cache-two"].iterdir()) == ["train", "validation"]


def test_leaderboard_command(regression_results, tmp_path):
    cls = {"task": "classification", "model": "tiny-lam", "config": "robot_1st", "feature": "latent_actions", "value": 0.5}
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "results.json").write_text(json.dumps(cls))
    completed = run(sys.executable, "-m", "lary", "leaderboard", str(tmp_path / "cls"),
                    str(regression_results["one"] / "results.json"), "--out", str(tmp_path / "board.md"))
    table = (tmp_path / "board.md").read_text()
    assert table in completed.stdout
    header, _, row = table.splitlines()[:3]
    assert header == "| Model | robot_1st | Cls. avg ↑ | calvin | Reg. avg ↓ |"
    mse = json.loads((regression_results["one"] / "results.json").read_text())["value"]
    assert row == f"| tiny-lam | 50.00 | 50.00 | {mse:.4f} | {mse:.4f} |"


def test_train_validation_model_mismatch_is_an_error(tmp_path):
    from lary.configs.evaluate import EvaluateConfig
    from lary.errors import LaryError
    from lary.evaluation.evaluate import evaluate

    train, val = regression_split(tmp_path, "train", 8, 1), regression_split(tmp_path, "validation", 8, 2, model="other")
    config = EvaluateConfig(train=train, validation=val, task="regression", out=tmp_path / "out", cpu=True,
                            cache_dir=tmp_path / "cache")
    with pytest.raises(LaryError, match="'tiny-lam'.*'other'"):
        evaluate(config)


def test_held_out_selection_is_recorded(tmp_path):
    from lary.configs.evaluate import EvaluateConfig
    from lary.evaluation.evaluate import evaluate

    train, val = regression_split(tmp_path, "train", 100, 1), regression_split(tmp_path, "validation", 20, 2)
    config = EvaluateConfig(train=train, validation=val, task="regression", out=tmp_path / "out", cpu=True, epochs=3,
                            hidden_dim=16, batch_size=32, cache_dir=tmp_path / "cache", selection="held-out")
    evaluate(config)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    epoch = results["best_epoch"]
    assert results["selection"] == {
        "on": "held-out", "epoch": epoch, "score": results["history"][epoch - 1]["held_out_mse"],
        "held_out_fraction": 0.1, "held_out_rows": 10, "train_rows": 90,
    }
    assert results["value"] == results["history"][epoch - 1]["validation_mse"]
    assert results["splits"]["train"]["rows"] == 100


def test_leaderboard_orders_known_tasks_and_averages_only_complete_rows():
    from lary.evaluation.leaderboard import build_leaderboard

    def result(model, config, value, task="classification", feature="latent_actions"):
        return Path(f"{model}-{config}.json"), {"task": task, "model": model, "config": config, "value": value, "feature": feature}

    table = build_leaderboard(
        [result("a", "robot_1st", 0.6), result("a", "human_1st", 0.4), result("b", "robot_1st", 0.5, feature="features"),
         result("a", "robot_1st", 0.1, feature="action_indices")]
    )
    lines = table.splitlines()
    assert lines[0] == "| Model | human_1st | robot_1st | Cls. avg ↑ |"
    assert lines[2:5] == ["| a | 40.00 | 60.00 | 50.00 |", "| b | – | 50.00 | – |", "| a (action_indices) | – | 10.00 | – |"]
    with pytest.raises(ValueError, match="two results for a on robot_1st"):
        build_leaderboard([result("a", "robot_1st", 0.6), result("a", "robot_1st", 0.7)])
