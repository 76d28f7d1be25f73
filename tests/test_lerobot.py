"""LeRobot datasets (v3.0 and v2.1): reading episodes, frames by timestamp, pairs and targets, stats, Hub ids,
and the export of latent actions as per-frame features. Datasets are built by `lerobot_fixtures` in LeRobot's
layout."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import shutil
from pathlib import Path

import av
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_path
from lerobot_fixtures import (
    ALOHA_JOINTS,
    CAMERAS,
    aloha_episodes,
    encode_video,
    synthetic_episodes,
    write_lerobot_dataset,
)

from lary.errors import LaryError
from lary.lerobot import (
    INDICES,
    VALID,
    VECTORS,
    LeRobotFolder,
    export_latent_actions,
    frame_pairs,
    open_lerobot,
)
from lary.lerobot.stats import aggregate_stats, episode_stats

VERSIONS = ("v3.0", "v2.1")
LENGTHS = [12, 9, 15, 7]
FPS = 10
CODES, WIDTH = 4, 3


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, tuple[Path, list]]:
    """Per version: a dataset of four synthetic episodes (two cameras, two episodes per v3.0 file) and its data."""
    episodes = synthetic_episodes(LENGTHS)
    root = tmp_path_factory.mktemp("lerobot")
    return {version: (write_lerobot_dataset(root / version, version, episodes, FPS), episodes) for version in VERSIONS}


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a video (RGB) and its presentation time in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [
            (frame.to_ndarray(format="rgb24"), float(frame.pts * stream.time_base))
            for frame in container.decode(stream)
        ]
    return np.stack([frame for frame, _ in frames]), np.array([time for _, time in frames])


def tree_digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


# --- reading ---


@pytest.mark.parametrize("version", VERSIONS)
def test_episodes_read_back(synthetic, version):
    root, episodes = synthetic[version]
    dataset = open_lerobot(root, camera=CAMERAS[1])
    assert (dataset.version, dataset.fps, dataset.camera_keys) == (version, FPS, list(CAMERAS))
    assert [info.episode_index for info in dataset.episodes] == [0, 1, 2, 3]
    assert [info.length for info in dataset.episodes] == LENGTHS
    start = 0
    for info, data in zip(dataset.episodes, episodes):
        episode = dataset.read_episode(info)
        columns = episode.columns
        np.testing.assert_array_equal(columns["action"], data.action)
        np.testing.assert_array_equal(columns["observation.state"], data.state)
        np.testing.assert_array_equal(columns["frame_index"], np.arange(info.length))
        np.testing.assert_array_equal(columns["episode_index"], np.full(info.length, info.episode_index))
        np.testing.assert_array_equal(columns["index"], np.arange(start, start + info.length))
        np.testing.assert_allclose(columns["timestamp"], np.arange(info.length) / FPS, atol=1e-6)
        np.testing.assert_allclose(
            episode.video_timestamps, info.from_timestamp + np.arange(info.length) / FPS, atol=1e-6
        )
        assert info.video_file.is_file() and CAMERAS[1] in info.video_file.parts
        start += info.length
    spans = [(info.video_file.name, info.from_timestamp, info.to_timestamp) for info in dataset.episodes]
    if version == "v3.0":  # two episodes per file: the second of each starts where the first ends
        assert spans == [
            ("file-000.mp4", 0.0, 1.2),
            ("file-000.mp4", 1.2, 2.1),
            ("file-001.mp4", 0.0, 1.5),
            ("file-001.mp4", 1.5, 2.2),
        ]
    else:
        assert spans == [(f"episode_{i:06d}.mp4", 0.0, None) for i in range(4)]


@pytest.mark.parametrize("version", VERSIONS)
def test_frames_found_by_timestamp_are_the_episodes_own(synthetic, version):
    """Decoding a (v3.0: shared) video file once, each episode's rows find its own frames."""
    root, episodes = synthetic[version]
    dataset = open_lerobot(root, camera=CAMERAS[0], episodes=[1, 3])
    for info in dataset.episodes:
        episode = dataset.read_episode(info)
        frames, times = decode(info.video_file)
        positions = dataset.frame_positions(episode, times)
        source = episodes[info.episode_index].videos[CAMERAS[0]].astype(np.float32)
        for row, position in enumerate(positions):
            errors = np.abs(source - frames[position]).mean(axis=(1, 2, 3))
            assert errors.argmin() == row and errors[row] < 8  # lossy H.264, but nearest its own source frame


