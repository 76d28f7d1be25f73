"""Small LeRobot datasets for tests, v3.0 and v2.1, in the layout `lerobot` writes (`src/lerobot/datasets/`:
`dataset_writer.py`, `dataset_metadata.py`, `video_utils.py`; v2.1 as of lerobot v0.3.3).

    root = write_lerobot_dataset(tmp_path / "ds", "v3.0", synthetic_episodes([12, 9, 15]), fps=10)

v3.0 puts `episodes_per_file` episodes in each data and video file: videos are encoded per episode and joined
with FFmpeg's concat demuxer without re-encoding, as LeRobot does, so later episodes start at `from_timestamp` > 0.
A camera's video may be given as frames (encoded with libx264, yuv420p) or as an MP4 file (used as it is).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lary.lerobot.stats import aggregate_stats, episode_stats
from lary.synthetic import make_clip

CAMERAS = ("observation.images.top", "observation.images.wrist")
ALOHA_JOINTS = [
    f"{side}_{joint}"
    for side in ("left", "right")
    for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
]


@dataclass
class EpisodeData:
    """One episode to write: `videos` maps each camera to (T, H, W, 3) uint8 frames or an MP4 file of T frames."""

    videos: dict[str, np.ndarray | Path]
    action: np.ndarray  # (T, A) float32: the command at frame t
    state: np.ndarray  # (T, S) float32
    task: str

    @property
    def length(self) -> int:
        return len(self.action)


def synthetic_episodes(lengths: list[int], size: int = 64, seed: int = 0) -> list[EpisodeData]:
    """Clips of a shape moving in a known direction (`lary.synthetic`), slowly enough to stay in view so that every
    frame differs from the others; two cameras (the wrist one mirrored). `action[t]` is the shape's velocity (plus
    a drift, so rows differ) and `state[t]` its displacement since frame 0."""
    episodes = []
    for number, length in enumerate(lengths):
        clip = make_clip(number % 8, num_frames=length, size=size, speed=(1.0, 2.5), seed=seed + number)
        velocity = np.array(clip.velocity, dtype=np.float32)
        action = np.tile(velocity, (length, 1)) + np.arange(length, dtype=np.float32)[:, None] * 0.01
        state = np.cumsum(np.vstack([np.zeros((1, 2), np.float32), action[:-1]]), axis=0, dtype=np.float32)
        videos = {CAMERAS[0]: clip.frames, CAMERAS[1]: clip.frames[:, :, ::-1].copy()}
        episodes.append(EpisodeData(videos, action, state, task=f"move {number % 8}"))
    return episodes


def aloha_episodes(folder: Path) -> list[EpisodeData]:
    """The two rendered ALOHA episodes of the shared fixtures (50 frames, 25 fps, one camera). Their 49 commands
    are those applied between frames t and t + 1; frame 49 holds the last one (no pair ever uses it)."""
    episodes = []
    for name in ("ep_00", "ep_01"):
        commands = np.load(folder / f"{name}_actions.npy").astype(np.float32)
        action = np.vstack([commands, commands[-1:]])
        state = np.load(folder / f"{name}_qpos.npy").astype(np.float32)
        episodes.append(EpisodeData({CAMERAS[0]: folder / f"{name}.mp4"}, action, state, task="insert the peg"))
    return episodes


def encode_video(frames: np.ndarray, path: Path, fps: int) -> Path:
    """H.264 yuv420p MP4 as LeRobot's `encode_video_frames` makes it (PyAV, a keyframe every 2 frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", fps, options={"g": "2", "crf": "18"})
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = frames.shape[1:3]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def concatenate_videos(paths: list[Path], target: Path) -> None:
    """Join MP4 files without re-encoding through FFmpeg's concat demuxer, as LeRobot's `concatenate_video_files`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".ffconcat", delete=False) as listing:
        listing.write("ffconcat version 1.0\n" + "".join(f"file '{path.resolve()}'\n" for path in paths))
    with (
        av.open(listing.name, "r", format="concat", options={"safe": "0"}) as source,
        av.open(str(target), "w", options={"movflags": "faststart"}) as output,
    ):
        streams = {}
        for stream in source.streams.video:
            streams[stream.index] = output.add_stream_from_template(template=stream, opaque=True)
            streams[stream.index].time_base = stream.time_base
        for packet in source.demux():
            if packet.stream.index in streams and packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                output.mux(packet)
    Path(listing.name).unlink()


def video_duration(path: Path) -> float:
    """As LeRobot's `get_video_duration_in_s`: the stream's duration."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def video_info(path: Path, version: str) -> dict:
    """The `info` block LeRobot's `get_video_info` writes for a video feature."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "video.fps": int(stream.base_rate),
            "video.channels": 3,
            "has_audio": False,
        }
    return {**info, "is_depth_map": False} if version == "v3.0" else {**info, "video.is_depth_map": False}


def _image_stats(frames: np.ndarray, version: str) -> dict[str, np.ndarray]:
    """Per-channel stats of frames in [0, 1], shape (3, 1, 1), as LeRobot keeps them for cameras (which it takes
    from frames downsampled to about 150 pixels when they are 300 or more)."""
    step = max(frames.shape[1:3]) // 150 if max(frames.shape[1:3]) >= 300 else 1
    stats = episode_stats(frames[:, ::step, ::step].reshape(-1, 3) / 255.0, version)
    shaped = {name: value.reshape(3, 1, 1) for name, value in stats.items() if name != "count"}
    return {**shaped, "count": np.array([len(frames)])}


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _hf_metadata(features: dict[str, dict], legacy: bool) -> dict[bytes, bytes]:
    """The `huggingface` schema metadata `datasets` writes (`legacy`: datasets < 4, `Sequence` for lists)."""
    described = {}
    for name, feature in features.items():
        value = {"dtype": feature["dtype"], "_type": "Value"}
        if feature["shape"] != [1]:
            value = {"feature": value, "length": feature["shape"][0], "_type": "Sequence" if legacy else "List"}
        described[name] = value
    return {b"huggingface": json.dumps({"info": {"features": described}}).encode()}


def _frame_table(columns: dict[str, np.ndarray], features: dict[str, dict], legacy: bool) -> pa.Table:
    """Per-frame rows typed as LeRobot stores them: scalars, fixed-size lists for vectors."""
    arrays = {}
    for name, feature in features.items():
        values = columns[name].astype(feature["dtype"])
        arrays[name] = (
            pa.array(values)
            if values.ndim == 1
            else pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
        )
    table = pa.table(arrays)
    return table.replace_schema_metadata(_hf_metadata(features, legacy))


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False))


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _as_lists(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    return {name: {stat: value.tolist() for stat, value in s.items()} for name, s in stats.items()}


def write_lerobot_dataset(
    root: Path,
    version: str,
    episodes: list[EpisodeData],
    fps: int,
    episodes_per_file: int = 2,
    action_names: list[str] | None = None,
    stats_json: bool = True,
) -> Path:
    """Write `episodes` as a LeRobot dataset of `version` ("v3.0" or "v2.1") into `root`. `stats_json`: also
    `meta/stats.json` in v2.1 (lerobot 0.3 no longer writes it, datasets converted from v2.0 have it)."""
    cameras = list(episodes[0].videos)
    tasks = list(dict.fromkeys(episode.task for episode in episodes))
    action_dim, state_dim = episodes[0].action.shape[1], episodes[0].state.shape[1]
    names = action_names or [f"motor_{i}" for i in range(action_dim)]
    frame_features = {
        "action": {"dtype": "float32", "shape": [action_dim], "names": names},
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": names[:state_dim]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    # LeRobot: the robot's features first, then the cameras, then its own per-frame features
    features = dict(list(frame_features.items())[:2])
    for camera in cameras:
        features[camera] = {"dtype": "video", "shape": None, "names": ["height", "width", "channels"], "info": None}
    features |= dict(list(frame_features.items())[2:])

    with tempfile.TemporaryDirectory() as scratch:
        # per-episode videos: encoded, or the given files
        episode_videos = []
        for number, episode in enumerate(episodes):
            videos = {}
            for camera, video in episode.videos.items():
                if isinstance(video, Path):
                    videos[camera] = video
                else:
                    videos[camera] = encode_video(video, Path(scratch) / f"{number}-{camera}.mp4", fps)
            episode_videos.append(videos)

        rows, start = [], 0
        for number, episode in enumerate(episodes):
            length = episode.length
            columns = {
                "action": episode.action,
                "observation.state": episode.state,
                "timestamp": np.arange(length) / fps,
                "frame_index": np.arange(length),
                "episode_index": np.full(length, number),
                "index": np.arange(start, start + length),
                "task_index": np.full(length, tasks.index(episode.task)),
            }
            stats = {name: episode_stats(values, version) for name, values in columns.items()}
            for camera in cameras:
                video = episode.videos[camera]
                frames = video if isinstance(video, np.ndarray) else _decode(video)
                stats[camera] = _image_stats(frames, version)
            rows.append((columns, stats))
            start += length

        if version == "v3.0":
            _write_v30(root, episodes, episode_videos, rows, frame_features, cameras, tasks, episodes_per_file)
        else:
            _write_v21(root, episodes, episode_videos, rows, frame_features, cameras, tasks, stats_json)
        for camera in cameras:  # LeRobot probes the first episode's video
            features[camera]["info"] = video_info(episode_videos[0][camera], version)
            features[camera]["shape"] = [features[camera]["info"][f"video.{side}"] for side in ("height", "width")] + [
                3
            ]

    info = {"codebase_version": version}
    total = {"total_episodes": len(episodes), "total_frames": start, "total_tasks": len(tasks)}
    if version == "v3.0":
        info |= {"fps": fps, "features": features, **total, "chunks_size": 1000}
        info |= {"data_files_size_in_mb": 100, "video_files_size_in_mb": 200}
        info |= {"data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"}
        info |= {"video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
        info |= {"robot_type": "aloha", "splits": {"train": f"0:{len(episodes)}"}}
    else:
        info |= {"robot_type": "aloha", **total, "total_videos": len(episodes) * len(cameras), "total_chunks": 1}
        info |= {"chunks_size": 1000, "fps": fps, "splits": {"train": f"0:{len(episodes)}"}}
        info |= {"data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"}
        info |= {"video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
        info |= {"features": features}
    _write_json(root / "meta" / "info.json", info)
    return root


def _write_v30(root, episodes, episode_videos, rows, frame_features, cameras, tasks, episodes_per_file) -> None:
    meta: dict[str, list] = {}
    groups = [range(i, min(i + episodes_per_file, len(episodes))) for i in range(0, len(episodes), episodes_per_file)]
    for file_index, group in enumerate(groups):
        path = root / f"data/chunk-000/file-{file_index:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = None
        for number in group:  # one row group per episode
            table = _frame_table(rows[number][0], frame_features, legacy=False)
            writer = writer or pq.ParquetWriter(path, table.schema, compression="snappy", use_dictionary=True)
            writer.write_table(table)
        writer.close()
        for camera in cameras:
            parts = [episode_videos[number][camera] for number in group]
            concatenate_videos(parts, root / f"videos/{camera}/chunk-000/file-{file_index:03d}.mp4")
        from_timestamp = {camera: 0.0 for camera in cameras}
        for number in group:
            columns, stats = rows[number]
            entry = {
                "episode_index": number,
                "tasks": [episodes[number].task],
                "length": episodes[number].length,
                "data/chunk_index": 0,
                "data/file_index": file_index,
                "dataset_from_index": int(columns["index"][0]),
                "dataset_to_index": int(columns["index"][-1]) + 1,
            }
            for camera in cameras:
                duration = video_duration(episode_videos[number][camera])
                entry |= {f"videos/{camera}/chunk_index": 0, f"videos/{camera}/file_index": file_index}
                entry |= {f"videos/{camera}/from_timestamp": from_timestamp[camera]}
                entry |= {f"videos/{camera}/to_timestamp": from_timestamp[camera] + duration}
                from_timestamp[camera] += duration
            for name, feature_stats in stats.items():
                entry |= {f"stats/{name}/{stat}": value.tolist() for stat, value in feature_stats.items()}
            entry |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            for key, value in entry.items():
                meta.setdefault(key, []).append(value)
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict(meta), path)
    pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task")).to_parquet(
        root / "meta/tasks.parquet"
    )
    stats = {name: aggregate_stats([s[name] for _, s in rows]) for name in rows[0][1]}
    _write_json(root / "meta/stats.json", _as_lists(stats))


def _write_v21(root, episodes, episode_videos, rows, frame_features, cameras, tasks, stats_json) -> None:
    for number, (columns, _) in enumerate(rows):
        path = root / f"data/chunk-000/episode_{number:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_frame_table(columns, frame_features, legacy=True), path)
        for camera in cameras:
            target = root / f"videos/chunk-000/{camera}/episode_{number:06d}.mp4"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(episode_videos[number][camera], target)
    meta = root / "meta"
    _write_jsonl(meta / "tasks.jsonl", [{"task_index": i, "task": task} for i, task in enumerate(tasks)])
    _write_jsonl(
        meta / "episodes.jsonl",
        [{"episode_index": i, "tasks": [e.task], "length": e.length} for i, e in enumerate(episodes)],
    )
    _write_jsonl(
        meta / "episodes_stats.jsonl", [{"episode_index": i, "stats": _as_lists(s)} for i, (_, s) in enumerate(rows)]
    )
    if stats_json:
        _write_json(meta / "stats.json", _as_lists({n: aggregate_stats([s[n] for _, s in rows]) for n in rows[0][1]}))
