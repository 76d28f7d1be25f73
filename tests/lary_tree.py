"""Miniature LARY trees for tests: real metadata rows (or synthetic ones in the same layout) plus tiny media.

    from lary_tree import make_lary_tree
    data_dir, metadata_dir = make_lary_tree(tmp_path, lary_metadata_dir, {"libero": 12, "calvin": 12})

`data_dir` is laid out like LARYBench's DATA_DIR and `metadata_dir` holds the CSV subsets, so both go straight
to `lary prepare --data-dir ... --metadata-dir ...` or to `lary.data.LaryBuilder`. Media are deterministic
functions of their relative paths: `synthetic_image(path, size)` and `synthetic_action(path, stride, dof)`
give back what the tree holds, for assertions.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Mapping
from pathlib import Path

import av
import numpy as np
from PIL import Image

from lary.data.labels import CLASS_NAMES, NUM_CLASSES
from lary.data.layout import LAYOUTS, ConfigLayout

STATE_DIM = 8
CLIP_FRAMES = 12
CLIP_INDICES = 9  # 8 consecutive pairs, as in the benchmark
# Synthetic RoboCOIN rows mix two robots with different action sizes.
ROBOCOIN_DOFS = {"galaxea_r1_lite": 14, "": 12}


def _rng(relative_path: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(relative_path.encode()))


def synthetic_image(relative_path: str, size: int) -> np.ndarray:
    """The RGB pixels the tree stores at `relative_path`."""
    return _rng(relative_path).integers(0, 256, (size, size, 3), dtype=np.uint8)


def synthetic_action(relative_path: str, stride: int, dof: int) -> np.ndarray:
    return _rng(relative_path).standard_normal((stride, dof)).astype(np.float32)


def _write_png(path: Path, relative_path: str, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(relative_path, size)).save(path)


def _write_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def write_clip(path: Path, num_frames: int = CLIP_FRAMES, size: int = 32) -> None:
    """A tiny MP4 (mpeg4, yuv420p) whose frame `i` is a flat gray of level `20 * i`, so frames are identifiable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(num_frames):
            pixels = np.full((size, size, 3), min(20 * index, 255), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _synthetic_rows(layout: ConfigLayout, split: str, num_rows: int) -> list[dict[str, str]]:
    """Rows in the config's CSV layout; clip train splits get at least one row per class."""
    rows = []
    if layout.kind == "clip":
        names = [f"{layout.name}_class_{i:03d}" for i in range(NUM_CLASSES[layout.name])]
        count = max(num_rows, len(names)) if split == "train" else num_rows
        for i in range(count):
            start = i % (CLIP_FRAMES - CLIP_INDICES + 1)
            indices = ",".join(str(start + k) for k in range(CLIP_INDICES))
            rows.append({"video_path": f"SSv2/{split}/clip_{i % 3}.mp4", "sample_indices": indices,
                         "action": names[i % len(names)]})
        return rows
    if layout.kind == "pair":
        names = CLASS_NAMES[layout.name]
        return [{"src_img": f"{split}/demo_{i}/action_start.png", "tgt_img": f"{split}/demo_{i}/action_end.png",
                 "action": names[i % len(names)]} for i in range(num_rows)]
    robots = list(ROBOCOIN_DOFS) if layout.name == "robocoin" else ["a2d"]
    for i in range(num_rows):
        start, end = 10 * i, 10 * i + layout.stride
        episode = f"ep_{i % 2}"
        row = {
            "dataset": f"task_{i % 2}", "type": "robot", "perspective": "1st", "task_id": str(i % 2),
            "episode_id": str(100 + i % 2), "robot_type": robots[i % len(robots)],
            "src_img": f"images/{episode}/frame_{start:06d}.png", "tgt_img": f"images/{episode}/frame_{end:06d}.png",
            "src_state": f"states/{episode}/state_{start:06d}.npy", "tgt_state": f"states/{episode}/state_{end:06d}.npy",
            "action": f"actions/{episode}/action_{start:06d}to{end - 1:06d}.npy",
        }
        rows.append({column: row[column] for column in layout.columns})
    return rows


def _read_rows(path: Path, start: int, num_rows: int) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return rows[start:start + num_rows]


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_media(layout: ConfigLayout, rows: list[dict[str, str]], media_dir: Path, image_size: int) -> None:
    """Create every file the rows name under `media_dir`."""
    for row in rows:
        if layout.kind == "clip":
            if not (media_dir / row["video_path"]).exists():
                write_clip(media_dir / row["video_path"], size=image_size)
            continue
        for column in ("src_img", "tgt_img"):
            _write_png(media_dir / row[column], row[column], image_size)
        if layout.kind != "regression":
            continue
        dof = layout.dof or ROBOCOIN_DOFS.get(row.get("robot_type", ""), 12)
        _write_npy(media_dir / row["action"], synthetic_action(row["action"], layout.stride, dof))
        for column in ("src_state", "tgt_state"):
            if column in row:
                _write_npy(media_dir / row[column], _rng(row[column]).standard_normal(STATE_DIM).astype(np.float32))


def make_lary_tree(
    root: str | Path,
    metadata_dir: str | Path | None,
    configs: Mapping[str, int],
    image_size: int = 32,
    make_train_split: bool = False,
) -> tuple[Path, Path]:
    """Build `root/data` (a DATA_DIR) and `root/metadata` (CSV subsets) for `configs` (config -> rows per split).

    Rows come from the first rows of each CSV of the config found in `metadata_dir` (e.g. the real
    `../shared/lary/metadata`); configs without any CSV there get synthetic rows in their LARY layout for
    every split. `make_train_split` also writes a train CSV from the rows that follow the validation subset
    when `metadata_dir` has no train CSV (the shared folder holds validation CSVs only).
    Returns `(data_dir, metadata_subset_dir)`.
    """
    root = Path(root)
    data_dir, subset_dir = root / "data", root / "metadata"
    for name, num_rows in configs.items():
        layout = LAYOUTS[name]
        real = {
            split: layout.csv_path(metadata_dir, split)
            for split in layout.csv_names
            if metadata_dir is not None and layout.csv_path(metadata_dir, split).is_file()
        }
        if real:
            splits = {split: _read_rows(path, 0, num_rows) for split, path in real.items()}
            if make_train_split and "train" not in real and "validation" in real:
                splits["train"] = _read_rows(real["validation"], num_rows, num_rows)
        else:
            splits = {split: _synthetic_rows(layout, split, num_rows) for split in layout.csv_names}
        for split, rows in splits.items():
            write_csv(layout.csv_path(subset_dir, split), rows)
            write_media(layout, rows, layout.media_dir(data_dir, split), image_size)
    return data_dir, subset_dir



def csv_rows(metadata_dir: Path, config: str, split: str) -> list[dict[str, str]]:
    """The rows of a config's metadata CSV."""
    with open(LAYOUTS[config].csv_path(metadata_dir, split), newline="") as file:
        return list(csv.DictReader(file))