@pytest.mark.parametrize("version", VERSIONS)
def test_aloha_episodes_read_back(tmp_path, version):
    """Real rendered robot video: frames found by timestamp in the dataset's file are exactly the frames of the
    episode's own MP4 (v3.0 joins them without re-encoding), with the episode's actions and joint positions."""
    folder = shared_path("robot", "aloha")
    episodes = aloha_episodes(folder)
    root = write_lerobot_dataset(tmp_path / "aloha", version, episodes, fps=25, action_names=ALOHA_JOINTS)
    dataset = open_lerobot(root)
    assert dataset.camera == CAMERAS[0] and dataset.features["action"]["names"] == ALOHA_JOINTS
    assert [(info.length, info.from_timestamp) for info in dataset.episodes] == [
        (50, 0.0),
        (50, 2.0 if version == "v3.0" else 0.0),
    ]
    for info, data in zip(dataset.episodes, episodes):
        episode = dataset.read_episode(info)
        frames, times = decode(info.video_file)
        own_frames, _ = decode(data.videos[CAMERAS[0]])
        np.testing.assert_array_equal(frames[dataset.frame_positions(episode, times)], own_frames)
        np.testing.assert_array_equal(
            episode.columns["action"][:49], np.load(folder / f"ep_0{info.episode_index}_actions.npy").astype(np.float32)
        )
        np.testing.assert_array_equal(
            episode.columns["observation.state"],
            np.load(folder / f"ep_0{info.episode_index}_qpos.npy").astype(np.float32),
        )


def test_a_video_shorter_than_its_table_is_an_error(synthetic, tmp_path):
    root = shutil.copytree(synthetic["v2.1"][0], tmp_path / "short")
    dataset = open_lerobot(root, camera=CAMERAS[0], episodes=[0])
    encode_video(synthetic["v2.1"][1][0].videos[CAMERAS[0]][:10], dataset.episodes[0].video_file, FPS)
    episode = dataset.read_episode(dataset.episodes[0])
    with pytest.raises(LaryError, match=r"episode 0: its video .*episode_000000.mp4 has 10 frames, its table 12 rows"):
        dataset.frame_positions(episode, decode(dataset.episodes[0].video_file)[1])
    # v3.0: the next episode's frames in the same file never stand in for missing ones
    v30 = open_lerobot(synthetic["v3.0"][0], camera=CAMERAS[0], episodes=[0])
    times = decode(v30.episodes[0].video_file)[1]
    with pytest.raises(LaryError, match="has 11 frames, its table 12 rows"):
        v30.frame_positions(v30.read_episode(v30.episodes[0]), np.delete(times, 5))


# --- pairs and targets ---


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stride", [1, 3])
def test_pairs_and_targets(synthetic, version, stride):
    root, episodes = synthetic[version]
    dataset = open_lerobot(root, camera=CAMERAS[0])
    for info, data in zip(dataset.episodes, episodes):
        pairs = frame_pairs(dataset.read_episode(info), stride)
        count = info.length - stride
        assert len(pairs) == count and pairs.stride == stride and pairs.episode_index == info.episode_index
        np.testing.assert_array_equal(pairs.frame_index, np.arange(count))
        np.testing.assert_array_equal(pairs.next_frame_index, np.arange(count) + stride)
        np.testing.assert_allclose(pairs.timestamp, np.arange(count) / FPS, atol=1e-6)
        assert pairs.action.shape == (count, stride, 2) and pairs.state.shape == (count, stride + 1, 2)
        for t in range(count):
            np.testing.assert_array_equal(pairs.action[t], data.action[t : t + stride])
            np.testing.assert_array_equal(pairs.state[t], data.state[t : t + stride + 1])


