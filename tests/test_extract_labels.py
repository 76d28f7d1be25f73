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
    assert split["split_by"] == "id" and len(split["validation_groups"]) == 2 and len(split["train_groups"]) == 4
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
    assert results["metric"] == "normalized_mse" and len(results["splits"]["split"]["train_groups"]) == 5


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


BAD_LABELS = {  # the file's text -> the one-line error, naming the line and column
    "id,frame_index,a0,a1\nclip_0.mkv,0,1.5,2\nclip_0.mkv,1,abc,2\n":
        r"line 3, column 'a0': 'abc' is not a number \(every column besides `id` and `frame_index` is an action dimension\)",
    "id,frame_index,a0\nclip_0.mkv,0,1\nclip_0.mkv,1,\n": r"line 3, column 'a0': blank cell",
    "id,frame_index,a0\nclip_0.mkv,-1,1\n": r"line 2, column 'frame_index': '-1' is not a frame index",
    "id,label\nclip_0.mkv,0\nclip_1.mkv,1000000000\n": r"line 3, column 'label': class 1000000000 is not an integer in 0 \.\. 9999",
    "id,label\nclip_0.mkv,1\nclip_1.mkv,-1\n": r"line 3, column 'label': class -1 is not an integer in 0 \.\. 9999",
    "id,label\nclip_0.mkv,left\nclip_1.mkv,\n": r"line 3, column 'label': blank cell",
    "id,label\n,left\n": r"line 2, column 'id': blank cell",
    "id,label\nclip_0.mkv,left\nclip_0.mkv,right\n": r"line 3: id 'clip_0.mkv' has more than one label",
}


@pytest.mark.parametrize("text", BAD_LABELS)
def test_a_bad_cell_is_refused_before_the_model_loads_naming_its_line_and_column(tmp_path, clips, text):
    folder, _, _ = clips
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(LaryError, match=f"--labels {tmp_path}/labels.csv, {BAD_LABELS[text]}"):  # not the missing model
        extract("--model", str(tmp_path / "no-model"), "--videos", str(folder / "clip_0.mkv"), str(folder / "clip_1.mkv"),
                "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_every_id_must_be_an_input_s_except_under_limit(tmp_path, clips, tiny_model):
    """An id that matches no input is a typo or a clip left out, whose class would be a name without clips; with
    `--limit` the file may label more clips than the run reads, and its classes stay those of the whole file."""
    folder, _, _ = clips
    labels = pd.DataFrame({"id": [f"clip_{i}.mkv" for i in range(CLIPS)] + ["clip_9.mkv"],
                           "label": ["a", "b", "a", "b", "a", "b", "phantom"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(LaryError, match=r"labels.csv, line 8, column 'id': 'clip_9.mkv' matches no input; the inputs' "
                                        r"ids look like 'clip_0.mkv'"):
        extract("--model", str(tmp_path / "no-model"), "--videos", str(folder / "*.mkv"), "--labels",
                str(tmp_path / "labels.csv"), "--out", str(tmp_path / "all"))
    out = tmp_path / "limited"
    assert extract("--model", str(tiny_model), "--videos", str(folder / "*.mkv"), "--labels", str(tmp_path / "labels.csv"),
                   "--limit", "2", "--out", str(out)) == 0
    assert read_manifest(out)["label_names"] == ["a", "b", "phantom"]
    assert sorted(set(read_output(out).column("label").to_pylist())) == [0, 1]


def test_ids_are_read_as_written_and_action_lists_checked(tmp_path):
    from lary.extract.labels import Labels

    (tmp_path / "labels.csv").write_text("id,label\n007,NA\n0001,1\n")
    labels = Labels(tmp_path / "labels.csv")  # not 7 and a missing value: a folder `007` and a class named NA
    assert labels.by_id == {"007": 1, "0001": 0} and labels.names == ["1", "NA"]
    pd.DataFrame({"id": ["a", "a"], "frame_index": [0, 1], "action": [[1.0, 2.0], [1.0]]}).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(LaryError, match=r"a.parquet, row 1, column 'action': 1 numbers; the first row has 2"):
        Labels(tmp_path / "a.parquet")
    pd.DataFrame({"id": ["a", "b"], "label": [0.5, 1.0]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(LaryError, match=r"b.parquet, row 0, column 'label': 0.5 is neither an integer class nor a name"):
        Labels(tmp_path / "b.parquet")
