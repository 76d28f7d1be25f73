"""`lary train --data dataset:PATH_OR_ID:CONFIG[:SPLIT]`: prepared LARY configs as training clips (issue 6)."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import shared_path
from lary_tree import csv_rows, make_lary_tree, synthetic_image
from test_train import write_tiny_configs

from lary import LapaDinov3Processor
from lary.cli import main as lary_main
from lary.data.prepare import prepare
from lary.training.data import load_clips

ROWS = 5


@pytest.fixture(scope="module")
def lary_out(tmp_path_factory):
    """Real LIBERO validation rows (and the rows after them as train) and synthetic human_1st clips, prepared."""
    shared = shared_path("lary", "metadata")
    root = tmp_path_factory.mktemp("lary")
    data_dir, metadata_dir = make_lary_tree(root, shared, {"libero": ROWS, "human_1st": 2}, make_train_split=True)
    prepare(data_dir, metadata_dir, root / "out", configs=["libero", "human_1st"])
    return root / "out", metadata_dir



def test_pair_rows_become_two_frame_clips(lary_out):
    out, metadata_dir = lary_out
    processor = LapaDinov3Processor(size=16)
    clips = load_clips([f"dataset:{out}:libero"], processor)  # split train by default
    rows = csv_rows(metadata_dir, "libero", "train")
    assert [tuple(clip.shape) for clip in clips] == [(2, 3, 16, 16)] * len(rows)
    target = torch.from_numpy(synthetic_image(rows[0]["tgt_img"], 32))[None]  # the processor resizes training frames
    torch.testing.assert_close(clips[0][1], processor.resize(target)[0], rtol=0, atol=0)


def test_clip_rows_keep_their_frames_in_order(lary_out):
    out, metadata_dir = lary_out
    clips = load_clips([f"dataset:{out}:human_1st:validation"], LapaDinov3Processor(size=16))
    rows = csv_rows(metadata_dir, "human_1st", "validation")
    assert len(clips) == len(rows)
    for clip, row in zip(clips, rows):
        indices = [int(i) for i in row["sample_indices"].split(",")]
        # frame i of the synthetic video is a flat gray of level 20 * i (mpeg4 is lossy: compare the mean)
        np.testing.assert_allclose(clip.float().mean(dim=(1, 2, 3)).numpy(), [20 * i for i in indices], atol=4)


def test_errors_name_the_source_config_and_columns(tmp_path):
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: plain\n  data_files: rows.parquet\n---\n")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "rows.parquet")
    with pytest.raises(ValueError, match=r"config 'plain', split 'train' has neither a `frames` column .*\['x'\]"):
        load_clips([f"dataset:{tmp_path}:plain"], LapaDinov3Processor(size=16))
    with pytest.raises(ValueError, match=r"no split 'validation'; splits: \['train'\]"):
        load_clips([f"dataset:{tmp_path}:plain:validation"], LapaDinov3Processor(size=16))
    with pytest.raises(ValueError, match=r"expected dataset:PATH_OR_ID:CONFIG\[:SPLIT\]"):
        load_clips([f"dataset:{tmp_path}"], LapaDinov3Processor(size=16))


@pytest.mark.parametrize(("config", "split", "frames_per_row"), [("libero", "validation", 2),
                                                                 ("human_1st", "validation", 9)])
def test_cli_trains_on_a_config(tmp_path, lary_out, capsys, config, split, frames_per_row):
    out, metadata_dir = lary_out
    backbone, laq = write_tiny_configs(tmp_path)
    assert lary_main(["train", "--backbone", str(backbone), "--model-config", str(laq),
                      "--data", f"dataset:{out}:{config}:{split}", "--out", str(tmp_path / "run"), "--steps", "2",
                      "--batch-size", "2", "--save-every", "2", "--log-every", "1", "--cpu"]) == 0
    rows = len(csv_rows(metadata_dir, config, split))
    assert re.search(rf"^{rows} clips, {rows * frames_per_row} frames,", capsys.readouterr().err, re.MULTILINE)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "run" / "model.safetensors").exists()
