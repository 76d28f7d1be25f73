"""Your own labels: `lary extract --labels` on videos (a class per clip, or an action row per frame), and `lary evaluate
--data` splitting one folder by clip, so "do latent actions predict my labels?" is two commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_extract import extract, read_manifest, read_output, save_tiny_model

from lary.cli import main as lary_main
from lary.errors import LaryError
from lary.synthetic import DIRECTIONS, make_clip, write_video

CLIPS = 6
FRAMES = 8


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, list[tuple[float, float]], list[int]]:
    """Six 8-frame videos moving right or left; their per-frame velocities and directions."""
    folder = tmp_path_factory.mktemp("videos")
    velocities, directions = [], []
    for index in range(CLIPS):
        clip = make_clip(0 if index % 2 else 4, num_frames=FRAMES, size=48, seed=index)
        write_video(clip.frames, folder / f"clip_{index}.mkv")
        velocities.append(clip.velocity)
        directions.append(clip.direction)
    return folder, velocities, directions


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def evaluate(*args: str) -> dict:
    assert lary_main(["evaluate", *args, "--cpu", "--epochs", "2", "--batch-size", "8", "--hidden-dim", "16",
                      "--pooler-depth", "1", "--attention-heads", "2"]) == 0
    return json.loads((Path(args[args.index("--out") + 1]) / "results.json").read_text())


def test_a_class_per_clip_reaches_every_pair_and_the_probe(tmp_path, clips, tiny_model):
    folder, _, directions = clips
    labels = pd.DataFrame({"id": [f"clip_{i}.mkv" for i in range(CLIPS)], "label": [DIRECTIONS[d] for d in directions]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--videos", str(folder / "*.mkv"), "--labels", str(tmp_path / "labels.csv"),
                   "--out", str(out)) == 0
    table = read_output(out)
    assert table.num_rows == CLIPS * (FRAMES - 1)
    assert read_manifest(out)["label_names"] == ["left", "right"]
    expected = [0 if directions[int(i[5])] == 4 else 1 for i in table.column("id").to_pylist()]
    assert table.column("label").to_pylist() == expected

    results = evaluate("--task", "classification", "--data", str(out), "--split-by", "clip", "--validation-fraction",
                       "0.34", "--out", str(tmp_path / "probe"), "--cache-dir", str(tmp_path / "cache"))
    split = results["splits"]["split"]
    assert split["split_by"] == "id" and len(split["validation_groups"]) == 2 and split["train_groups"] == 4
    assert results["splits"]["validation"]["rows"] == 2 * (FRAMES - 1)  # whole clips on one side
    assert results["label_names"] == ["left", "right"]


def test_an_action_row_per_frame_becomes_each_pairs_action_chunk(tmp_path, clips, tiny_model):
    folder, velocities, _ = clips
    rows = [{"id": f"clip_{i}.mkv", "frame_index": t, "dx": velocities[i][0], "dy": velocities[i][1] + t}
            for i in range(CLIPS) for t in range(FRAMES)]
    pd.DataFrame(rows).to_parquet(tmp_path / "actions.parquet")
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--videos", str(folder / "*.mkv"), "--labels",
                   str(tmp_path / "actions.parquet"), "--stride", "2", "--out", str(out)) == 0
    table = read_output(out)
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["id"], first["frame_index"]) == ("clip_0.mkv", 0)
    np.testing.assert_allclose(first["action"], [[velocities[0][0], velocities[0][1]], [velocities[0][0], velocities[0][1] + 1]])
    results = evaluate("--task", "regression", "--data", str(out), "--out", str(tmp_path / "probe"),
                       "--cache-dir", str(tmp_path / "cache"))
    assert results["metric"] == "normalized_mse" and results["splits"]["split"]["train_groups"] == 5


def test_labels_that_miss_a_clip_or_frames_are_refused_naming_it(tmp_path, clips, tiny_model):
    folder, _, _ = clips
    pd.DataFrame({"id": ["clip_0.mkv"], "label": ["right"]}).to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(LaryError, match=r"no labels for 5 of 6 input\(s\), first 'clip_1.mkv'"):
        extract("--model", str(tiny_model), "--videos", str(folder / "*.mkv"), "--labels", str(tmp_path / "few.csv"),
                "--out", str(tmp_path / "a"))
    rows = [{"id": f"clip_{i}.mkv", "frame_index": t, "x": 0.0} for i in range(CLIPS) for t in range(FRAMES) if t != 3]
    pd.DataFrame(rows).to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.raises(LaryError, match="'clip_0.mkv' has 8 frames but no action row for frame_index 3"):
        extract("--model", str(tiny_model), "--videos", str(folder / "*.mkv"), "--labels", str(tmp_path / "gaps.csv"),
                "--out", str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "run.json").exists()


def test_evaluate_without_labels_says_how_to_add_them(tmp_path, clips, tiny_model):
    folder, _, _ = clips
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--videos", str(folder / "clip_0.mkv"), str(folder / "clip_1.mkv"),
                   "--out", str(out)) == 0
    with pytest.raises(LaryError, match=r"column 'label' missing .*pass `--labels FILE`"):
        lary_main(["evaluate", "--task", "classification", "--data", str(out), "--out", str(tmp_path / "probe"), "--cpu"])
