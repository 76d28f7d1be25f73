"""What `lary extract` reads: dataset rows (frame pairs or clips), video files, and folders of image files.

Every source is an indexable list of samples. `load(index, to_pixels)` decodes one sample and turns its frames
into model pixels `(frames, 3, H, W)` right away (in chunks, for videos), so a long clip is never held as
full-resolution frames. A sample that cannot be read raises `SampleError`; its id is known without reading it.
"""

from __future__ import annotations

import glob
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import datasets
import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from lary.data.loading import load_lary_split

PixelFn = Callable[[list[np.ndarray]], torch.Tensor]  # RGB uint8 (H, W, 3) frames -> (frames, 3, H', W')

# Dataset columns passed through to the output, with their Arrow types there.
PASSTHROUGH_TYPES: dict[str, pa.DataType] = {
    "label": pa.int64(),
    "action": pa.list_(pa.list_(pa.float32())),
    "robot_type": pa.string(),
    "perspective": pa.string(),
    "task_id": pa.string(),
    "episode_id": pa.string(),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DECODE_CHUNK = 32  # video frames decoded before they are turned into pixels


class SampleError(Exception):
    """A sample whose media cannot be read; it goes to `errors.jsonl` and the run goes on."""


@dataclass
class Sample:
    """One output row: `pixels` is `(2, 3, H, W)` for a pair or `(frames, 3, H, W)` for a clip."""

    id: str
    pixels: torch.Tensor
    passthrough: dict[str, Any]


def _natural_key(path: Path) -> list:
    """`frame_2.png` before `frame_10.png`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _common_root(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(path.parent) for path in paths]))


def _decode_image(image: dict[str, Any] | None, where: str) -> np.ndarray:
    """An `Image` feature's stored `{"bytes", "path"}` -> RGB uint8 array."""
    try:
        if image is None:
            raise ValueError("no image stored")
        source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
        with Image.open(source) as opened:
            return np.asarray(opened.convert("RGB"))
    except Exception as error:  # PIL raises many types for corrupt or missing files
        raise SampleError(f"{where}: unreadable image ({error})") from None


def _pixels_in_chunks(frames, to_pixels: PixelFn) -> torch.Tensor:
    """Turn an iterable of RGB arrays into pixels `DECODE_CHUNK` frames at a time."""
    chunks, pending = [], []
    for frame in frames:
        pending.append(frame)
        if len(pending) == DECODE_CHUNK:
            chunks.append(to_pixels(pending))
            pending = []
    if pending:
        chunks.append(to_pixels(pending))
    if not chunks:
        raise SampleError("no frames")
    return torch.cat(chunks)


class DatasetSource:
    """Rows of a 🤗 dataset (a local folder or a Hub id, read by `load_lary_split`): `source_image`/`target_image`
    pairs or `frames` clips. Row ids come from the `id` column, else the row index. Label and action columns pass
    through."""

    def __init__(self, path: str, config: str | None, split: str, limit: int | None = None):
        dataset = load_lary_split(path, config, split)
        columns = set(dataset.column_names)
        if {"source_image", "target_image"} <= columns:
            self.kind = "pair"
        elif "frames" in columns:
            self.kind = "clip"
        else:
            raise ValueError(
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

    def __len__(self) -> int:
        return self.num_rows

    def sample_id(self, index: int) -> str:
        return self.rows[index].column("id")[0].as_py() if self.has_ids else str(index)

    def load(self, index: int, to_pixels: PixelFn) -> Sample:
        row = self.rows[index].to_pylist()[0]
        sample_id = row["id"] if self.has_ids else str(index)
        where = f"{self.where} row {index} ({sample_id})"
        if self.kind == "pair":
            frames = [_decode_image(row["source_image"], where), _decode_image(row["target_image"], where)]
            pixels = to_pixels(frames)
        else:
            pixels = _pixels_in_chunks((_decode_image(image, where) for image in row["frames"] or []), to_pixels)
        passthrough = {name: row[name] for name in self.passthrough_types}
        return Sample(sample_id, pixels, passthrough)


class VideoSource:
    """Video files, one clip (row) each, every frame decoded with PyAV; ids are paths relative to the files'
    common folder."""

    kind = "clip"
    passthrough_types: dict[str, pa.DataType] = {}
    label_names = None

    def __init__(self, patterns: Sequence[str], limit: int | None = None):
        paths: set[Path] = set()
        for pattern in patterns:
            matches = glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [pattern]
            if not matches:
                raise FileNotFoundError(f"--videos {pattern!r} matches no file")
            paths.update(Path(match).resolve() for match in matches)
        self.paths = sorted(paths)[:limit]
        self.root = _common_root(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def sample_id(self, index: int) -> str:
        return self.paths[index].relative_to(self.root).as_posix()

    def load(self, index: int, to_pixels: PixelFn) -> Sample:
        path = self.paths[index]
        try:
            with av.open(str(path)) as container:
                frames = (frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))
                pixels = _pixels_in_chunks(frames, to_pixels)
        except (av.error.FFmpegError, OSError, SampleError) as error:
            raise SampleError(f"{path}: unreadable video ({error})") from None
        return Sample(self.sample_id(index), pixels, {})


class ImageFolderSource:
    """Folders of image files, one clip (row) each: the files in natural order (`frame_2` before `frame_10`)."""

    kind = "clip"
    passthrough_types: dict[str, pa.DataType] = {}
    label_names = None

    def __init__(self, folders: Sequence[str], limit: int | None = None):
        self.folders = sorted({Path(folder).resolve() for folder in folders})[:limit]
        for folder in self.folders:
            if not folder.is_dir():
                raise NotADirectoryError(f"--images {folder} is not a folder")
        self.root = _common_root(self.folders) if len(self.folders) > 1 else self.folders[0].parent

    def __len__(self) -> int:
        return len(self.folders)

    def sample_id(self, index: int) -> str:
        return self.folders[index].relative_to(self.root).as_posix()

    def load(self, index: int, to_pixels: PixelFn) -> Sample:
        folder = self.folders[index]
        files = sorted((path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise SampleError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        frames = (_decode_image({"bytes": None, "path": str(path)}, str(path)) for path in files)
        return Sample(self.sample_id(index), _pixels_in_chunks(frames, to_pixels), {})


Source = DatasetSource | VideoSource | ImageFolderSource
