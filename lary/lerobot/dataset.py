"""Reading a LeRobot dataset (v3.0 or v2.1, a local folder or a Hub id) for latent-action extraction: its episodes,
each with its per-frame rows, its camera's video file and where its frames lie in that file.

    dataset = open_lerobot("lerobot/aloha_sim_insertion_human", camera="observation.images.top", episodes=[0, 1])
    for info in dataset.episodes:
        episode = dataset.read_episode(info)          # rows as numpy arrays, video timestamps
        positions = dataset.frame_positions(episode, decoded_frame_times)

Only the `lerobot` file layout is used (through pyarrow and `huggingface_hub`), never the `lerobot` package.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from lary.errors import LaryError

from .layout import INFO_PATH, V30, camera_keys, episode_table, read_info

logger = logging.getLogger(__name__)

# Per-frame columns read for each episode: always present in LeRobot data files, or only if info.json has them.
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index")
OPTIONAL_FRAME_COLUMNS = ("action", "observation.state", "task_index")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class EpisodeInfo:
    """Where one episode is: `length` rows of `data_file`, and frames of the camera's `video_file` from
    `from_timestamp` to `to_timestamp` seconds (v3.0). In v2.1 the file holds the episode alone: 0 and None."""

    episode_index: int
    length: int
    data_file: Path
    video_file: Path
    from_timestamp: float
    to_timestamp: float | None


@dataclass(frozen=True, eq=False)
class Episode(EpisodeInfo):
    """An episode with its rows: `columns` maps `timestamp`, `frame_index`, `episode_index`, `index` and, where the
    dataset has them, `action`, `observation.state`, `task_index` to arrays of `length` rows (vectors: (length, dim)).
    `video_timestamps[i]` is where frame i is in `video_file`: `from_timestamp + timestamp[i]` (seconds)."""

    columns: dict[str, np.ndarray]
    video_timestamps: np.ndarray


def _column_to_numpy(column) -> np.ndarray:
    """A Parquet column as numpy: scalars as (rows,), fixed or variable lists of equal size as (rows, size)."""
    column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
        return column.to_numpy(zero_copy_only=False)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), -1)


class LeRobotFolder:
    """A LeRobot dataset on disk, one camera of it and a selection of its episodes.

    Attributes: `root`, `info` (meta/info.json), `version` ("v3.0" or "v2.1"), `fps`, `features`, `camera_keys`
    (features stored as video), `camera` (the selected one), `episodes` (list of `EpisodeInfo`, by index).
    `camera=None` takes the only camera; `episodes=None` takes them all.
    """

    def __init__(self, root: str | Path, camera: str | None = None, episodes: Iterable[int] | None = None):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.version: str = self.info["codebase_version"]
        self.fps: int = self.info["fps"]
        self.features: dict[str, dict] = self.info["features"]
        self.camera_keys = camera_keys(self.info)
        self.camera = self._pick_camera(camera)
        table = episode_table(self.root, self.info, self.camera)
        available = table["episode_index"].tolist()
        rows = range(len(available)) if episodes is None else [self._row(available, index) for index in episodes]
        self.episodes = [
            EpisodeInfo(
                episode_index=int(table["episode_index"][row]),
                length=int(table["length"][row]),
                data_file=table["data_file"][row],
                video_file=table["video_file"][row],
                from_timestamp=float(table["from_timestamp"][row]),
                to_timestamp=None if np.isnan(table["to_timestamp"][row]) else float(table["to_timestamp"][row]),
            )
            for row in sorted(set(rows))
        ]

    def _pick_camera(self, camera: str | None) -> str:
        if not self.camera_keys:
            raise LaryError(f"{self.root}: no feature of dtype 'video' in meta/info.json (image features are not read)")
        if camera is None:
            if len(self.camera_keys) > 1:
                raise LaryError(f"{self.root} has several cameras; pick one of {self.camera_keys}")
            return self.camera_keys[0]
        if camera not in self.camera_keys:
            raise LaryError(f"{self.root} has no camera {camera!r}; its cameras: {self.camera_keys}")
        return camera

    def _row(self, available: list[int], index: int) -> int:
        try:
            return available.index(index)
        except ValueError:
            span = f"{available[0]}..{available[-1]}" if available else "none"
            raise LaryError(f"{self.root} has no episode {index} (episodes {span})") from None

    def files(self) -> list[str]:
        """The data and video files of the selected episodes, relative to `root` (what a Hub download needs)."""
        paths = {info.data_file for info in self.episodes} | {info.video_file for info in self.episodes}
        return sorted(path.relative_to(self.root).as_posix() for path in paths)

    def check_files(self) -> None:
        """Raise naming the first data or video file of the selected episodes that is missing."""
        for path in self.files():
            if not (self.root / path).is_file():
                raise LaryError(f"{self.root / path} is missing (named by {self.root / 'meta'})")

    def read_episode(self, info: EpisodeInfo) -> Episode:
        """The episode's rows, read from its data file (v3.0: only its own rows, by `episode_index`)."""
        wanted = list(FRAME_COLUMNS) + [name for name in OPTIONAL_FRAME_COLUMNS if name in self.features]
        try:
            names = pq.read_schema(info.data_file).names
        except FileNotFoundError:
            raise LaryError(f"{info.data_file} is missing (episode {info.episode_index})") from None
        missing = [name for name in wanted if name not in names]
        if missing:
            raise LaryError(f"{info.data_file} has no column {missing[0]!r}")
        filters = [("episode_index", "=", info.episode_index)] if self.version == V30 else None
        table = pq.read_table(info.data_file, columns=wanted, filters=filters)
        if table.num_rows != info.length:
            raise LaryError(
                f"episode {info.episode_index}: {info.data_file} has {table.num_rows} rows, the episode metadata "
                f"says length {info.length}"
            )
        columns = {name: _column_to_numpy(table.column(name)) for name in wanted}
        video_timestamps = info.from_timestamp + columns["timestamp"].astype(np.float64)
        return Episode(**vars(info), columns=columns, video_timestamps=video_timestamps)

    def frame_positions(
        self, episode: Episode, frame_times: np.ndarray, tolerance_s: float | None = None
    ) -> np.ndarray:
        """Which decoded frames of `episode.video_file` are the episode's frames, found by timestamp as LeRobot does.

        `frame_times`: the presentation time (seconds) of every frame decoded from the file, in order. Returns, for
        each row i of the episode, the position in `frame_times` of the frame nearest `video_timestamps[i]`, among
        the frames inside the episode's span of the file only (so a pair never takes a frame of another episode);
        each must be within `tolerance_s` (default one frame, `1 / fps`) and none taken twice. Raises naming the
        episode and the file when its span holds fewer frames than its table has rows, a row has no frame or two rows
        one frame; where the video's frame rate is not info.json's `fps`, the message gives both.
        """
        tolerance_s = 1 / self.fps if tolerance_s is None else tolerance_s
        half_frame = 0.5 / self.fps  # span edges: frame starts may be rounded by up to half a frame
        end = np.inf if episode.to_timestamp is None else episode.to_timestamp - half_frame
        frame_times = np.asarray(frame_times, dtype=np.float64)
        inside = np.flatnonzero((frame_times >= episode.from_timestamp - half_frame) & (frame_times < end))
        span_times = frame_times[inside] if len(inside) > 1 else frame_times
        rates = self._rates(span_times)
        if len(inside) < episode.length:
            raise LaryError(
                f"episode {episode.episode_index}: its video {episode.video_file} has {len(inside)} frames, its table "
                f"{episode.length} rows{rates}"
            )
        inside = inside[np.argsort(frame_times[inside], kind="stable")]
        # nearest frame by binary search; the infinite ends keep both neighbours defined
        times = np.concatenate([[-np.inf], frame_times[inside], [np.inf]])
        wanted = episode.video_timestamps
        after = np.searchsorted(times, wanted)
        nearest = np.where(wanted - times[after - 1] <= times[after] - wanted, after - 1, after)
        distance = np.abs(times[nearest] - wanted)
        late = np.flatnonzero(distance > tolerance_s)
        if len(late):
            row = late[0]
            raise LaryError(
                f"episode {episode.episode_index}, frame {row}: no frame of {episode.video_file} within "
                f"{tolerance_s:g}s of {wanted[row]:.4f}s (nearest {times[nearest[row]]:.4f}s){rates}"
            )
        if len(np.unique(nearest)) < len(nearest):
            raise LaryError(
                f"episode {episode.episode_index}: two of its rows match one frame of {episode.video_file}"
                f"{self._rates(span_times, always=True)}"
            )
        return inside[nearest - 1]

    def _rates(self, frame_times: np.ndarray, always: bool = False) -> str:
        """A clause naming info.json's fps and the video's frame rate (its median frame interval) when they differ by
        more than 1% (`always`: also when they agree): the likely cause of frames not found by timestamp."""
        steps = np.diff(np.sort(frame_times))
        steps = steps[steps > 0]
        video = 1 / float(np.median(steps)) if len(steps) else None
        if video is not None and abs(video - self.fps) <= 0.01 * self.fps and not always:
            return ""
        shown = "unknown" if video is None else f"{video:.4g}"
        return f" ({self.root / INFO_PATH} says fps {self.fps:g}; the video has {shown} frames per second)"


