"""NaN and infinity never pass for numbers: NaN frames are refused (they were read as black frames and given their
codes), so are weights holding them (a model whose training diverged), features and targets that would train a probe
into a NaN score, a probe that diverged anyway (`lary evaluate` exited 0 with a NaN score), and latent vectors that
`lary export` would write into `meta/stats.json`. Each is refused on one line naming where."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lerobot_fixtures import synthetic_episodes, write_lerobot_dataset
from PIL import Image
from test_evaluation_cli import classification_split, regression_split
from test_evaluation_features import write_extract_output
from test_extract import extract, save_tiny_model
from test_extract_odd_inputs import errors_of
from test_lerobot import latent_rows

from lary import LapaDinov3Model, LapaDinov3Processor, LatentActionLabeler
from lary.cli import main as lary_main
from lary.errors import LaryError, MediaError
from lary.frames import read_image
from lary.hub import default_model
from lary.lerobot import export_latent_actions

BAD = {"NaN": math.nan, "inf": math.inf, "-inf": -math.inf}


@pytest.mark.parametrize("value", BAD)
def test_nan_and_infinite_frames_are_refused_not_read_as_black(tmp_path, value):
    frame = torch.rand(3, 16, 16)
    frame[1, 2, 3] = BAD[value]
    with pytest.raises(ValueError, match=r"frame: float tensors must be finite; this one holds NaN or infinity"):
        LapaDinov3Processor.to_uint8(frame)
    with pytest.raises(ValueError, match=r"images\[0\]\[1\]: float tensors must be finite"):
        LapaDinov3Processor()(images=[[torch.rand(3, 16, 16), frame]])
    labeler = LatentActionLabeler.from_pretrained(default_model())
    with pytest.raises(ValueError, match=r"second_frames\[0\]: float tensors must be finite"):
        labeler.label_pairs(torch.rand(1, 3, 16, 16), frame[None])
    floats = np.full((4, 5), 0.5, dtype=np.float32)
    floats[0, 0] = BAD[value]
    Image.fromarray(floats, "F").save(tmp_path / "float.tif")
    with pytest.raises(MediaError, match=r"float.tif: unreadable image \(the float image holds NaN or infinity\)"):
        read_image(tmp_path / "float.tif")


def test_extract_records_a_nan_image_as_an_error_and_labels_the_rest(tmp_path):
    clips = {}
    for name in ("finite", "nan"):
        clips[name] = tmp_path / "images" / name
        clips[name].mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.full((16, 16), 0.25 * index, dtype=np.float32), "F").save(clips[name] / f"{index}.tif")
    broken = np.full((16, 16), 0.5, dtype=np.float32)
    broken[4, 4] = math.nan
    Image.fromarray(broken, "F").save(clips["nan"] / "1.tif")
    out = tmp_path / "out"
    assert extract("--model", str(default_model()), "--images", str(clips["finite"]), str(clips["nan"]),
                   "--out", str(out)) == 1
    [(sample, reason)] = errors_of(out).items()
    assert sample == "nan" and "1.tif" in reason and "NaN or infinity" in reason


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("value", BAD)
def test_weights_holding_nan_or_infinity_are_refused_by_every_loader(tmp_path, tiny_model, value):
    model = LapaDinov3Model.from_pretrained(tiny_model)
    with torch.no_grad():
        model.quantizer.codebook[3, 0] = BAD[value]  # one value of one code
        model.decoder.layers[0].self_attention.q_proj.weight[0, 0] = BAD[value]
    model.save_pretrained(tmp_path / "diverged")
    expected = r"weights decoder\.layers\.0\.self_attention\.q_proj\.weight, quantizer\.codebook hold NaN or infinity"
    with pytest.raises(LaryError, match=expected):
        LatentActionLabeler.from_pretrained(tmp_path / "diverged")
    (tmp_path / "videos").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "videos" / "0.png")
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(tmp_path / "videos" / "1.png")
    with pytest.raises(LaryError, match=f"^--model {re.escape(str(tmp_path / 'diverged'))}: {expected}") as error:
        extract("--model", str(tmp_path / "diverged"), "--images", str(tmp_path / "videos"), "--out", str(tmp_path / "out"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def evaluate(*args: str, task: str = "regression") -> str:
    """`lary evaluate` in this process; the one line it fails with."""
    with pytest.raises(LaryError) as error:
        lary_main(["evaluate", "--task", task, "--epochs", "2", "--hidden-dim", "16", "--batch-size", "32",
                   "--no-shuffled-control", "--cpu", *args])
    assert "\n" not in str(error.value)
    return str(error.value)


def regression_folders(root: Path, features=None, actions=None, task: str = "regression") -> tuple[Path, Path]:
    """Train and validation folders as `lary extract` writes them; `features`/`actions` change train's rows."""
    split = regression_split if task == "regression" else classification_split
    train, validation = split(root, "train", 64, 1), split(root, "validation", 32, 2)
    if features or actions:
        table = pa.concat_tables([pq.read_table(path) for path in sorted(train.glob("*.parquet"))]).to_pydict()
        for name, change in (("latent_actions", features), ("action", actions)):
            if change:
                table[name] = [change(np.asarray(row, dtype=np.float32)).tolist() for row in table[name]]
        for path in train.glob("*.parquet"):
            path.unlink()
        write_extract_output(train, table, split="train", config="calvin" if task == "regression" else "robot_1st",
                             **({} if task == "regression" else {"label_names": ["pick", "place", "push"]}))
    return train, validation


