"""`lary extract --lerobot` on LeRobot datasets (v3.0 and v2.1, several episodes per file, real ALOHA video), `lary
export` writing the latent actions back, and `lary evaluate --data ... --split-by episode` on the rows: "do latent
actions predict my robot's actions?" in two commands."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import shared_path
from lerobot_fixtures import (
    CAMERAS,
    aloha_episodes,
    synthetic_episodes,
    write_lerobot_dataset,
)
from test_extract import extract, read_manifest, read_output, save_tiny_model
from transformers import AutoModel

from lary import LapaDinov3Processor
from lary.cli import main as lary_main
from lary.errors import LaryError
from lary.frames import read_video
from lary.lerobot import INDICES, VALID, open_lerobot

LENGTHS = [12, 9, 15]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module", params=["v3.0", "v2.1"])
def synthetic(request, tmp_path_factory) -> tuple[Path, list]:
    episodes = synthetic_episodes(LENGTHS)
    return write_lerobot_dataset(tmp_path_factory.mktemp("ds") / "ds", request.param, episodes, fps=10), episodes


def test_pairs_of_each_episode_with_their_actions_states_and_latent_actions(tmp_path, synthetic, tiny_model):
    root, episodes = synthetic
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--lerobot", str(root), "--camera", CAMERAS[0], "--stride", "2",
                   "--batch-size", "4", "--shard-size", "7", "--out", str(out)) == 0
    table = read_output(out)
    assert table.num_rows == sum(length - 2 for length in LENGTHS)
    assert table.column("id").to_pylist()[0] == "episode_000000"
    episode_index = np.array(table.column("episode_index").to_pylist())
    frame_index = np.array(table.column("frame_index").to_pylist())
    assert episode_index.tolist() == [e for e, length in enumerate(LENGTHS) for _ in range(length - 2)]
    assert frame_index.tolist() == [t for length in LENGTHS for t in range(length - 2)]
    assert table.column("next_frame_index").to_pylist() == (frame_index + 2).tolist()
    np.testing.assert_allclose(table.column("timestamp").to_pylist(), frame_index / 10, atol=1e-6)
    for row, (e, t) in enumerate(zip(episode_index, frame_index)):
        np.testing.assert_array_equal(table.column("action")[row].as_py(), episodes[e].action[t : t + 2])
        np.testing.assert_array_equal(table.column("observation.state")[row].as_py(), episodes[e].state[t : t + 3])

    # the latent actions of episode 1 (the second of its file in v3.0) equal the model on its own frames
    dataset = open_lerobot(root, camera=CAMERAS[0])
    info = dataset.episodes[1]
    decoded = read_video(info.video_file)
    first = round(info.from_timestamp * 10)
    with torch.inference_mode():
        model = AutoModel.from_pretrained(tiny_model).eval()
        expected = model(**LapaDinov3Processor()(videos=[list(decoded[first : first + LENGTHS[1]])], stride=2))
    rows = table.filter(np.array(episode_index) == 1)
    assert np.array(rows.column("action_indices").to_pylist()).tolist() == expected.action_indices[0].tolist()
    np.testing.assert_allclose(np.array(rows.column("latent_actions").to_pylist()), expected.latent_actions[0], atol=1e-5)
    manifest = read_manifest(out)
    assert (manifest["dataset"], manifest["arguments"]["camera"], manifest["layout"]) == (str(root), CAMERAS[0], "pair")


def test_export_writes_the_latent_actions_back_and_the_probe_reads_them(tmp_path, synthetic, tiny_model):
    root, episodes = synthetic
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--lerobot", str(root), "--camera", CAMERAS[1], "--stride", "3",
                   "--out", str(out)) == 0
    assert lary_main(["export", "--lerobot", str(root), "--latent-actions", str(out), "--out", str(tmp_path / "copy"),
                      "--no-vectors"]) == 0
    features = json.loads((tmp_path / "copy" / "meta" / "info.json").read_text())["features"]
    assert INDICES in features and VALID in features and "latent_action.vectors" not in features
    # what (t, t + K) the codes describe and what made them, where LeRobot keeps a feature's own metadata
    manifest = read_manifest(out)
    assert features[INDICES]["info"] == features[VALID]["info"] == {
        "latent_action.stride_frames": 3, "latent_action.model": str(tiny_model),
        "latent_action.model_revision": manifest["model_revision"], "latent_action.dtype": "float32",
        "latent_action.stride_seconds": None,
        "latent_action.codebook_size": AutoModel.from_pretrained(tiny_model).config.codebook_size}
    assert manifest["model_revision"]
    copy = open_lerobot(tmp_path / "copy", camera=CAMERAS[0])
    episode = copy.read_episode(copy.episodes[2])
    assert len(episode.columns["frame_index"]) == LENGTHS[2]
    # and its data files load as LeRobot loads them (datasets' Parquet builder, features from the files' metadata)
    frames = datasets.load_dataset("parquet", data_files=str(tmp_path / "copy" / "data" / "*" / "*.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf"))
    assert len(frames) == sum(LENGTHS) and frames.features[VALID].dtype == "bool"
    assert sum(frames[VALID]) == sum(length - 3 for length in LENGTHS)

    results_dir = tmp_path / "probe"
    assert lary_main(["evaluate", "--task", "regression", "--data", str(out), "--split-by", "episode",
                      "--validation-fraction", "0.34", "--out", str(results_dir), "--cpu", "--epochs", "2",
                      "--hidden-dim", "16", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads((results_dir / "results.json").read_text())
    assert results["splits"]["split"]["split_by"] == "episode_index"
    assert len(results["splits"]["split"]["validation_groups"]) == 1 and len(results["splits"]["split"]["train_groups"]) == 2


def test_real_robot_video_and_an_episode_shorter_than_its_table(tmp_path, tiny_model):
    aloha = aloha_episodes(shared_path("robot", "aloha"))
    root = write_lerobot_dataset(tmp_path / "aloha", "v2.1", aloha, fps=25)
    short = root / "videos" / "chunk-000" / CAMERAS[0] / "episode_000001.mp4"
    from lerobot_fixtures import encode_video

    encode_video(read_video(short)[:40], short, fps=25)  # the video now ends 10 frames before the table
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--lerobot", str(root), "--out", str(out)) == 1
    table = read_output(out)
    assert table.num_rows == 49 and set(table.column("episode_index").to_pylist()) == {0}
    np.testing.assert_array_equal(np.array(table.column("action").to_pylist())[:, 0],
                                  np.load(shared_path("robot", "aloha", "ep_00_actions.npy")).astype(np.float32))
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert errors[0]["id"] == "episode_000001" and "has 40 frames, its table 50 rows" in errors[0]["reason"]
    with pytest.raises(LaryError, match=r"no camera 'observation.images.side'; its cameras: \['observation.images.top'\]"):
        extract("--model", str(tiny_model), "--lerobot", str(root), "--camera", "observation.images.side", "--out", str(tmp_path / "x"))
    with pytest.raises(LaryError, match="no episode 7"):
        extract("--model", str(tiny_model), "--lerobot", str(root), "--episodes", "7", "--out", str(tmp_path / "y"))


def test_an_export_of_stride_seconds_records_the_seconds_and_the_frames(tmp_path, tiny_model):
    root = write_lerobot_dataset(tmp_path / "ds", "v3.0", synthetic_episodes([12, 9]), fps=10)
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--lerobot", str(root), "--camera", CAMERAS[0], "--stride-seconds",
                   "0.3", "--out", str(out)) == 0
    assert lary_main(["export", "--lerobot", str(root), "--latent-actions", str(out), "--out", str(tmp_path / "copy"),
                      "--no-vectors"]) == 0
    info = json.loads((tmp_path / "copy" / "meta" / "info.json").read_text())["features"][INDICES]["info"]
    assert (info["latent_action.stride_seconds"], info["latent_action.stride_frames"]) == (0.3, 3)
