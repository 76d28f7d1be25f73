"""`lary demo` on the embedded model: the table and the timeline, on a synthetic clip and on a video file."""

import os
import subprocess
import sys

import numpy as np

from lary.demo import code_table
from lary.hub import EMBEDDED_MODEL
from lary.synthetic import make_clip, write_video


def _demo(*args: str, cwd=None) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "lary", "demo", *args], capture_output=True, text=True, env=env,
                            timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_demo_on_a_synthetic_clip(tmp_path):
    stdout = _demo("--out", str(tmp_path), "--stride", "2", "--direction", "3")
    assert "moving up-left" in stdout
    # the default model says what it is not
    assert "Note: this is the embedded tiny model: its backbone is DINOv3-shaped but randomly initialised" in stdout
    assert "It knows nothing of real video" in stdout
    rows = [line for line in stdout.splitlines() if "->" in line and "codes" not in line]
    assert [row.split()[1] for row in rows] == [f"{t}->{t + 2}" for t in range(6)]
    assert all(len(row.split()) == 2 + 4 for row in rows)  # pair, frames, code_seq_len codes
    png = tmp_path / "demo_timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_on_a_video_file(tmp_path):
    video = write_video(make_clip(0, num_frames=12, size=80, seed=1).frames, tmp_path / "clip.mkv")
    stdout = _demo("--model", str(EMBEDDED_MODEL), "--video", str(video), "--frames", "4", "--out", str(tmp_path / "o"))
    rows = [line.split() for line in stdout.splitlines() if "->" in line and "codes" not in line]
    # 4 frames spread over 12: frames 0, 4, 7, 11, labelled with their numbers in the video
    assert "clip.mkv" in stdout and [row[1] for row in rows] == ["0->4", "4->7", "7->11"]
    assert "It knows nothing of real video" in stdout  # the embedded model named by its folder is still that model
    assert (tmp_path / "o" / "demo_timeline.png").exists()


def test_the_timeline_goes_to_the_outputs_folder_not_the_working_tree(tmp_path):
    stdout = _demo("--frames", "3", cwd=tmp_path)
    png = tmp_path / "outputs" / "demo" / "demo_timeline.png"
    assert f"timeline: {png.resolve()}" in stdout and sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    assert "--model" in _demo("--help") and "with the embedded tiny model" not in _demo("--help")


def test_code_table_layout():
    import torch

    table = code_table(torch.tensor([[1, 2], [3, 4]]), np.array([0, 5, 10]), stride=1).splitlines()
    assert table[2].split() == ["0", "0->5", "1", "2"] and table[3].split() == ["1", "5->10", "3", "4"]