def _snapshot(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    try:
        return Path(
            huggingface_hub.snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns)
        )
    except (HfHubHTTPError, LocalEntryNotFoundError) as error:
        raise LaryError(f"{repo_id}: not a local folder, and no Hub dataset could be downloaded ({error})") from None


def open_lerobot(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    camera: str | None = None,
    episodes: Iterable[int] | None = None,
) -> LeRobotFolder:
    """A LeRobot dataset from a local folder or a Hub dataset id (then downloaded into the Hub cache: `meta/`, and
    the data and `camera` video files of the selected episodes only). Checks that every file it needs is there."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        if revision is not None:
            raise LaryError(f"{path} is a local folder: a revision applies to Hub ids only")
        dataset = LeRobotFolder(path, camera, episodes)
    elif HUB_ID.match(str(path_or_repo_id)):
        repo_id = str(path_or_repo_id)
        meta = _snapshot(repo_id, revision, ["meta/*"])
        # the cache folder is named by the commit: pin the second download to it, so meta and files match
        commit = meta.name if COMMIT.match(meta.name) else revision
        files = LeRobotFolder(meta, camera, episodes).files()
        logger.info("downloading %d files of %s", len(files), repo_id)
        dataset = LeRobotFolder(_snapshot(repo_id, commit, files), camera, episodes)
    else:
        raise LaryError(f"{path_or_repo_id}: no such folder, and not a Hub dataset id (owner/name)")
    dataset.check_files()
    return dataset
