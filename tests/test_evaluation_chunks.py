"""`lary evaluate --task regression` on `lary extract --stride-seconds` of real videos at 25 and 29.97 fps with an
action row per frame: chunks of different lengths are refused before any work, naming the ids and their lengths, or
resampled to one length over their span with `--action-chunk resample`."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_extract import ENV, extract, read_manifest

from lary.cli import main as lary_main
from lary.evaluation.chunks import resample_chunk
from lary.evaluation.features import load_split
from lary.hub import EMBEDDED_MODEL
from lary.synthetic import make_clips, write_video

FRAMES = 20
STRIDE_SECONDS = "0.5"
NTSC = Fraction(30000, 1001)  # 29.97 fps
RATES = {"a.mkv": 25, "b.mkv": 25, "c.mkv": NTSC, "d.mkv": NTSC}


def action(name: str, frame: int) -> list[float]:
    """A command per frame, linear in time (so resampling it over a chunk's span is exact), and a constant."""
    return [2.0 * frame / float(RATES[name]) + ord(name[0]), 1.0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    """`lary extract --stride-seconds 0.5` of a, b (25 fps) and c (29.97 fps) as train, d (29.97 fps) as validation;
    and each video's frames per pair."""
    root = tmp_path_factory.mktemp("chunks")
    for name, clip in zip(RATES, make_clips(len(RATES), seed=5, num_frames=FRAMES, size=32)):
        write_video(clip.frames, root / name, fps=RATES[name])
    rows = [{"id": name, "frame_index": t, "a0": action(name, t)[0], "a1": 1.0} for name in RATES for t in range(FRAMES)]
    pd.DataFrame(rows).to_csv(root / "actions.csv", index=False)
    outs = []
    for split, names in (("train", "abc"), ("validation", "d")):
        videos = root / split
        videos.mkdir()
        for name in names:
            (videos / f"{name}.mkv").symlink_to(root / f"{name}.mkv")
        labels = root / f"{split}.csv"
        pd.DataFrame([row for row in rows if row["id"][0] in names]).to_csv(labels, index=False)
        outs.append(root / f"out-{split}")
        assert extract("--model", str(EMBEDDED_MODEL), "--videos", str(videos / "*.mkv"), "--labels", str(labels),
                       "--stride-seconds", STRIDE_SECONDS, "--out", str(outs[-1])) == 0
    frames = {**read_manifest(outs[0])["stride_frames"], **read_manifest(outs[1])["stride_frames"]}
    return outs[0], outs[1], frames


def test_different_chunk_lengths_are_refused_before_any_work_naming_the_videos(tmp_path, folders):
    train, validation, frames = folders
    assert frames["a.mkv"] == frames["b.mkv"] == 13 and frames["c.mkv"] == frames["d.mkv"] == 15  # round(S x fps)
    cache = tmp_path / "cache"
    completed = subprocess.run(
        [sys.executable, "-m", "lary", "evaluate", "--task", "regression", "--train", str(train), "--validation",
         str(validation), "--out", str(tmp_path / "probe"), "--cache-dir", str(cache), "--cpu"],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert completed.returncode == 2 and len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert completed.stderr.strip() == (
        "lary evaluate: error: the 'action' chunks differ in length (--stride-seconds 0.5 is a different number of "
        f"frames at each frame rate): {train}: 13 steps in 'a.mkv' (25 fps), 'b.mkv' (25 fps); 15 steps in 'c.mkv' "
        f"(29.97 fps) | {validation}: 15 steps in 'd.mkv' (29.97 fps); the probe needs one length: pass --action-chunk "
        "resample (each chunk read at 13 evenly spaced times over its span, the train rows' most common length), or "
        "extract again with a fixed --stride")
    assert not cache.exists() and not (tmp_path / "probe").exists()  # no feature cached, nothing trained


def test_resampled_chunks_are_the_actions_at_even_times_over_each_span(tmp_path, folders, capsys):
    train, validation, frames = folders
    out = tmp_path / "probe"
    assert lary_main(["evaluate", "--task", "regression", "--train", str(train), "--validation", str(validation),
                      "--action-chunk", "resample", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--cpu",
                      "--epochs", "2", "--batch-size", "8", "--hidden-dim", "16", "--no-shuffled-control"]) == 0
    results = json.loads((out / "results.json").read_text())
    pairs = {name: FRAMES - k for name, k in frames.items()}
    assert results["action_chunk"] == {"steps": 13, "resampled_rows": {"train": pairs["c.mkv"],
                                                                       "validation": pairs["d.mkv"]}}
    assert np.isfinite(results["value"])
    line = capsys.readouterr().out.strip().splitlines()[-1]  # no config: no stray " :" after the dataset
    assert " :" not in line and ": normalized_mse = " in line

    # the resampled chunk of a 15-frame pair (t, t + 15) at 29.97 fps: the commands at t + j x 15/13 frames
    split = load_split(validation, target="action", cache_dir=tmp_path / "cache")
    for t, chunk in enumerate(split.actions):
        assert chunk.shape == (15, 2)
        expected = [action("d.mkv", t + j * 15 / 13) for j in range(13)]
        np.testing.assert_allclose(resample_chunk(chunk, 13), expected, rtol=1e-5)
    same = split.actions[0]
    assert resample_chunk(same, 15) is same  # a chunk of the length asked is left as it is


def test_resampling_holds_the_last_command_and_can_lengthen():
    chunk = np.array([[0.0, 5.0], [1.0, 5.0], [3.0, 5.0]], dtype=np.float32)  # k = 3
    np.testing.assert_allclose(resample_chunk(chunk, 6), [[0, 5], [0.5, 5], [1, 5], [2, 5], [3, 5], [3, 5]])
    assert resample_chunk(chunk, 6).dtype == np.float32
    np.testing.assert_allclose(resample_chunk(chunk, 2), [[0, 5], [2, 5]])
