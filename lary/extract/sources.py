"""What `lary extract` reads: dataset rows (frame pairs or clips), video files, folders of image files, LeRobot episodes.

Two layouts (see `lary.extract.plan`):
- `DatasetSource` ("row" layout): one output row per dataset row, as LARY's prepared configs have them: a frame pair,
  or a short clip whose pairs all go into its row. `row(index)` decodes a row's frames.
- `VideoSource`, `ImageFolderSource`, `LeRobotSource` ("pair" layout): one output row per frame pair of each sample
  (video, folder, episode), however long. `length(index)` tells how many frames a sample has (without decoding), and
  `frames(segment, stop)` decodes a range of them.

Sources are read in DataLoader worker processes: they hold only paths and small tables, and decode videos on the
worker's own thread (one core per worker; FFmpeg's threads would wait for the cores the model and the other workers
hold). A sample that cannot be read raises `MediaError`; its id is known without reading it.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from lary.data.loading import dataset_image, load_lary_split
from lary.errors import LaryError, MediaError, path_text
from lary.extract.plan import Segment
from lary.frames import VideoFrame, decode_video, image_files, probe_video, read_image, video_rate

DECODING_THREADS = 1  # FFmpeg's threads per worker: none besides the worker's own

# Dataset columns passed through to the output, with their Arrow types there.
PASSTHROUGH_TYPES: dict[str, pa.DataType] = {
    "label": pa.int64(),
    "action": pa.list_(pa.list_(pa.float32())),
    "robot_type": pa.string(),
    "perspective": pa.string(),
    "task_id": pa.string(),
    "episode_id": pa.string(),
}


def _common_root(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(path.parent) for path in paths]))


def _folders_under(folder: str) -> Iterator[str]:
    """`folder` and every folder under it (not hidden ones, as `glob`'s `**`), in sorted order, named by the path that
    reached it: a symlink to a folder is followed, but a folder already listed (a loop such as `self -> .`, or a second
    link to it) is not listed again."""
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            status = os.stat(current or ".")
            entries = sorted(os.scandir(current or "."), key=lambda entry: entry.name, reverse=True)
        except OSError:  # gone, a broken link, or not readable: nothing to list there
            continue
        if (status.st_dev, status.st_ino) in seen:
            continue
        seen.add((status.st_dev, status.st_ino))
        yield current
        stack.extend(os.path.join(current, entry.name) for entry in entries
                     if not entry.name.startswith(".") and entry.is_dir())


def _names(folder: str, pattern: str) -> list[str]:
    """The entries of `folder` that `pattern` (one path component) matches; hidden ones only for a pattern that
    starts with `.`, as `glob`."""
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    if not pattern.startswith("."):
        names = [name for name in names if not name.startswith(".")]
    return sorted(fnmatch.filter(names, pattern))


def _expand(base: str, parts: list[str]) -> Iterator[str]:
    """The paths under `base` that the glob components `parts` match (see `expand_pattern`)."""
    if not parts:
        yield base
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        for folder in _folders_under(base):
            if rest:
                yield from _expand(folder, rest)
            else:  # a trailing `**`: the folders and their files
                yield from (os.path.join(folder, name) for name in _names(folder, "*"))
    elif glob.has_magic(part):
        for name in _names(base, part):
            yield from _expand(os.path.join(base, name), rest)
    elif os.path.lexists(os.path.join(base, part)):
        yield from _expand(os.path.join(base, part), rest)


def expand_pattern(pattern: str) -> list[str]:
    """The paths a glob matches, as `glob.glob(pattern, recursive=True)` gives them (`**` recurses; hidden files only
    for patterns that name them), but listing each folder once: `**` follows a symlink to a folder only to a folder
    not yet listed, so a link loop ends. Paths are named as reached, never resolved. A pattern without `*?[` is
    itself."""
    if not glob.has_magic(pattern):
        return [pattern]
    parts = pattern.split(os.sep)
    first = next(index for index, part in enumerate(parts) if glob.has_magic(part))
    base = os.sep.join(parts[:first]) or ("" if first == 0 else os.sep)
    return sorted(set(_expand(base, parts[first:])))


def _named_paths(names: Sequence[str]) -> list[Path]:
    """The inputs as given, made absolute without resolving symlinks, so that each keeps its own name; a file reached
    by two names is two samples, as it was listed."""
    return sorted({Path(os.path.abspath(name)) for name in names})


def _unique_ids(flag: str, ids: list[str]) -> None:
    """Two inputs whose ids are one text (only possible for names with bytes that are not UTF-8, see `path_text`)
    would be one clip to `lary evaluate`: refused."""
    seen: set[str] = set()
    for sample_id in ids:
        if sample_id in seen:
            raise LaryError(f"{flag}: two inputs get the id {sample_id!r}; rename one of them")
        seen.add(sample_id)


class DatasetSource:
    """Rows of a 🤗 dataset (a local folder or a Hub id, read by `load_lary_split`): `source_image`/`target_image`
    pairs or `frames` clips. Row ids come from the `id` column, else the row index. Label and action columns pass
    through."""

    layout = "row"

    def __init__(self, path: str, config: str | None, split: str, limit: int | None = None, revision: str | None = None):
        dataset = load_lary_split(path, config, split, revision=revision)
        columns = set(dataset.column_names)
        if {"source_image", "target_image"} <= columns:
            self.kind = "pair"
        elif "frames" in columns:
            self.kind = "clip"
        else:
            raise LaryError(
                f"dataset {path!r} (config {config!r}, split {split!r}) has neither `source_image`/`target_image` "
                f"nor `frames` columns; it has {sorted(columns)}"
            )
        self.passthrough_types = {name: kind for name, kind in PASSTHROUGH_TYPES.items() if name in columns}
        label = dataset.features.get("label")
        self.label_names = list(label.names) if isinstance(label, datasets.ClassLabel) else None
        self.has_ids = "id" in columns
        self.rows = dataset.with_format("arrow")  # raw image bytes: decoding errors are caught per sample
        self.num_rows = len(dataset) if limit is None else min(limit, len(dataset))
        self.where = f"{path}[{config}/{split}]" if config else f"{path}[{split}]"
        self.root = path
        local = Path(path).expanduser()
        self.folder = local if local.is_dir() else None  # where its image paths lie (None: a Hub dataset's cache)

    def __len__(self) -> int:
        return self.num_rows

    def sample_id(self, index: int) -> str:
        return self.rows[index].column("id")[0].as_py() if self.has_ids else str(index)

    def row(self, index: int) -> tuple[list[np.ndarray], dict[str, Any]]:
        """The row's frames (RGB uint8) and its pass-through values."""
        row = self.rows[index].to_pylist()[0]
        where = f"{self.where} row {index} ({self.sample_id(index)})"
        images = [row["source_image"], row["target_image"]] if self.kind == "pair" else row["frames"] or []
        frames = [read_image(dataset_image(image, self.folder, where), where) for image in images]
        if not frames:
            raise MediaError(where, "no frames")
        return frames, {name: row[name] for name in self.passthrough_types}


class FileSource:
    """Shared by `VideoSource` and `ImageFolderSource`: one sample per path, no columns besides the pairs'."""

    layout = "pair"
    kind = "pair"
    label_names = None
    passthrough_types: dict[str, pa.DataType] = {}

    def pair_columns(self, index: int, first_frames: np.ndarray, stride: int) -> dict[str, list]:
        return {}


class VideoSource(FileSource):
    """Video files, one sample each, decoded with PyAV; ids are paths relative to the files' common folder."""

    def __init__(self, patterns: Sequence[str], limit: int | None = None):
        files: list[str] = []
        for pattern in patterns:
            if not glob.has_magic(pattern) or os.path.lexists(pattern):  # a file named `clip[1].mp4` is that file
                if os.path.isdir(pattern):
                    raise LaryError(f"--videos {path_text(pattern)} is a folder, not a video file: give its files, "
                                    f"e.g. '{path_text(os.path.join(pattern, '*.mp4'))}'")
                if not os.path.lexists(pattern):
                    raise LaryError(f"--videos {path_text(pattern)} does not exist")
                files.append(pattern)
                continue
            matches = expand_pattern(pattern)
            if not matches:
                raise LaryError(f"--videos {path_text(pattern)!r} matches no file")
            matched_files = [match for match in matches if not os.path.isdir(match)]  # a glob's folders are skipped
            if not matched_files:
                raise LaryError(f"--videos {path_text(pattern)!r} matches only folders ({path_text(matches[0])}, ...), "
                                "no video files")
            files.extend(matched_files)
        paths = _named_paths(files)
        self.folder = _common_root(paths)  # of all inputs, so that --limit does not change the ids
        self.root = path_text(self.folder)
        self.paths = paths[:limit]
        _unique_ids("--videos", [self.sample_id(index) for index in range(len(self.paths))])

    def __len__(self) -> int:
        return len(self.paths)

    def sample_id(self, index: int) -> str:
        return path_text(self.paths[index].relative_to(self.folder).as_posix())

    def length(self, index: int) -> tuple[int, np.ndarray | None]:
        """Frame count and every frame's video timestamp (to seek), from the container (no decoding)."""
        info = probe_video(self.paths[index])
        return info.num_frames, info.pts if info.seekable else None

    def frames(self, segment: Segment, stop: int | None) -> Iterator[VideoFrame]:
        return decode_video(self.paths[segment.sample], segment.seek_frame, stop, segment.seek_pts, DECODING_THREADS)

    def fps(self, index: int) -> float:
        """The video's frame rate (0.0 when its header has none)."""
        return video_rate(self.paths[index])


class ImageFolderSource(FileSource):
    """Folders of image files, one sample each: the files in natural order (`frame_2` before `frame_10`). All
    frames of a folder must have one size (else the folder is refused, naming the sizes)."""

    def __init__(self, folders: Sequence[str], limit: int | None = None):
        for folder in folders:
            if not os.path.isdir(folder):
                problem = "is a file, not a folder of image files" if os.path.lexists(folder) else "does not exist"
                raise LaryError(f"--images {path_text(folder)} {problem}")
        paths = _named_paths(folders)
        self.folder = _common_root(paths) if len(paths) > 1 else paths[0].parent
        self.root = path_text(self.folder)
        self.folders = paths[:limit]
        _unique_ids("--images", [self.sample_id(index) for index in range(len(self.folders))])

    def __len__(self) -> int:
        return len(self.folders)

    def sample_id(self, index: int) -> str:
        return path_text(self.folders[index].relative_to(self.folder).as_posix())

    def length(self, index: int) -> tuple[int, None]:
        """Frame count, after checking (from the file headers) that every frame has one size."""
        files = image_files(self.folders[index])
        if not files:
            raise MediaError(self.folders[index], "no image files")
        sizes: dict[tuple[int, int], Path] = {}
        for path in files:
            try:
                with Image.open(path) as image:
                    sizes.setdefault(image.size, path)
            except Exception as error:  # PIL raises many types for corrupt files
                raise MediaError(path, f"unreadable image ({error})") from None
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h} ({path.name})" for (w, h), path in sizes.items())
            raise MediaError(self.folders[index], f"frames of different sizes: {shown}; resize them to one size first")
        return len(files), None

    def frames(self, segment: Segment, stop: int | None) -> Iterator[VideoFrame]:
        files = image_files(self.folders[segment.sample])
        for index in range(segment.first, len(files) if stop is None else min(stop, len(files))):
            yield VideoFrame(index, float("nan"), read_image(files[index]))



