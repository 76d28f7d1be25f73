"""Where things are in a LeRobot dataset folder, format v3.0 or v2.1 (as `huggingface/lerobot`'s
`src/lerobot/datasets/` writes them; v2.1 as of lerobot v0.3.3).

Both versions: `meta/info.json` (`codebase_version`, `fps`, `features`, `chunks_size`, and the `data_path` /
`video_path` templates) and per-frame Parquet rows (`timestamp`, `frame_index`, `episode_index`, `index`,
`task_index`, the features).

- v3.0: several episodes per file. `meta/episodes/chunk-XXX/file-XXX.parquet` has one row per episode: `length`,
  `data/chunk_index`, `data/file_index` and, per camera, `videos/<camera>/chunk_index`, `.../file_index`,
  `.../from_timestamp`, `.../to_timestamp` (where the episode lies in the camera's MP4 file), plus `stats/...`.
- v2.1: one file per episode, in chunk `episode_index // chunks_size`. `meta/episodes.jsonl` has one line per
  episode (`episode_index`, `tasks`, `length`), `meta/episodes_stats.jsonl` its stats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lary.errors import LaryError
from lary.paths import inside

V30 = "v3.0"
V21 = "v2.1"
VERSIONS = (V30, V21)
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
EPISODES_DIR = "meta/episodes"  # v3.0
EPISODES_JSONL = "meta/episodes.jsonl"  # v2.1
EPISODES_STATS_JSONL = "meta/episodes_stats.jsonl"  # v2.1


def read_info(root: Path) -> dict:
    """`meta/info.json`, checked for a supported `codebase_version` and the keys the readers use."""
    path = dataset_file(root, INFO_PATH)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise LaryError(f"{path} is missing: {root} is not a LeRobot dataset") from None
    except (OSError, json.JSONDecodeError) as error:
        raise LaryError(f"cannot read {path}: {error}") from None
    version = info.get("codebase_version")
    if version not in VERSIONS:
        raise LaryError(f"{path}: codebase_version {version!r} is not supported (only {', '.join(VERSIONS)})")
    for key in ("fps", "features", "data_path", "video_path", "chunks_size"):
        if key not in info:
            raise LaryError(f"{path} has no {key!r}")
    return info


def dataset_file(root: Path, relative: str | Path) -> Path:
    """`root / relative`, refused if it leads out of the dataset (`lary.paths.inside`): for the files the dataset
    holds, found by their fixed names or by listing its folders."""
    return inside(root, relative, "a file of the dataset")


def _template_paths(root: Path, info: dict, key: str, fields: list[dict]) -> list[Path]:
    """`info[key]` (`data_path`, `video_path`) formatted with each of `fields`: paths in the dataset, each refused
    (naming `meta/info.json`, the key and the path) if it is absolute or leads out of the dataset."""
    what, template = f"{root / INFO_PATH}: {key}", info[key]
    checked: dict[str, Path] = {}
    paths = []
    for values in fields:
        try:
            text = template.format(**values)
        except (AttributeError, KeyError, IndexError, ValueError) as error:
            raise LaryError(f"{what}: {template!r} is not a template of {sorted(values)} ({error!r})") from None
        if text not in checked:
            checked[text] = inside(root, text, what)
        paths.append(checked[text])
    return paths


def camera_keys(info: dict) -> list[str]:
    """The features stored as videos."""
    return [key for key, feature in info["features"].items() if feature.get("dtype") == "video"]


def read_jsonl(root: Path, relative: str) -> list[dict]:
    """The JSON lines of the dataset's file `relative`."""
    path = dataset_file(root, relative)
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise LaryError(f"{path} is missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise LaryError(f"cannot read {path}: {error}") from None


def episodes_files(root: Path) -> list[Path]:
    """v3.0's `meta/episodes/chunk-XXX/file-XXX.parquet` files, in order."""
    return [dataset_file(root, path.relative_to(root)) for path in sorted((root / EPISODES_DIR).glob("*/*.parquet"))]


def _v30_table(root: Path, camera: str | None) -> dict[str, np.ndarray]:
    """The columns of `meta/episodes/*/*.parquet` that locate each episode, file by file in order."""
    columns = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    if camera is not None:
        columns += [
            f"videos/{camera}/{name}" for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
        ]
    files = episodes_files(root)
    if not files:
        raise LaryError(f"{root / EPISODES_DIR} holds no chunk-XXX/file-XXX.parquet")
    parts = []
    for file in files:
        missing = [name for name in columns if name not in pq.read_schema(file).names]
        if missing:
            raise LaryError(f"{file} has no column {missing[0]!r}")
        parts.append(pq.read_table(file, columns=columns))
    return {name: np.concatenate([part.column(name).to_numpy() for part in parts]) for name in columns}


def episode_table(root: Path, info: dict, camera: str | None = None) -> dict[str, np.ndarray]:
    """One entry per episode, sorted by `episode_index`: `episode_index`, `length`, `data_file` and, for a
    `camera`, `video_file`, `from_timestamp` and `to_timestamp` (v2.1: 0 and NaN, the file holds the episode alone)."""
    if info["codebase_version"] == V30:
        table = _v30_table(root, camera)
        chunks, files = table["data/chunk_index"], table["data/file_index"]
        fields = [{"chunk_index": c, "file_index": f} for c, f in zip(chunks, files)]
        data = _template_paths(root, info, "data_path", fields)
        if camera is not None:
            chunks, files = table[f"videos/{camera}/chunk_index"], table[f"videos/{camera}/file_index"]
            fields = [{"video_key": camera, "chunk_index": c, "file_index": f} for c, f in zip(chunks, files)]
            videos = _template_paths(root, info, "video_path", fields)
            starts = table[f"videos/{camera}/from_timestamp"].astype(np.float64)
            ends = table[f"videos/{camera}/to_timestamp"].astype(np.float64)
        indices, lengths = table["episode_index"], table["length"]
    else:
        lines = read_jsonl(root, EPISODES_JSONL)
        for number, line in enumerate(lines, start=1):
            missing = [key for key in ("episode_index", "length") if key not in line]
            if missing:
                raise LaryError(f"{root / EPISODES_JSONL}: line {number} has no {missing[0]!r}")
        indices = np.array([line["episode_index"] for line in lines], dtype=np.int64)
        lengths = np.array([line["length"] for line in lines], dtype=np.int64)
        chunks = indices // info["chunks_size"]
        fields = [{"episode_chunk": c, "episode_index": e} for c, e in zip(chunks, indices)]
        data = _template_paths(root, info, "data_path", fields)
        if camera is not None:
            fields = [{"episode_chunk": c, "video_key": camera, "episode_index": e} for c, e in zip(chunks, indices)]
            videos = _template_paths(root, info, "video_path", fields)
            starts, ends = np.zeros(len(indices)), np.full(len(indices), np.nan)
    order = np.argsort(indices, kind="stable")
    table = {
        "episode_index": indices.astype(np.int64)[order],
        "length": lengths.astype(np.int64)[order],
        "data_file": np.array(data, dtype=object)[order],
    }
    if camera is not None:
        table["video_file"] = np.array(videos, dtype=object)[order]
        table["from_timestamp"], table["to_timestamp"] = starts[order], ends[order]
    return table
