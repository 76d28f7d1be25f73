"""Read what `lary extract` wrote (Parquet shards and `manifest.json`) for the probes, without holding the features
in memory.

ids, labels, actions and robot types are small and are read into memory. The feature column (up to ~1.6 MB a row for
encoder baselines) is copied once, in `id` order, into a plain `.npy` file in a cache folder (`--cache-dir`, default
`$LARY_CACHE/features` or `~/.cache/lary/features`), and every training or validation step reads just the rows of
its batch from it. Why this store:
- Parquet has no random row access: one row costs decoding its whole page / row group.
- The probes need one fixed shape per row anyway, so row `i` sits at `header + i * row_bytes`: one positioned read
  per row straight into the batch buffer, no index and no per-row decoding (an Arrow IPC file would need `take` over
  nested lists plus a conversion for every batch).
- Reads go through the page cache rather than a memory map, so the process's resident memory is its batches, not
  every page of the file it has touched. The file stays a valid `.npy` (`np.load(path, mmap_mode="r")` opens it).
A cache entry is keyed by the folder, the feature and each shard's name, size and mtime: re-extracting writes a new
entry (delete old ones by hand). It needs as much disk as the features uncompressed (rows x row size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from lary.errors import LaryError
from lary.extract.shards import read_manifest

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = ("latent_actions", "features")
CACHE_FORMAT = 2  # 2: stores holding NaN or infinity are refused while written
READ_ROWS = 64  # Parquet rows decoded at once while filling the cache (~100 MB for 1.6 MB rows)
READ_BUFFER = 8 * 2**20  # without pre-buffering, Parquet reads column chunks in pieces of this size


def default_cache_dir() -> Path:
    """`$LARY_CACHE/features`, else `~/.cache/lary/features`."""
    return Path(os.environ.get("LARY_CACHE") or Path.home() / ".cache" / "lary") / "features"


class FeatureStore:
    """The feature rows of one split, in `id` order, in a `.npy` file; `store[rows]` reads only those rows.

    Indexing with a 1-D tensor (or array) of row numbers returns a tensor `[len(rows), *shape[1:]]`, like indexing
    the dense tensor. With `codebook_size` set (see `one_hot_indices`) the stored integer codes come back one-hot.
    """

    def __init__(self, path: Path, max_value: float, codebook_size: int | None = None):
        self.path = path
        self.max_value = max_value
        self.codebook_size = codebook_size
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            self.stored_shape, fortran_order, self.dtype = read_header(file)
            self.offset = file.tell()
        if fortran_order:
            raise LaryError(f"{path} is in Fortran order; delete it to rebuild the cache")
        self.row_bytes = self.dtype.itemsize * math.prod(self.stored_shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored_shape + ((self.codebook_size,) if self.codebook_size else ())

    def __len__(self) -> int:
        return self.stored_shape[0]

    def one_hot(self, codebook_size: int) -> FeatureStore:
        """The same rows, integer codes expanded to one-hot float32 vectors of `codebook_size` per batch."""
        return FeatureStore(self.path, self.max_value, codebook_size)

    def __getitem__(self, rows: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise IndexError(f"index {self.path} with a 1-D sequence of row numbers, not shape {rows.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows {rows.min()}..{rows.max()} out of range for {len(self)} rows in {self.path}")
        out = np.empty((len(rows), *self.stored_shape[1:]), self.dtype)
        with open(self.path, "rb", buffering=0) as file:
            for i, row in enumerate(rows):
                file.seek(self.offset + int(row) * self.row_bytes)
                if file.readinto(out[i]) != self.row_bytes:
                    raise LaryError(f"{self.path} is truncated at row {row}; delete it to rebuild the cache")
        if self.codebook_size:
            return torch.from_numpy(np.eye(self.codebook_size, dtype=np.float32)[out])
        return torch.from_numpy(out)


class RowView:
    """Some rows of a `FeatureStore` (a train or validation part of one folder), indexed like the store itself."""

    def __init__(self, store: FeatureStore, rows: np.ndarray):
        self.store, self.rows = store, rows
        self.max_value = store.max_value

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.store.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def one_hot(self, codebook_size: int) -> RowView:
        return RowView(self.store.one_hot(codebook_size), self.rows)

    def __getitem__(self, rows: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        return self.store[self.rows[np.asarray(rows, dtype=np.int64)]]


@dataclass
class ExtractedSplit:
    """One `lary extract` output folder (or part of one), rows sorted by `id` (and `frame_index` for one row per
    pair).

    `features` holds `[rows, tokens, dim]` for image pairs or `[rows, pairs, tokens, dim]` for clips (float32), or
    the integer code ids `[rows, tokens]` / `[rows, pairs, tokens]` for `action_indices`, read per batch.
    `actions` holds one `[stride, dof]` array per row (dof may differ between robot types); `groups` the values of
    the column that keeps rows together when one folder is split (episodes, clips).
    """

    path: Path
    manifest: dict
    ids: list[str]
    feature_name: str
    features: FeatureStore | RowView
    labels: np.ndarray | None = None
    actions: list[np.ndarray] | None = None
    robot_types: list[str] | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> ExtractedSplit:
        """These rows only (features still read per batch)."""
        def pick(values):
            return None if values is None else [values[i] for i in rows] if isinstance(values, list) else values[rows]

        return ExtractedSplit(
            self.path, self.manifest, pick(self.ids), self.feature_name, RowView(self.features, rows), pick(self.labels),
            pick(self.actions), pick(self.robot_types), pick(self.groups),
        )


def _shards(outdir: Path) -> list[Path]:
    shards = sorted(outdir.glob("*.parquet"))
    if not shards:
        raise LaryError(f"no Parquet shards (*.parquet) in {outdir}")
    return shards


def default_feature(columns: list[str] | set[str]) -> str:
    """`latent_actions` when present, else the encoder-baseline `features`."""
    for name in DEFAULT_FEATURES:
        if name in columns:
            return name
    raise LaryError(f"none of the feature columns {DEFAULT_FEATURES} in columns {sorted(columns)}")


def column_to_numpy(column: pa.ChunkedArray | pa.Array, name: str, path: Path) -> np.ndarray:
    """Nested lists of equal lengths -> one dense array; ragged or null entries raise."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if values.null_count:
        raise LaryError(f"column {name!r} in {path} has null entries")
    shape = [len(values)]
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or pa.types.is_fixed_size_list(values.type):
        lengths = np.unique(pc.list_value_length(values).to_numpy(zero_copy_only=False))
        if len(lengths) > 1:
            raise LaryError(f"column {name!r} in {path} has rows of different lengths {lengths.tolist()} at depth {len(shape)}")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        values = values.flatten()
        if values.null_count:
            raise LaryError(f"column {name!r} in {path} has null entries")
    return values.to_numpy(zero_copy_only=False).reshape(shape)