class LeRobotSource:
    """The episodes of a LeRobot dataset (v3.0 or v2.1, a folder or a Hub id), one sample each, with the camera's
    frames found by timestamp (`lary.lerobot`). Each pair row carries the episode's `episode_index`, the table's
    `frame_index`/`timestamp`, and its `action` (K rows) and `observation.state` (K + 1 rows) as regression targets.

    Probing a video file and reading an episode's rows are cached: in v3.0 one file holds many episodes."""

    layout = "pair"
    kind = "pair"
    label_names = None

    def __init__(self, path_or_id: str, revision: str | None, camera: str | None, episodes: list[int] | None,
                 limit: int | None = None):
        from lary.lerobot import open_lerobot

        self.dataset = open_lerobot(path_or_id, revision, camera, episodes)
        self.episodes = self.dataset.episodes[:limit]
        self.root = str(self.dataset.root)
        self.targets = [name for name in ("action", "observation.state") if name in self.dataset.features]
        self.passthrough_types = {"episode_index": pa.int64(), **{name: pa.list_(pa.list_(pa.float32())) for name in self.targets}}
        self._videos: dict[Path, Any] = {}
        self._episode: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.episodes)

    def sample_id(self, index: int) -> str:
        return f"episode_{self.episodes[index].episode_index:06d}"

    def _read(self, index: int):
        """The episode's rows and, for each row, the position of its frame among the decoded frames of its file."""
        if self._episode is None or self._episode[0] != index:
            info = self.episodes[index]
            if info.video_file not in self._videos:
                self._videos = {info.video_file: probe_video(info.video_file)}  # one file at a time: files are big
            video = self._videos[info.video_file]
            episode = self.dataset.read_episode(info)
            try:
                positions = self.dataset.frame_positions(episode, video.times)
            except LaryError as error:  # the video does not hold the episode's frames: this episode fails
                raise MediaError(info.video_file, str(error)) from None
            self._episode = (index, (episode, video, positions))
        return self._episode[1]

    def length(self, index: int) -> tuple[int, None]:
        episode, _, _ = self._read(index)
        return episode.length, None

    def fps(self, index: int) -> float:
        """The dataset's frame rate (info.json's `fps`), that of every episode."""
        return float(self.dataset.fps)

    def frames(self, segment: Segment, stop: int | None) -> Iterator[VideoFrame]:
        """The episode's frames `first .. stop - 1`, numbered by their rows, decoded from the file by seeking."""
        episode, video, positions = self._read(segment.sample)
        stop = episode.length if stop is None else min(stop, episode.length)
        if segment.first >= stop:
            return
        wanted = {int(position): row for row, position in enumerate(positions[segment.first : stop], segment.first)}
        start = int(positions[segment.first])
        for frame in decode_video(episode.video_file, start, int(positions[stop - 1]) + 1, int(video.pts[start]),
                                  DECODING_THREADS):
            if frame.index in wanted:
                yield VideoFrame(wanted[frame.index], frame.time, frame.rgb)

    def pair_columns(self, index: int, first_frames: np.ndarray, stride: int) -> dict[str, Any]:
        episode, _, _ = self._read(index)
        columns = episode.columns
        second = first_frames + stride
        values = {
            "episode_index": [episode.episode_index] * len(first_frames),
            "frame_index": columns["frame_index"][first_frames],
            "next_frame_index": columns["frame_index"][second],
            "timestamp": columns["timestamp"][first_frames].astype(np.float64),
            "next_timestamp": columns["timestamp"][second].astype(np.float64),
        }
        if "action" in self.targets:
            values["action"] = list(columns["action"][first_frames[:, None] + np.arange(stride)])
        if "observation.state" in self.targets:
            values["observation.state"] = list(columns["observation.state"][first_frames[:, None] + np.arange(stride + 1)])
        return values


Source = DatasetSource | VideoSource | ImageFolderSource | LeRobotSource
