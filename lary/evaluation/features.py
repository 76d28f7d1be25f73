"""Read what `lary extract` wrote (Parquet shards and `manifest.json`) into arrays for the probes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FEATURE_COLUMNS = ("latent_actions", "continuous_latent_actions", "action_indices", "features")
DEFAULT_FEATURES = ("latent_actions", "features")


@dataclass
class ExtractedSplit:
    """One `lary extract` output folder, rows sorted by `id`.

    `features` is `[rows, tokens, dim]` for image pairs or `[rows, pairs, tokens, dim]` for clips (float32), or the
    integer code ids `[rows, tokens]` / `[rows, pairs, tokens]` for `action_indices`. `actions` holds one
    `[stride, dof]` array per row (dof may differ between robot types).
    """

    path: Path
    manifest: dict
    ids: list[str]
    feature_name: str
    features: np.ndarray
    labels: np.ndarray | None = None
    actions: list[np.ndarray] | None = None
    robot_types: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def read_manifest(outdir: str | Path) -> dict:
    path = Path(outdir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a folder written by `lary extract`")
    return json.loads(path.read_text())


def _shards(outdir: Path) -> list[Path]:
    shards = sorted(outdir.glob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no Parquet shards (*.parquet) in {outdir}")
    return shards


def default_feature(columns: list[str] | set[str]) -> str:
    """`latent_actions` when present, else the encoder-baseline `features`."""
    for name in DEFAULT_FEATURES:
        if name in columns:
            return name
    raise ValueError(f"none of the feature columns {DEFAULT_FEATURES} in columns {sorted(columns)}")


def column_to_numpy(column: pa.ChunkedArray | pa.Array, name: str, path: Path) -> np.ndarray:
    """Nested lists of equal lengths -> one dense array; ragged or null entries raise."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if values.null_count:
        raise ValueError(f"column {name!r} in {path} has null entries")
    shape = [len(values)]
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or pa.types.is_fixed_size_list(values.type):
        lengths = np.unique(pc.list_value_length(values).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise ValueError(f"column {name!r} in {path} has rows of different lengths {lengths.tolist()} at depth {len(shape)}")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        values = values.flatten()
        if values.null_count:
            raise ValueError(f"column {name!r} in {path} has null entries")
    return values.to_numpy(zero_copy_only=False).reshape(shape)


def _rows_to_arrays(column: pa.ChunkedArray, name: str, path: Path) -> list[np.ndarray]:
    try:
        return list(column_to_numpy(column, name, path).astype(np.float32))
    except ValueError:  # ragged across rows: different dof per robot type
        return [np.asarray(row, dtype=np.float32) for row in column.to_pylist()]


def load_split(outdir: str | Path, feature: str | None = None, target: str | None = None) -> ExtractedSplit:
    """Read one extract output folder.

    Args:
        outdir: the folder holding `*.parquet` and `manifest.json`.
        feature: the representation column; default `latent_actions` if present, else `features`.
        target: `"label"` (classification), `"action"` (regression) or None (features only).
    """
    outdir = Path(outdir)
    manifest = read_manifest(outdir)
    shards = _shards(outdir)
    schemas = {shard: pq.read_schema(shard) for shard in shards}
    first = schemas[shards[0]].names
    feature = feature or default_feature(first)
    wanted = ["id", feature]
    if target is not None:
        wanted.append(target)
        if target == "action" and "robot_type" in first:
            wanted.append("robot_type")
    for shard, schema in schemas.items():
        for name in wanted:
            if name not in schema.names:
                raise KeyError(f"column {name!r} missing from {shard} (columns: {schema.names})")
    table = pa.concat_tables([pq.read_table(shard, columns=wanted) for shard in shards])
    if table.num_rows == 0:
        raise ValueError(f"{outdir} holds no rows")
    table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
    split = ExtractedSplit(
        path=outdir,
        manifest=manifest,
        ids=table.column("id").to_pylist(),
        feature_name=feature,
        features=column_to_numpy(table.column(feature), feature, outdir),
    )
    if feature != "action_indices":
        split.features = split.features.astype(np.float32, copy=False)
    if target == "label":
        split.labels = column_to_numpy(table.column("label"), "label", outdir).astype(np.int64)
    elif target == "action":
        split.actions = _rows_to_arrays(table.column("action"), "action", outdir)
        if "robot_type" in table.column_names:
            split.robot_types = [str(value) for value in table.column("robot_type").to_pylist()]
    return split


def one_hot_indices(*splits: ExtractedSplit) -> int:
    """Turn `action_indices` into one-hot tokens in place; returns the codebook size (max index + 1 over all splits).

    A one-hot code followed by the probes' first Linear layer is exactly a learned embedding of the code ids.
    """
    codebook_size = int(max(split.features.max() for split in splits)) + 1
    for split in splits:
        split.features = np.eye(codebook_size, dtype=np.float32)[split.features]
    return codebook_size


def check_feature_shapes(train: ExtractedSplit, validation: ExtractedSplit) -> None:
    """Train and validation rows must have the same feature shape (the probe is built for one)."""
    if train.features.shape[1:] != validation.features.shape[1:]:
        raise ValueError(
            f"feature {train.feature_name!r} has shape {tuple(train.features.shape[1:])} per row in {train.path} "
            f"but {tuple(validation.features.shape[1:])} in {validation.path}"
        )