def nonfinite_rows(values: np.ndarray | list[np.ndarray]) -> list[int]:
    """The rows of `values` (a (rows, ...) array, or one array per row) holding NaN or infinity: features or targets
    that would train the probe into a NaN score."""
    if isinstance(values, list):
        return [i for i, row in enumerate(values) if not np.isfinite(row).all()]
    if values.dtype.kind != "f":
        return []
    return np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1)).tolist()


NONFINITE = "holds NaN or infinity (the first at {first}): a probe trained on it gives no score"


def _rows_to_arrays(column: pa.ChunkedArray, name: str, path: Path) -> list[np.ndarray]:
    try:
        return list(column_to_numpy(column, name, path).astype(np.float32))
    except ValueError:  # ragged across rows: different dof per robot type
        return [np.asarray(row, dtype=np.float32) for row in column.to_pylist()]


def _cache_entry(outdir: Path, shards: list[Path], feature: str, cache_dir: Path) -> Path:
    stats = [(shard.name, shard.stat().st_size, shard.stat().st_mtime_ns) for shard in shards]
    key = json.dumps([CACHE_FORMAT, str(outdir.resolve()), feature, stats])
    return cache_dir / f"{outdir.resolve().name}-{feature}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _write_store(shards: list[Path], feature: str, order: np.ndarray, folder: Path) -> None:
    """Write `folder/features.npy` (row `order[i]` of the shards' concatenation as row `i`) and `folder/info.json`."""
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    dtype = np.dtype(np.int64 if feature == "action_indices" else np.float32)
    row, row_shape, maximum = 0, None, -math.inf
    with open(folder / "features.npy", "wb") as file:
        for shard in shards:
            parquet = pq.ParquetFile(shard, pre_buffer=False, buffer_size=READ_BUFFER)
            shard_start = row
            for batch in parquet.iter_batches(batch_size=READ_ROWS, columns=[feature]):
                if batch.num_rows == 0:
                    continue
                values = column_to_numpy(batch.column(0), feature, shard).astype(dtype, copy=False)
                if bad := nonfinite_rows(values):
                    first = f"its row {row - shard_start + bad[0]}"
                    raise LaryError(f"column {feature!r} in {shard} " + NONFINITE.format(first=first))
                if row_shape is None:
                    row_shape, first = values.shape[1:], shard
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (len(order), *row_shape)}
                    np.lib.format.write_array_header_2_0(file, header)
                    offset, row_bytes = file.tell(), dtype.itemsize * math.prod(row_shape)
                    file.truncate(offset + len(order) * row_bytes)
                elif values.shape[1:] != row_shape:
                    raise LaryError(
                        f"column {feature!r} has rows of shape {values.shape[1:]} in {shard} but {row_shape} in {first}"
                    )
                for i in range(len(values)):
                    file.seek(offset + int(position[row + i]) * row_bytes)
                    file.write(values[i])
                row += len(values)
                if values.size:
                    maximum = max(maximum, float(values.max()))
    if row != len(order):
        raise LaryError(f"read {row} rows of {feature!r} but {len(order)} ids from {shards[0].parent}: did it change?")
    (folder / "info.json").write_text(json.dumps({"source": str(shards[0].parent.resolve()), "feature": feature, "max": maximum}))