def test_pairs_of_a_short_episode_and_a_bad_stride(synthetic):
    dataset = open_lerobot(synthetic["v3.0"][0], camera=CAMERAS[0], episodes=[3])
    episode = dataset.read_episode(dataset.episodes[0])
    assert len(frame_pairs(episode, 7)) == 0 and frame_pairs(episode, 7).action.shape == (0, 7, 2)
    with pytest.raises(LaryError, match="stride must be at least 1"):
        frame_pairs(episode, 0)


# --- stats ---


def test_stats_as_lerobot_computes_them():
    """Shapes per version, and v3.0's quantiles from a 5,000-bin histogram (not numpy's interpolation)."""
    stats = episode_stats(np.arange(10), "v3.0")
    width = 9 / 5000
    assert stats["count"].tolist() == [10] and stats["min"].tolist() == [0] and stats["max"].tolist() == [9]
    np.testing.assert_allclose(stats["mean"], [4.5])
    np.testing.assert_allclose(stats["std"], [np.arange(10).std()])
    np.testing.assert_allclose(
        [stats[q][0] for q in ("q01", "q10", "q50", "q90", "q99")],
        [0, 0, 2223 * width, 4445 * width, 4999.9 * width],
        atol=1e-8,
    )
    assert all(episode_stats(np.full((1, 3), 2.0), "v3.0")[q].tolist() == [2.0] * 3 for q in ("q01", "q99"))
    vectors = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    assert {name: value.shape for name, value in episode_stats(vectors, "v3.0").items()} == {
        "min": (3,),
        "max": (3,),
        "mean": (3,),
        "std": (3,),
        "count": (1,),
        "q01": (3,),
        "q10": (3,),
        "q50": (3,),
        "q90": (3,),
        "q99": (3,),
    }
    assert {name: value.shape for name, value in episode_stats(vectors, "v2.1").items()} == {
        "min": (4, 3),
        "max": (4, 3),
        "mean": (4, 3),
        "std": (4, 3),
        "count": (1,),
    }
    merged = aggregate_stats([episode_stats(vectors[:2], "v3.0"), episode_stats(vectors[2:], "v3.0")])
    whole = vectors.reshape(-1, 3)
    np.testing.assert_allclose(merged["mean"], whole.mean(0), rtol=1e-6)
    np.testing.assert_allclose(merged["std"], whole.std(0), rtol=1e-5)
    assert merged["count"].tolist() == [6] and np.array_equal(merged["min"], whole.min(0))


# --- errors ---


def test_reading_errors_name_what_is_wrong(synthetic, tmp_path):
    root = synthetic["v3.0"][0]
    with pytest.raises(
        LaryError, match=r"several cameras; pick one of \['observation.images.top', 'observation.images.wrist'\]"
    ):
        open_lerobot(root)
    with pytest.raises(
        LaryError,
        match=r"no camera 'observation.images.side'; its cameras: \['observation.images.top', 'observation.images.wrist'\]",
    ):
        open_lerobot(root, camera="observation.images.side")
    with pytest.raises(LaryError, match=r"has no episode 4 \(episodes 0..3\)"):
        open_lerobot(root, camera=CAMERAS[0], episodes=[0, 4])
    with pytest.raises(LaryError, match="no such folder, and not a Hub dataset id"):
        open_lerobot(tmp_path / "nowhere" / "at" / "all")
    with pytest.raises(LaryError, match="info.json is missing"):
        open_lerobot(tmp_path)

    old = shutil.copytree(root, tmp_path / "old")
    info = json.loads((old / "meta/info.json").read_text())
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.0"}))
    with pytest.raises(LaryError, match=r"codebase_version 'v2.0' is not supported \(only v3.0, v2.1\)"):
        open_lerobot(old)

    for version, video in (
        ("v3.0", "videos/observation.images.wrist/chunk-000/file-001.mp4"),
        ("v2.1", "videos/chunk-000/observation.images.wrist/episode_000002.mp4"),
    ):
        broken = shutil.copytree(synthetic[version][0], tmp_path / f"no-video-{version}")
        (broken / video).unlink()
        open_lerobot(broken, camera=CAMERAS[1], episodes=[0, 1])  # only the selected episodes' files are needed
        with pytest.raises(LaryError, match=f"{broken / video} is missing"):
            open_lerobot(broken, camera=CAMERAS[1], episodes=[2])

    no_data = shutil.copytree(root, tmp_path / "no-data")
    (no_data / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(LaryError, match="data/chunk-000/file-000.parquet is missing"):
        open_lerobot(no_data, camera=CAMERAS[0])

    no_column = shutil.copytree(root, tmp_path / "no-column")
    data = no_column / "data/chunk-000/file-001.parquet"
    pq.write_table(pq.read_table(data).drop_columns(["observation.state"]), data)
    dataset = open_lerobot(no_column, camera=CAMERAS[0])
    with pytest.raises(LaryError, match="file-001.parquet has no column 'observation.state'"):
        dataset.read_episode(dataset.episodes[2])

    no_meta_column = shutil.copytree(root, tmp_path / "no-meta-column")
    episodes = no_meta_column / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(episodes).drop_columns(["videos/observation.images.top/from_timestamp"]), episodes)
    with pytest.raises(
        LaryError, match="file-000.parquet has no column 'videos/observation.images.top/from_timestamp'"
    ):
        open_lerobot(no_meta_column, camera=CAMERAS[0])


