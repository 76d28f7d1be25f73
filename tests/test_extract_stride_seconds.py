"""`lary extract --stride-seconds S`: pairs (t, t + k), k = round(S x fps) of each video (or LeRobot dataset), the
same rows as `--stride k` there, fps and k in manifest.json; an S of 0 frames, or without a frame rate, refused in
one line; `stride_seconds` in `lary.lerobot.frame_pairs`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lerobot_fixtures import CAMERAS, synthetic_episodes, write_lerobot_dataset
from test_extract import ENV, extract, read_manifest, read_output

from lary.errors import LaryError
from lary.hub import EMBEDDED_MODEL
from lary.lerobot import frame_pairs, open_lerobot
from lary.synthetic import make_clips, write_video

MODEL = str(EMBEDDED_MODEL)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two 12-frame clips, one at 8 fps and one at 16 fps."""
    folder = tmp_path_factory.mktemp("videos")
    slow, fast = make_clips(2, seed=3, num_frames=12)
    write_video(slow.frames, folder / "slow.mkv", fps=8)
    write_video(fast.frames, folder / "fast.mkv", fps=16)
    return folder


def test_each_video_gets_its_own_frames_and_the_rows_of_that_stride(tmp_path, videos):
    out = tmp_path / "seconds"
    assert extract("--model", MODEL, "--videos", str(videos / "*.mkv"), "--stride-seconds", "0.25", "--out", str(out)) == 0
    manifest = read_manifest(out)
    assert (manifest["stride_seconds"], manifest["stride"]) == (0.25, None)  # 2 frames at 8 fps, 4 at 16 fps
    assert manifest["fps"] == {"fast.mkv": 16.0, "slow.mkv": 8.0}
    assert manifest["stride_frames"] == {"fast.mkv": 4, "slow.mkv": 2}
    table = read_output(out).to_pydict()
    gaps = {(name, b - a) for name, a, b in zip(table["id"], table["frame_index"], table["next_frame_index"])}
    assert gaps == {("fast.mkv", 4), ("slow.mkv", 2)}
    assert len(table["id"]) == (12 - 4) + (12 - 2)
    assert {round(b - a, 6) for a, b in zip(table["timestamp"], table["next_timestamp"])} == {0.25}
    # the same rows, codes included, as --stride in frames on each video alone
    for name, stride in (("slow.mkv", "2"), ("fast.mkv", "4")):
        alone = tmp_path / name
        assert extract("--model", MODEL, "--videos", str(videos / name), "--stride", stride, "--out", str(alone)) == 0
        expected = read_output(alone).to_pydict()
        rows = [i for i, row_id in enumerate(table["id"]) if row_id == name]
        for column in ("frame_index", "next_frame_index", "action_indices", "latent_actions"):
            assert [table[column][i] for i in rows] == expected[column], column


def test_an_s_of_zero_frames_or_without_a_rate_is_refused_in_one_line(tmp_path, videos):
    def refused(*args: str) -> str:
        completed = subprocess.run([sys.executable, "-m", "lary", "extract", "--model", MODEL, *args, "--cpu"],
                                   capture_output=True, text=True, env=ENV, timeout=300)
        assert completed.returncode == 2, completed.stderr
        return completed.stderr.strip().splitlines()[-1]

    line = refused("--videos", str(videos / "*.mkv"), "--stride-seconds", "0.05", "--out", str(tmp_path / "o"))
    assert line == (f"lary extract: error: --stride-seconds 0.05 is 0.40 frames of {videos / 'slow.mkv'} at 8 fps, "
                    "which rounds to 0: give at least 0.0625 s")
    assert not (tmp_path / "o" / "plan.json").exists() and not (tmp_path / "o" / "run.json").exists()
    assert "goes with --videos or --lerobot" in refused("--images", str(videos), "--stride-seconds", "1", "--out", "x")
    assert "not allowed with argument" in refused("--videos", "a.mp4", "--stride-seconds", "1", "--stride", "2", "--out", "x")


def test_lerobot_pairs_at_the_dataset_rate(tmp_path):
    episodes = synthetic_episodes([12, 9])
    root = write_lerobot_dataset(tmp_path / "ds", "v3.0", episodes, fps=10)
    out = tmp_path / "out"
    assert extract("--model", MODEL, "--lerobot", str(root), "--camera", CAMERAS[0], "--stride-seconds", "0.3",
                   "--out", str(out)) == 0
    manifest = read_manifest(out)
    assert (manifest["stride"], manifest["fps"], manifest["stride_frames"]) == (
        3, {"episode_000000": 10.0, "episode_000001": 10.0}, {"episode_000000": 3, "episode_000001": 3})
    table = read_output(out).to_pydict()
    assert len(table["id"]) == (12 - 3) + (9 - 3) and all(len(action) == 3 for action in table["action"])

    dataset = open_lerobot(root, camera=CAMERAS[0])
    episode = dataset.read_episode(dataset.episodes[0])
    pairs = frame_pairs(episode, stride_seconds=0.3, fps=dataset.fps)
    assert (pairs.stride, len(pairs)) == (3, 9) and pairs.action.shape[1] == 3
    with pytest.raises(LaryError, match="is 0.30 frames of episode 0 at 10 fps"):
        frame_pairs(episode, stride_seconds=0.03, fps=dataset.fps)
    with pytest.raises(LaryError, match="one of them"):
        frame_pairs(episode, 2, stride_seconds=0.3, fps=dataset.fps)
