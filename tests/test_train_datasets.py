"""`lary train --data dataset:PATH_OR_ID:CONFIG[:SPLIT]`: prepared LARY configs as training clips (issue 6)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED
from lary_tree import make_lary_tree, synthetic_image
from PIL import Image

from lary.cli import main as lary_main
from lary.data.layout import LAYOUTS
from lary.data.prepare import prepare
from lary.training.data import load_clips

ROWS = 5
# the tiny backbone and quantizer of test_train.py
BACKBONE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_register_tokens": 4, "image_size": 64, "patch_size": 8}
LAQ = {"quant_dim": 4, "codebook_size": 8, "code_seq_len": 4, "spatial_depth": 1, "temporal_depth": 1,
       "decoder_depth": 1, "dim_head": 16, "heads": 2, "initializer_range": 0.2}


@pytest.fixture(scope="module")
def lary_out(tmp_path_factory):
    """Real LIBERO validation rows (and the rows after them as train) and synthetic human_1st clips, prepared."""
    shared = SHARED / "lary" / "metadata"
    if not shared.exists():
        pytest.skip(f"{shared} is absent: the shared fixtures live beside the checkout (present in CI)")
    root = tmp_path_factory.mktemp("lary")
    data_dir, metadata_dir = make_lary_tree(root, shared, {"libero": ROWS, "human_1st": 2}, make_train_split=True)
    prepare(data_dir, metadata_dir, root / "out", configs=["libero", "human_1st"])
    return root / "out", metadata_dir


def csv_rows(metadata_dir, config, split):
    with open(LAYOUTS[config].csv_path(metadata_dir, split), newline="") as file:
        return list(csv.DictReader(file))


def test_pair_rows_become_two_frame_clips(lary_out):
    out, metadata_dir = lary_out
    clips = load_clips([f"dataset:{out}:libero"], size=16)  # split train by default
    rows = csv_rows(metadata_dir, "libero", "train")
    assert [tuple(clip.shape) for clip in clips] == [(2, 3, 16, 16)] * len(rows)
    resized = Image.fromarray(synthetic_image(rows[0]["tgt_img"], 32)).resize((16, 16), Image.BICUBIC)
    np.testing.assert_array_equal(clips[0][1].permute(1, 2, 0).numpy(), np.asarray(resized))


def test_clip_rows_keep_their_frames_in_order(lary_out):
    out, metadata_dir = lary_out
    clips = load_clips([f"dataset:{out}:human_1st:validation"], size=16)
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
        load_clips([f"dataset:{tmp_path}:plain"], size=16)
    with pytest.raises(ValueError, match=r"no split 'validation'; splits: \['train'\]"):
        load_clips([f"dataset:{tmp_path}:plain:validation"], size=16)
    with pytest.raises(ValueError, match=r"expected dataset:PATH_OR_ID:CONFIG\[:SPLIT\]"):
        load_clips([f"dataset:{tmp_path}"], size=16)


@pytest.mark.parametrize(("config", "split", "frames_per_row"), [("libero", "validation", 2),
                                                                 ("human_1st", "validation", 9)])
def test_cli_trains_on_a_config(tmp_path, lary_out, capsys, config, split, frames_per_row):
    out, metadata_dir = lary_out
    (tmp_path / "backbone.json").write_text(json.dumps(BACKBONE))
    (tmp_path / "laq.json").write_text(json.dumps(LAQ))
    assert lary_main(["train", "--backbone", str(tmp_path / "backbone.json"), "--config", str(tmp_path / "laq.json"),
                      "--data", f"dataset:{out}:{config}:{split}", "--out", str(tmp_path / "run"), "--steps", "2",
                      "--batch-size", "2", "--save-every", "2", "--log-every", "1", "--cpu"]) == 0
    rows = len(csv_rows(metadata_dir, config, split))
    assert re.search(rf"^{rows} clips, {rows * frames_per_row} frames,", capsys.readouterr().out, re.MULTILINE)
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "run" / "model.safetensors").exists()