def open_store(outdir: Path, shards: list[Path], feature: str, order: np.ndarray, cache_dir: Path) -> FeatureStore:
    """The cached feature store of `outdir`, written first when absent (atomically: concurrent builders keep one)."""
    entry = _cache_entry(outdir, shards, feature, cache_dir)
    if not entry.is_dir():
        temporary = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        temporary.mkdir(parents=True, exist_ok=True)
        try:
            logger.info("caching %r of %s in %s", feature, outdir, entry)
            _write_store(shards, feature, order, temporary)
            os.rename(temporary, entry)
        except OSError:
            if not entry.is_dir():
                raise
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    store = FeatureStore(entry / "features.npy", json.loads((entry / "info.json").read_text())["max"])
    if len(store) != len(order):
        raise LaryError(f"{store.path} holds {len(store)} rows but {outdir} {len(order)}; delete {entry} to rebuild it")
    return store


MISSING_TARGET = {
    "label": "`lary extract` writes `label` for LARY classification configs; for --videos/--images pass "
             "`--labels FILE` (a CSV or Parquet of `id,label`)",
    "action": "`lary extract` writes `action` for LARY regression configs and LeRobot datasets; for --videos/--images "
              "pass `--labels FILE` (a CSV or Parquet of `id,frame_index,<action columns>`)",
}