# --- Hub ids ---


def test_hub_id_downloads_meta_then_only_the_selected_files(synthetic, tmp_path, monkeypatch):
    source = synthetic["v3.0"][0]
    commit = "0123456789abcdef0123456789abcdef01234567"
    calls = []

    def snapshot_download(repo_id, *, repo_type, revision, allow_patterns):
        """A Hub cache snapshot of the fixture: the files matching `allow_patterns`, as huggingface_hub filters."""
        calls.append((repo_id, repo_type, revision, list(allow_patterns)))
        snapshot = tmp_path / "hub" / "snapshots" / commit
        for path in source.rglob("*"):
            relative = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(relative, pattern) for pattern in allow_patterns):
                (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, snapshot / relative)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    dataset = open_lerobot("someone/aloha", revision="v3.0", camera=CAMERAS[1], episodes=[2, 3])
    assert [call[:3] for call in calls] == [("someone/aloha", "dataset", "v3.0"), ("someone/aloha", "dataset", commit)]
    assert calls[0][3] == ["meta/*"]
    assert calls[1][3] == ["data/chunk-000/file-001.parquet", "videos/observation.images.wrist/chunk-000/file-001.mp4"]
    assert dataset.root == tmp_path / "hub" / "snapshots" / commit
    assert (
        not (dataset.root / "videos" / CAMERAS[0]).exists()
        and not (dataset.root / "data/chunk-000/file-000.parquet").exists()
    )
    episode = dataset.read_episode(dataset.episodes[1])
    np.testing.assert_array_equal(episode.columns["action"], synthetic["v3.0"][1][3].action)
    assert (episode.from_timestamp, episode.to_timestamp) == (1.5, 2.2)


def test_hub_failure_is_named(monkeypatch):
    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline, and nothing cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        LaryError, match=r"someone/missing: not a local folder, and no Hub dataset could be downloaded \(offline"
    ):
        open_lerobot("someone/missing")


# --- export ---