def nan_in_row(row: int):
    count = iter(range(10**6))

    def change(values: np.ndarray) -> np.ndarray:
        if next(count) == row:
            values.flat[1] = math.nan
        return values
    return change


@pytest.mark.parametrize("column", ["latent_actions", "action"])
def test_evaluate_refuses_features_and_targets_holding_nan(tmp_path, column):
    changes = {"features": nan_in_row(5)} if column == "latent_actions" else {"actions": nan_in_row(7)}
    train, validation = regression_folders(tmp_path, **changes)
    line = evaluate("--train", str(train), "--validation", str(validation), "--out", str(tmp_path / "results"),
                    "--cache-dir", str(tmp_path / "cache"))
    where = "in .*train-00000-of-00002.parquet holds NaN or infinity \\(the first at its row 5\\)" \
        if column == "latent_actions" else "in .*train holds NaN or infinity \\(the first at id 'train0007'\\)"
    assert re.fullmatch(f"column '{column}' {where}: a probe trained on it gives no score", line), line
    assert not (tmp_path / "results" / "results.json").exists()
    if column == "latent_actions":  # no cache of features that cannot be used
        assert not list((tmp_path / "cache").glob("*/features.npy"))


@pytest.mark.parametrize("task, metric", [("regression", "normalized_mse"), ("classification", "top1_accuracy")])
def test_evaluate_fails_on_a_probe_that_diverged_instead_of_reporting_nan(tmp_path, task, metric):
    """Finite features too large for float32 products: the probe's loss is infinite, then NaN, from the first step (a
    classifier's accuracy would be a number, from the argmax of NaN logits)."""
    train, validation = regression_folders(tmp_path, features=lambda values: values * np.float32(1e37), task=task)
    line = evaluate("--train", str(train), "--validation", str(validation), "--out", str(tmp_path / "results"),
                    "--cache-dir", str(tmp_path / "cache"), task=task)
    assert line == (f"the probe's {metric} is nan: its training diverged (the loss went NaN or infinite); a lower "
                    "--lr may train it"), line
    assert not (tmp_path / "results" / "results.json").exists()


def test_export_refuses_nan_latent_vectors_and_leaves_nothing(tmp_path):
    dataset = write_lerobot_dataset(tmp_path / "dataset", "v3.0", synthetic_episodes([6, 5]), 10)
    rows = latent_rows({0: 6, 1: 5}, 1).to_pydict()
    rows["latent_actions"][6][1][2] = math.nan  # episode 1, frame 1
    with pytest.raises(LaryError, match=r"episode 1: the latent_actions of frame 1 hold NaN or infinity \(1 frame"):
        export_latent_actions(dataset, pa.table(rows), tmp_path / "out")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dataset"]
    export_latent_actions(dataset, pa.table(rows), tmp_path / "codes", with_vectors=False)  # the codes alone are fine
    stats = (tmp_path / "codes" / "meta" / "stats.json").read_text()
    assert "latent_action.indices" in json.loads(stats) and "NaN" not in stats
