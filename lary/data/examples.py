"""From metadata CSV rows to 🤗 datasets examples: schemas, class names, and one example per row."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from lary.errors import LaryError
from lary.paths import inside

from .labels import CLASS_NAMES, NUM_CLASSES
from .layout import ConfigLayout
from .media import read_action, read_array, read_clip_frames, read_image_bytes

MEDIA_COLUMNS = ("src_img", "tgt_img", "src_state", "tgt_state", "video_path")


def read_rows(csv_path: str | Path, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Stream a metadata CSV's rows as strings, after checking that it has `columns`."""
    with open(csv_path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise LaryError(f"{csv_path} lacks the column(s) {', '.join(missing)} (has: {reader.fieldnames})")
        yield from reader


def example_id(config: str, split: str, index: int) -> str:
    """Stable row id: `<config>/<split>/<row index in the CSV, from 0>`."""
    return f"{config}/{split}/{index}"


def class_names(layout: ConfigLayout, metadata_dir: str | Path) -> list[str]:
    """Stored names for LIBERO; for the clip tracks, the sorted labels of their CSVs, checked against the count."""
    if layout.name in CLASS_NAMES:
        return list(CLASS_NAMES[layout.name])
    names: set[str] = set()
    for split in layout.csv_names:
        path = layout.csv_path(metadata_dir, split)
        if path.is_file():
            names.update(row["action"] for row in read_rows(path, layout.columns))
    expected = NUM_CLASSES.get(layout.name)
    if expected is not None and len(names) != expected:
        raise LaryError(
            f"{layout.name}: its CSVs in {metadata_dir} name {len(names)} classes, LARY has {expected};"
            " pass the complete train and validation CSVs"
        )
    return sorted(names)


def build_features(layout: ConfigLayout, names: list[str] | None = None) -> datasets.Features:
    """The config's schema; `names` (class names) is required for classification configs."""
    features: dict[str, Any] = {"id": datasets.Value("string")}
    if layout.kind == "clip":
        features["frames"] = datasets.List(datasets.Image())
        features["sample_indices"] = datasets.List(datasets.Value("int32"))
    else:
        features["source_image"] = datasets.Image()
        features["target_image"] = datasets.Image()
    if layout.kind in ("pair", "clip"):
        features["label"] = datasets.ClassLabel(names=names)
        return datasets.Features(features)
    if layout.dof is None:
        features["action"] = datasets.List(datasets.List(datasets.Value("float32")), length=layout.stride)
    else:
        features["action"] = datasets.Array2D(shape=(layout.stride, layout.dof), dtype="float32")
    if layout.has_states:
        features["source_state"] = datasets.List(datasets.Value("float32"))
        features["target_state"] = datasets.List(datasets.Value("float32"))
    for column in layout.metadata_columns:
        features[column] = datasets.Value("string")
    return datasets.Features(features)


def media_paths(layout: ConfigLayout, row: dict[str, str], media_dir: Path, where: str) -> list[Path]:
    """Every file a row needs, each kept inside `media_dir` (`lary.paths.inside`: an absolute path, `..` or a symlink
    out of it is refused, the error naming `where`, the row, then its column and value)."""
    columns = [column for column in MEDIA_COLUMNS if column in layout.columns]
    if layout.kind == "regression":
        columns.append("action")
    return [inside(media_dir, row[column], f"{where}, column {column}") for column in columns]


def parse_indices(value: str) -> list[int]:
    """`"0,1,2"` (brackets and spaces tolerated) -> `[0, 1, 2]`."""
    try:
        indices = [int(part) for part in value.strip("[]() ").split(",") if part.strip()]
    except ValueError:
        raise LaryError(f"sample_indices {value!r} is not a comma-separated list of frame numbers") from None
    if not indices or min(indices) < 0:
        raise LaryError(f"sample_indices {value!r} must list non-negative frame numbers")
    return indices


def _image(media_dir: Path, relative: str) -> dict[str, Any]:
    return {"bytes": read_image_bytes(media_dir / relative), "path": relative}


def load_example(
    layout: ConfigLayout, row: dict[str, str], index: int, split: str, media_dir: Path, names: list[str] | None
) -> dict[str, Any]:
    """Read a row's media into an (unencoded) example. Raises `MediaError` for missing or unreadable files."""
    example: dict[str, Any] = {"id": example_id(layout.name, split, index)}
    if layout.kind == "clip":
        indices = parse_indices(row["sample_indices"])
        example["frames"] = [
            {"bytes": frame, "path": None} for frame in read_clip_frames(media_dir / row["video_path"], indices)
        ]
        example["sample_indices"] = indices
    else:
        example["source_image"] = _image(media_dir, row["src_img"])
        example["target_image"] = _image(media_dir, row["tgt_img"])
    if layout.kind in ("pair", "clip"):
        if row["action"] not in names:
            raise LaryError(f"{layout.name} row {index}: unknown label {row['action']!r}")
        example["label"] = names.index(row["action"])
        return example
    example["action"] = read_action(media_dir / row["action"], layout.stride, layout.dof)
    if layout.has_states:
        example["source_state"] = read_array(media_dir / row["src_state"]).astype("float32").ravel()
        example["target_state"] = read_array(media_dir / row["tgt_state"]).astype("float32").ravel()
    for column in layout.metadata_columns:
        example[column] = row[column]
    return example