def latent_rows(lengths: dict[int, int], stride: int, seed: int = 0, codes: int = CODES) -> pa.Table:
    """What `lary extract --lerobot` writes for these episodes: one row per pair (t, t + stride)."""
    rng = np.random.default_rng(seed)
    rows = {
        name: []
        for name in (
            "episode_index",
            "frame_index",
            "next_frame_index",
            "timestamp",
            "action_indices",
            "latent_actions",
            "continuous_latent_actions",
        )
    }
    for episode, length in lengths.items():
        for t in range(max(0, length - stride)):
            rows["episode_index"].append(episode)
            rows["frame_index"].append(t)
            rows["next_frame_index"].append(t + stride)
            rows["timestamp"].append(t / FPS)
            rows["action_indices"].append(((episode * 100 + t + np.arange(codes)) % 8).tolist())
            rows["latent_actions"].append(rng.standard_normal((codes, WIDTH)).astype(np.float32).tolist())
            rows["continuous_latent_actions"].append(rng.standard_normal((codes, 2)).astype(np.float32).tolist())
    types = {
        "action_indices": pa.list_(pa.int64()),
        "latent_actions": pa.list_(pa.list_(pa.float32())),
        "continuous_latent_actions": pa.list_(pa.list_(pa.float32())),
    }
    return pa.table({name: pa.array(values, type=types.get(name)) for name, values in rows.items()})


def write_shards(table: pa.Table, folder: Path) -> Path:
    """The rows shuffled over a shard and a retry shard, as a resumed extraction leaves them."""
    folder.mkdir(parents=True)
    order = np.random.default_rng(1).permutation(table.num_rows)
    half = len(order) // 2
    pq.write_table(table.take(order[:half]), folder / "shard-00000-of-00001.parquet")
    pq.write_table(table.take(order[half:]), folder / "shard-00000-of-00001.retry-1.parquet")
    return folder


def exported_rows(root: Path) -> dict[int, pa.Table]:
    data = pa.concat_tables([pq.read_table(path) for path in sorted(root.glob("data/*/*.parquet"))])
    return {episode: data.filter(pa.compute.equal(data["episode_index"], episode)) for episode in range(len(LENGTHS))}