def load_split(
    outdir: str | Path,
    feature: str | None = None,
    target: str | None = None,
    cache_dir: str | Path | None = None,
    group: str | None = None,
) -> ExtractedSplit:
    """Read one extract output folder: ids, targets and groups into memory, the features into the cached
    `FeatureStore`.

    Args:
        outdir: the folder holding `*.parquet` and `manifest.json`.
        feature: the representation column; default `latent_actions` if present, else `features`.
        target: `"label"` (classification), an array column such as `"action"` (regression), or None.
        cache_dir: where the feature store is written once (default: `default_cache_dir()`).
        group: a column whose values keep rows together when the folder is split (`episode_index`, `id`).
    """
    outdir = Path(outdir)
    manifest = read_manifest(outdir)
    shards = _shards(outdir)
    schemas = {shard: pq.read_schema(shard) for shard in shards}
    first = schemas[shards[0]].names
    feature = feature or default_feature(first)
    wanted = list(dict.fromkeys(["id", *(["frame_index"] if "frame_index" in first else []), *filter(None, [target, group])]))
    if target not in (None, "label") and "robot_type" in first:
        wanted.append("robot_type")
    for shard, schema in schemas.items():
        for name in [*wanted, feature]:
            if name not in schema.names:
                hint = f"; {MISSING_TARGET[name]}" if name in MISSING_TARGET else ""
                raise LaryError(f"column {name!r} missing from {shard} (columns: {schema.names}){hint}")
    table = pa.concat_tables([pq.read_table(shard, columns=wanted) for shard in shards])
    if table.num_rows == 0:
        raise LaryError(f"{outdir} holds no rows")
    keys = [("id", "ascending")] + ([("frame_index", "ascending")] if "frame_index" in wanted else [])
    order = pc.sort_indices(table, sort_keys=keys).to_numpy()
    table = table.take(order)
    split = ExtractedSplit(
        path=outdir,
        manifest=manifest,
        ids=table.column("id").to_pylist(),
        feature_name=feature,
        features=open_store(outdir, shards, feature, order, Path(cache_dir) if cache_dir else default_cache_dir()),
    )
    if target == "label":
        split.labels = column_to_numpy(table.column("label"), "label", outdir).astype(np.int64)
    elif target is not None:
        split.actions = _rows_to_arrays(table.column(target), target, outdir)
        if bad := nonfinite_rows(split.actions):
            first = f"id {split.ids[bad[0]]!r}"
            raise LaryError(f"column {target!r} in {outdir} " + NONFINITE.format(first=first))
        if "robot_type" in table.column_names:
            split.robot_types = [str(value) for value in table.column("robot_type").to_pylist()]
    if group is not None:
        split.groups = np.asarray(table.column(group).to_pylist())
    return split


def split_by_groups(split: ExtractedSplit, fraction: float, seed: int,
                    stratify: bool = False) -> tuple[ExtractedSplit, ExtractedSplit, dict]:
    """Train and validation parts of one folder: a seeded `fraction` of its groups (episodes, clips) for validation
    (at least one, never all), every group whole on one side. With `stratify` (classification) each class's groups
    (a group's class: its rows' most common label) are drawn on their own, so every class with two groups or more
    has one in validation; a class of one group stays in train. Returns both parts and what went where."""
    names, group_of_row = np.unique(split.groups, return_inverse=True)
    if len(names) < 2:
        raise LaryError(f"{split.path} holds {len(names)} group(s); splitting into train and validation needs two or more")
    strata = [np.arange(len(names))]
    if stratify:
        votes = np.zeros((len(names), int(split.labels.max()) + 1), dtype=np.int64)
        np.add.at(votes, (group_of_row, split.labels), 1)
        group_class = votes.argmax(1)
        strata = [np.flatnonzero(group_class == label) for label in np.unique(group_class)]
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for members in strata:
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.extend(rng.permutation(members)[:count].tolist())
    if not held:  # every class has a single group: draw from all of them
        held = rng.permutation(len(names))[: min(len(names) - 1, max(1, round(fraction * len(names))))].tolist()
    in_validation = np.zeros(len(names), dtype=bool)
    in_validation[held] = True
    rows = in_validation[group_of_row]
    info = {"train_groups": [str(name) for name in names[~in_validation]],
            "validation_groups": [str(name) for name in names[in_validation]],
            "fraction": fraction, "seed": seed, "stratified_by": "label" if stratify else None}
    return split.subset(np.flatnonzero(~rows)), split.subset(np.flatnonzero(rows)), info


def one_hot_indices(*splits: ExtractedSplit) -> int:
    """Make `action_indices` come back as one-hot tokens (per batch); returns the codebook size (max index + 1 over
    all splits).

    A one-hot code followed by the probes' first Linear layer is exactly a learned embedding of the code ids.
    """
    codebook_size = int(max(split.features.max_value for split in splits)) + 1
    for split in splits:
        split.features = split.features.one_hot(codebook_size)
    return codebook_size


def check_feature_shapes(train: ExtractedSplit, validation: ExtractedSplit) -> None:
    """Train and validation rows must have the same feature shape (the probe is built for one)."""
    if train.features.shape[1:] != validation.features.shape[1:]:
        raise LaryError(
            f"feature {train.feature_name!r} has shape {tuple(train.features.shape[1:])} per row in {train.path} "
            f"but {tuple(validation.features.shape[1:])} in {validation.path}"
        )
