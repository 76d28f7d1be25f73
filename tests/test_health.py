"""The label health report of `lary extract` (lary/extract/health.py): collapse named for a model whose codebook
entries are all equal, not for the embedded model on the synthetic clips it was trained on; what it shows on the
ALOHA robot videos; streamed from the shards, so a 2-shard run and a clip-row layout count every pair."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import shared_path
from transformers import AutoModel

from lary.cli import main as lary_main
from lary.extract import health
from lary.hub import EMBEDDED_MODEL
from lary.synthetic import make_clips, write_video


def _extract(outdir: Path, *args: str) -> dict:
    assert lary_main(["extract", *args, "--out", str(outdir), "--cpu"]) == 0
    return json.loads((outdir / "manifest.json").read_text())["label_health"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    """8 held-out synthetic clips (8 frames, the embedded model's training distribution): 56 pairs."""
    folder = tmp_path_factory.mktemp("clips")
    return [str(write_video(clip.frames, folder / f"clip{index}.mkv")) for index, clip in enumerate(make_clips(8, seed=1000))]


def test_equal_codebook_entries_are_named_a_collapse(tmp_path, clips, caplog):
    model = AutoModel.from_pretrained(EMBEDDED_MODEL)
    with torch.no_grad():
        model.quantizer.codebook.copy_(model.quantizer.codebook[:1].expand_as(model.quantizer.codebook))
    model.save_pretrained(tmp_path / "collapsed")
    shutil.copy(EMBEDDED_MODEL / "preprocessor_config.json", tmp_path / "collapsed")
    with caplog.at_level(logging.INFO):
        report = _extract(tmp_path / "out", "--model", str(tmp_path / "collapsed"), "--videos", *clips)
    assert report["pairs"] == 56
    assert report["sequences"] == {"distinct": 1, "entropy_bits": 0.0, "top": [0, 0, 0, 0], "top_share": 1.0}
    assert [position["codes_used"] for position in report["positions"]] == [1, 1, 1, 1]
    assert [line.split(":")[0] for line in report["warnings"]] == ["label collapse", "position collapse"]
    warned = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("label collapse: the codes hardly vary: 100% of the 56 pairs" in line for line in warned)
    assert any(message.startswith("label health: codes used per position 1/1/1/1 of 8") for message in caplog.messages)


def test_embedded_model_on_its_synthetic_clips_is_healthy(tmp_path, clips):
    report = _extract(tmp_path / "out", "--model", str(EMBEDDED_MODEL), "--videos", *clips, "--shard-size", "21")
    assert report["pairs"] == 56  # three shards, all counted
    assert report["warnings"] == []
    assert all(position["codes_used"] >= 4 for position in report["positions"])
    assert report["sequences"]["top_share"] < 0.1
    # a resumed run (one shard lost, redone) reports on every shard, as the first run did
    (tmp_path / "out" / "shard-00001-of-00003.parquet").unlink()
    (tmp_path / "out" / "shard-00001-of-00003.json").unlink()
    assert _extract(tmp_path / "out", "--model", str(EMBEDDED_MODEL), "--videos", *clips, "--shard-size", "21") == report


def test_aloha_report_names_the_stuck_position_only(tmp_path):
    """The embedded model on real robot video (out of its distribution): position 1 keeps code 0 for every pair and
    41% of the pairs share one sequence: a position collapse, not a label collapse (docs/extract.md)."""
    videos = [str(path) for path in sorted(shared_path("robot", "aloha").glob("ep_*.mp4"))]
    report = _extract(tmp_path / "out", "--model", str(EMBEDDED_MODEL), "--videos", *videos)
    assert report["pairs"] == 98
    assert report["positions"][1] == {"codes_used": 1, "top_code": 0, "top_code_share": 1.0, "entropy_bits": 0.0}
    assert report["sequences"]["top_share"] == pytest.approx(40 / 98, abs=1e-4)
    assert [line.split(":")[0] for line in report["warnings"]] == ["position collapse"]


def test_report_counts_clip_rows_and_skips_judging_few_pairs():
    clip_rows = health._code_rows(pa.array([[[1, 2], [1, 2], [3, 4]], [[1, 2]]]))
    assert clip_rows.tolist() == [[1, 2], [1, 2], [3, 4], [1, 2]]
    report = health.report([clip_rows], codebook_size=8)
    assert report["sequences"]["top_share"] == 0.75 and report["positions"][0]["entropy_bits"] == pytest.approx(0.811, abs=1e-3)
    assert report["warnings"] == []  # 4 pairs: under MIN_PAIRS, not judged
    many = health.report([np.repeat(clip_rows, health.MIN_PAIRS, axis=0)], codebook_size=8)
    assert [line.split(":")[0] for line in many["warnings"]] == ["label collapse"]
    assert health.report([np.zeros((0, 0), dtype=np.int64)], codebook_size=8) is None