def expected_stats(values: np.ndarray, version: str) -> dict[str, np.ndarray]:
    """min/max/mean/std as LeRobot reduces a (frames, n, D) feature: v3.0 over all but the last axis, v2.1 over
    frames."""
    flat = values.reshape(-1, values.shape[-1]) if version == "v3.0" else values
    return {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stride", [1, 3])
def test_export_round_trip(synthetic, tmp_path, version, stride):
    root = synthetic[version][0]
    before = tree_digest(root)
    lengths = dict(enumerate(LENGTHS))
    latents = latent_rows(lengths, stride)
    out = export_latent_actions(root, write_shards(latents, tmp_path / "latents"), tmp_path / "export")
    assert tree_digest(root) == before, "the source dataset changed"
    assert not (tmp_path / "export.incomplete").exists()

    # every frame t: the latent action of its pair (t, t + stride), invalid fills on the last `stride` frames
    by_pair = {
        (e, t): (i, v)
        for e, t, i, v in zip(
            *(
                latents.column(n).to_pylist()
                for n in ("episode_index", "frame_index", "action_indices", "latent_actions")
            )
        )
    }
    rows = exported_rows(out)
    for episode, length in lengths.items():
        table = rows[episode]
        indices, vectors = table[INDICES].to_pylist(), table[VECTORS].to_pylist()
        assert table[VALID].to_pylist() == [t < length - stride for t in range(length)]
        for t in range(length):
            expected = by_pair.get((episode, t), ([-1] * CODES, [[0.0] * WIDTH] * CODES))
            assert indices[t] == expected[0]
            np.testing.assert_array_equal(vectors[t], expected[1])

    # the export reads back as a dataset; its other columns, videos and metadata are the source's
    dataset = open_lerobot(out, camera=CAMERAS[0])
    source = LeRobotFolder(root, camera=CAMERAS[0])
    for info, original in zip(dataset.episodes, source.episodes):
        assert (info.length, info.from_timestamp, info.to_timestamp) == (
            original.length,
            original.from_timestamp,
            original.to_timestamp,
        )
        for name, values in dataset.read_episode(info).columns.items():
            np.testing.assert_array_equal(values, source.read_episode(original).columns[name])
    for path in root.rglob("*.mp4"):  # hard links (one file system here)
        assert (out / path.relative_to(root)).samefile(path)
    data_file = next(out.glob("data/*/*.parquet"))
    hf = json.loads(pq.read_schema(data_file).metadata[b"huggingface"])["info"]["features"]
    assert hf[INDICES]["_type"] == ("List" if version == "v3.0" else "Sequence") and hf[VECTORS]["_type"] == "Array2D"

    info = json.loads((out / "meta/info.json").read_text())
    original_info = json.loads((root / "meta/info.json").read_text())
    # each new feature says what its pairs are (shards without lary extract's manifest: how they were made is unknown)
    made = {"latent_action.stride_frames": stride} | {
        f"latent_action.{key}": None for key in ("model", "model_revision", "dtype", "stride_seconds", "codebook_size")
    }
    assert info["features"] == original_info["features"] | {
        INDICES: {"dtype": "int64", "shape": [CODES], "names": None, "info": made},
        VECTORS: {"dtype": "float32", "shape": [CODES, WIDTH], "names": None, "info": made},
        VALID: {"dtype": "bool", "shape": [1], "names": None, "info": made},
    }
    assert {key: value for key, value in info.items() if key != "features"} == {
        key: value for key, value in original_info.items() if key != "features"
    }

    # stats: indices and vectors over valid frames only, `valid` over all frames
    all_indices = np.array(latents["action_indices"].to_pylist())
    all_vectors = np.array(latents["latent_actions"].to_pylist())
    stats = json.loads((out / "meta/stats.json").read_text())
    assert {k: v for k, v in stats.items() if not k.startswith("latent_action")} == json.loads(
        (root / "meta/stats.json").read_text()
    )
    for name, values in ((INDICES, all_indices), (VECTORS, all_vectors)):
        assert stats[name]["count"] == [len(values)]
        for stat in ("min", "max", "mean", "std"):
            np.testing.assert_allclose(stats[name][stat], expected_stats(values, version)[stat], rtol=1e-6, atol=1e-9)
    assert stats[VALID]["count"] == [sum(LENGTHS)]
    np.testing.assert_allclose(stats[VALID]["mean"], [len(latents) / sum(LENGTHS)])
    if version == "v3.0":
        episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet")
        original = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
        assert episodes.select(original.column_names).equals(original)
        # quantiles merged as LeRobot does: bounds of the episodes' own
        np.testing.assert_allclose(stats[VECTORS]["q01"], np.min(episodes[f"stats/{VECTORS}/q01"].to_pylist(), axis=0))
        np.testing.assert_allclose(stats[VECTORS]["q99"], np.max(episodes[f"stats/{VECTORS}/q99"].to_pylist(), axis=0))
        saved = {
            name.split("/")[-1]: episodes[name].to_pylist()
            for name in episodes.column_names
            if name.startswith(f"stats/{INDICES}/")
        }
    else:
        lines = [json.loads(line) for line in (out / "meta/episodes_stats.jsonl").read_text().splitlines()]
        originals = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
        assert [{k: v for k, v in line["stats"].items() if not k.startswith("latent_action")} for line in lines] == [
            line["stats"] for line in originals
        ]
        saved = {stat: [line["stats"][INDICES][stat] for line in lines] for stat in ("min", "max", "mean", "count")}
    mask = latents["episode_index"].to_numpy()
    for episode, length in lengths.items():
        np.testing.assert_allclose(saved["mean"][episode], all_indices[mask == episode].mean(0))
        assert saved["count"][episode] == [length - stride]


def test_export_keeps_episodes_without_latents_invalid(synthetic, tmp_path, caplog):
    """An episode absent from the input (not extracted, or failed) stays in the copy, every frame invalid."""
    root = synthetic["v3.0"][0]
    latents = latent_rows({0: 12, 2: 15, 3: 7}, stride=1)
    with caplog.at_level(logging.WARNING, logger="lary.lerobot.export"):
        out = export_latent_actions(root, latents, tmp_path / "export", with_vectors=False, copy_videos=True)
    assert "episodes without latent actions (all frames invalid): [1]" in caplog.text
    for path in root.rglob("*.mp4"):
        copy = out / path.relative_to(root)
        assert not copy.samefile(path) and copy.read_bytes() == path.read_bytes()
    rows = exported_rows(out)
    assert rows[1][VALID].to_pylist() == [False] * 9 and rows[1][INDICES].to_pylist() == [[-1] * CODES] * 9
    assert rows[2][VALID].to_pylist() == [True] * 14 + [False]
    assert (
        VECTORS not in rows[0].column_names
        and VECTORS not in json.loads((out / "meta/info.json").read_text())["features"]
    )
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet")
    assert episodes[f"stats/{INDICES}/mean"].to_pylist()[1] is None
    assert episodes[f"stats/{VALID}/mean"].to_pylist()[1] == [0.0]


def test_export_of_one_code_per_pair(synthetic, tmp_path):
    """Shape (1,) is a scalar column for LeRobot (as `datasets.Value`), not a list of one."""
    out = export_latent_actions(
        synthetic["v3.0"][0], latent_rows(dict(enumerate(LENGTHS)), 1, codes=1), tmp_path / "out"
    )
    data = pq.read_table(next(out.glob("data/*/*.parquet")))
    assert data.schema.field(INDICES).type == pa.int64() and data[INDICES].to_pylist()[:2] == [0, 1]
    assert json.loads((out / "meta/info.json").read_text())["features"][INDICES]["shape"] == [1]
    assert json.loads(data.schema.metadata[b"huggingface"])["info"]["features"][INDICES] == {
        "dtype": "int64",
        "_type": "Value",
    }


def test_export_errors_name_what_is_wrong(synthetic, tmp_path):
    root = synthetic["v2.1"][0]
    lengths = dict(enumerate(LENGTHS))
    latents = latent_rows(lengths, stride=2)

    episode, frame = latents["episode_index"].to_numpy(), latents["frame_index"].to_numpy()
    partial = latents.filter(pa.array(~((episode == 2) & (frame == 5))))
    with pytest.raises(LaryError, match=r"the latent-action table: episode 2 lacks the pairs of frames \[5\]"):
        export_latent_actions(root, partial, tmp_path / "export")
    with pytest.raises(LaryError, match="episode 1, frame 2 has two rows"):
        export_latent_actions(root, pa.concat_tables([latents, latents.slice(12, 1)]), tmp_path / "export")
    mixed = pa.concat_tables([latents.filter(pa.array(episode != 0)), latent_rows({0: 12}, stride=1)])
    with pytest.raises(LaryError, match=r"must share one K >= 1; found K = \[1, 2\]"):
        export_latent_actions(root, mixed, tmp_path / "export")
    with pytest.raises(LaryError, match="episode 7 is not in the dataset"):
        export_latent_actions(root, pa.concat_tables([latents, latent_rows({7: 5}, stride=2)]), tmp_path / "export")
    with pytest.raises(LaryError, match="has no column 'next_frame_index'"):
        export_latent_actions(root, latents.drop_columns(["next_frame_index"]), tmp_path / "export")
    with pytest.raises(LaryError, match=r"no latent-action Parquet file \(\*.parquet\)"):
        export_latent_actions(root, tmp_path, tmp_path / "export")
    assert not (tmp_path / "export").exists() and not (tmp_path / "export.incomplete").exists()

    (tmp_path / "taken").mkdir()
    with pytest.raises(LaryError, match="taken exists"):
        export_latent_actions(root, latents, tmp_path / "taken")
    with pytest.raises(LaryError, match="is inside the dataset"):
        export_latent_actions(root, latents, root / "export")
    out = export_latent_actions(root, latents, tmp_path / "export")
    with pytest.raises(LaryError, match="already has a feature 'latent_action.indices'"):
        export_latent_actions(out, latents, tmp_path / "again")


def test_a_failed_export_leaves_no_dataset(synthetic, tmp_path, monkeypatch):
    root = synthetic["v3.0"][0]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("lary.lerobot.export._write_episode_stats", fail)
    with pytest.raises(OSError, match="disk full"):
        export_latent_actions(root, latent_rows(dict(enumerate(LENGTHS)), stride=1), tmp_path / "export")
    assert not (tmp_path / "export").exists() and not (tmp_path / "export.incomplete").exists()
