"""Latent actions written back into a LeRobot dataset: a copy with new per-frame features that `LeRobotDataset`
loads like any other, the form a VLA pretraining run consumes.

Frame t of an episode holds the latent action of its pair `(t, t + K)`:
- `latent_action.indices`: int64, shape (n,), the codebook indices;
- `latent_action.vectors`: float32, shape (n, D), the quantized vectors (`with_vectors=False` leaves them out:
  they take n * D * 4 bytes a frame, 64 KiB for the released model);
- `latent_action.valid`: bool, shape (1,). False on the last K frames of each episode (no frame t + K to pair
  with) and on every frame of an episode the input does not cover; those frames hold index -1 (no codebook entry,
  so a lookup fails loudly) and zero vectors. Not `*_is_pad`: `LeRobotDataset` makes `<key>_is_pad` itself for
  `delta_timestamps` queries, and a stored feature of that form could clash with them.

Each new feature's entry in info.json carries an `info` dict, as LeRobot's video features carry theirs, saying what
the codes describe and how they were made, so that a run reading the copy can tell and re-create them:
`latent_action.stride_frames` (K: the pair of frame t is (t, t + K)), `latent_action.stride_seconds` (the
`--stride-seconds` K came from, or null for `--stride`), `latent_action.model` and `latent_action.model_revision`
(the Hub id and commit, or the folder and a hash of its weights), `latent_action.dtype` (what the model computed in)
and `latent_action.codebook_size` when known, read from `lary extract`'s manifest.json and run.json beside the
shards (null when the input is a table or a folder without them).

Stats (meta/stats.json and the per-episode stats, see `stats.py`) of indices and vectors are over valid frames only
(the fill values are not data); an episode without any has none (null in v3.0's episodes table, absent from v2.1's
episodes_stats.jsonl). `valid`'s stats are over all frames: its mean is the fraction of frames with a latent action.

The input is what `lary extract --lerobot` writes: one row per pair, columns `episode_index`, `frame_index` (t),
`next_frame_index` (t + K), `action_indices` (n), `latent_actions` (n x D); Parquet shards (retries included, rows
in any order) or a pyarrow Table. An episode the input lacks entirely (not extracted, or failed) is kept with every
frame invalid and named in a warning, so the copy is the whole dataset with its episode indices; an episode the
input covers in part is an error naming the frames it lacks.

The copy is written to `OUT.incomplete` (marked as an unfinished export, so that a rerun removes only a folder of
its own) and renamed to OUT when complete. Video files are hard-linked to the source's where the file system allows
(`copy_videos=True` copies them), everything else is copied; the source is only read. Before anything is written,
every path the source names (info.json's templates, for every camera) and every file it holds is checked to be
inside it (`lary.paths.inside`: no `..`, absolute path or symlink out of it), and every file written to be inside the
copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from lary.errors import LaryError
from lary.extract.shards import read_manifest, read_run
from lary.logs import progress_hidden
from lary.paths import inside, outside

from .dataset import LeRobotFolder
from .layout import (
    EPISODES_STATS_JSONL,
    INFO_PATH,
    STATS_PATH,
    V30,
    camera_keys,
    dataset_file,
    episode_table,
    episodes_files,
    read_info,
    read_jsonl,
)
from .stats import aggregate_stats, episode_stats

logger = logging.getLogger(__name__)

INDICES = "latent_action.indices"
VECTORS = "latent_action.vectors"
VALID = "latent_action.valid"
KEY_COLUMNS = ("episode_index", "frame_index", "next_frame_index")
FILL_INDEX = -1
UNFINISHED = ".lary-export-unfinished"  # marks OUT.incomplete as ours: a rerun may remove it
PROVENANCE = ("model", "model_revision", "dtype", "stride_seconds", "codebook_size")


def provenance(latent_actions: pa.Table | str | Path) -> dict[str, object]:
    """How the codes were made, from `lary extract`'s manifest.json and run.json when `latent_actions` is its folder:
    the model (id or folder), its revision (Hub commit or weights hash), the dtype it computed in, the
    `--stride-seconds` asked for (None for `--stride`) and the codebook size. Values not known are None."""
    found: dict[str, object] = dict.fromkeys(PROVENANCE)
    folder = None if isinstance(latent_actions, pa.Table) else Path(latent_actions)
    if folder is None or not (folder / "manifest.json").is_file():
        return found
    manifest, run = read_manifest(folder), read_run(folder) or {}
    found |= {"model": manifest.get("model"), "model_revision": manifest.get("model_revision"),
              "dtype": run.get("options", {}).get("dtype"), "stride_seconds": manifest.get("stride_seconds"),
              "codebook_size": (manifest.get("label_health") or {}).get("codebook_size")}
    return found


class _Input:
    """The input rows, read one episode at a time from the parts (files, or the one table) that hold it."""

    def __init__(self, latent_actions: pa.Table | str | Path):
        wanted = (*KEY_COLUMNS, "action_indices", "latent_actions")
        if isinstance(latent_actions, pa.Table):
            self.parts: list[pa.Table | Path] = [latent_actions]
            self.where = "the latent-action table"
            names = [("the latent-action table", latent_actions.column_names)]
        else:
            path = Path(latent_actions)
            self.parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            self.where = str(path)
            if not self.parts or not self.parts[0].is_file():
                raise LaryError(f"{path}: no latent-action Parquet file{' (*.parquet)' if path.is_dir() else ''}")
            names = [(str(part), pq.read_schema(part).names) for part in self.parts]
        for what, columns in names:
            missing = [name for name in wanted if name not in columns]
            if missing:
                raise LaryError(f"{what} has no column {missing[0]!r}")
        keys = [self._read(part, KEY_COLUMNS) for part in self.parts]
        self.keys = pa.concat_tables(keys)
        self.parts_of: dict[int, list[int]] = {}
        for number, part_keys in enumerate(keys):
            for index in np.unique(part_keys.column("episode_index").to_numpy()).tolist():
                self.parts_of.setdefault(index, []).append(number)

    @staticmethod
    def _read(part: pa.Table | Path, columns: Sequence[str], episode: int | None = None) -> pa.Table:
        where = None if episode is None else pc.field("episode_index") == episode
        if isinstance(part, pa.Table):
            return (part if where is None else part.filter(where)).select(list(columns))
        return pq.read_table(part, columns=list(columns), filters=where)

    def episode(self, index: int, columns: Sequence[str]) -> pa.Table:
        """The rows of episode `index`, by `frame_index`."""
        names = ["frame_index", *columns]
        table = pa.concat_tables([self._read(self.parts[number], names, index) for number in self.parts_of[index]])
        return table.take(pc.sort_indices(table, [("frame_index", "ascending")]))


def _check_pairs(keys: pa.Table, lengths: dict[int, int], where: str) -> int:
    """The stride K of the input's pairs, after checking that each episode it names is covered exactly:
    one pair for each frame t = 0 .. length - K - 1. Warns naming the episodes it lacks."""
    if keys.num_rows == 0:
        raise LaryError(f"{where} holds no latent-action rows")
    episode, frame, following = (keys.column(name).to_numpy() for name in KEY_COLUMNS)
    strides = np.unique(following - frame)
    if len(strides) != 1 or strides[0] < 1:
        raise LaryError(f"{where}: pairs (t, t + K) must share one K >= 1; found K = {strides.tolist()}")
    stride = int(strides[0])
    order = np.lexsort((frame, episode))
    episode, frame = episode[order], frame[order]
    twice = np.flatnonzero((np.diff(episode) == 0) & (np.diff(frame) == 0))
    if len(twice):
        raise LaryError(f"{where}: episode {episode[twice[0]]}, frame {frame[twice[0]]} has two rows")
    present, starts = np.unique(episode, return_index=True)
    for index, start, stop in zip(present.tolist(), starts, [*starts[1:], len(episode)]):
        if index not in lengths:
            raise LaryError(f"{where}: episode {index} is not in the dataset")
        expected = np.arange(max(0, lengths[index] - stride))
        frames = frame[start:stop]
        lacking = np.setdiff1d(expected, frames)
        if len(lacking):
            raise LaryError(f"{where}: episode {index} lacks the pairs of frames {lacking[:10].tolist()}")
        if len(frames) > len(expected):
            extra = np.setdiff1d(frames, expected)[:10].tolist()
            raise LaryError(
                f"{where}: episode {index} (length {lengths[index]}) has pairs (t, t + {stride}) at t = {extra}"
            )
    # episodes of K frames or fewer have no pair to lack
    absent = sorted(
        index for index, length in lengths.items() if length > stride and index not in set(present.tolist())
    )
    if absent:
        logger.warning("episodes without latent actions (all frames invalid): %s", absent)
    return stride


def _list_values(column: pa.ChunkedArray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A nested list column as an array of `(rows, *shape)`."""
    values = column.combine_chunks()
    for _ in shape:
        values = values.flatten()
    values = values.to_numpy(zero_copy_only=False)
    if values.size != len(column) * int(np.prod(shape)):
        raise LaryError(f"{what}: rows are not all of shape {shape}")
    return values.reshape(len(column), *shape)


class _Latents:
    """The new columns of each episode, from the input rows of its pairs."""

    def __init__(self, rows: _Input, stride: int, with_vectors: bool, made: dict[str, object]):
        self.rows, self.stride, self.with_vectors, self.made = rows, stride, with_vectors, made
        first = rows.episode(next(iter(rows.parts_of)), ["action_indices", "latent_actions"]).slice(0, 1).to_pylist()[0]
        self.codes = len(first["action_indices"])
        self.width = len(first["latent_actions"][0])

    def episode(self, index: int, length: int) -> dict[str, np.ndarray]:
        """`INDICES` (length, n), `VECTORS` (length, n, D) and `VALID` (length,) of one episode."""
        pairs = max(0, length - self.stride) if index in self.rows.parts_of else 0
        columns = {
            INDICES: np.full((length, self.codes), FILL_INDEX, dtype=np.int64),
            VALID: np.arange(length) < pairs,
        }
        if self.with_vectors:
            columns[VECTORS] = np.zeros((length, self.codes, self.width), dtype=np.float32)
        if pairs:
            table = self.rows.episode(index, ["action_indices"] + (["latent_actions"] if self.with_vectors else []))
            what = f"{self.rows.where}, episode {index}"
            columns[INDICES][:pairs] = _list_values(table.column("action_indices"), (self.codes,), what)
            if self.with_vectors:
                shape = (self.codes, self.width)
                columns[VECTORS][:pairs] = _list_values(table.column("latent_actions"), shape, what)
        return columns

    def features(self) -> dict[str, dict]:
        """The new entries of info.json's `features`, each with the `info` of how its codes were made."""
        info = {"latent_action.stride_frames": self.stride} | {f"latent_action.{k}": v for k, v in self.made.items()}
        features = {INDICES: {"dtype": "int64", "shape": [self.codes], "names": None, "info": info}}
        if self.with_vectors:
            features[VECTORS] = {"dtype": "float32", "shape": [self.codes, self.width], "names": None, "info": info}
        features[VALID] = {"dtype": "bool", "shape": [1], "names": None, "info": info}
        return features

    def arrow(self, columns: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """Arrow arrays in the layout LeRobot writes: scalars for shape (1,), fixed-size lists for (n,), lists of
        lists for (n, D)."""
        indices = columns[INDICES]
        arrays = {
            INDICES: pa.array(indices[:, 0])
            if self.codes == 1
            else pa.FixedSizeListArray.from_arrays(pa.array(indices.ravel()), self.codes)
        }
        if self.with_vectors:
            vectors = columns[VECTORS]
            inner = pa.ListArray.from_arrays(
                pa.array(np.arange(0, vectors.size + 1, self.width, dtype=np.int32)), pa.array(vectors.ravel())
            )
            outer = np.arange(0, len(vectors) * self.codes + 1, self.codes, dtype=np.int32)
            arrays[VECTORS] = pa.ListArray.from_arrays(pa.array(outer), inner)
        arrays[VALID] = pa.array(columns[VALID])
        return arrays

    def hf_features(self, legacy: bool) -> dict[str, dict]:
        """The new columns as `datasets` describes them in a Parquet file's `huggingface` metadata (`legacy`:
        `Sequence` for fixed-size lists, as datasets < 4 wrote and reads; else `List`)."""
        value = {"dtype": "int64", "_type": "Value"}
        sequence = {"feature": value, "length": self.codes, "_type": "Sequence" if legacy else "List"}
        features = {INDICES: value if self.codes == 1 else sequence}
        if self.with_vectors:
            features[VECTORS] = {"shape": [self.codes, self.width], "dtype": "float32", "_type": "Array2D"}
        features[VALID] = {"dtype": "bool", "_type": "Value"}
        return features


def _schema(schema: pa.Schema, new: dict[str, pa.Array], latents: _Latents) -> pa.Schema:
    """The data file's schema with the new columns, and its `huggingface` metadata (that `datasets` reads the
    columns' features from) describing them too."""
    for name, array in new.items():
        schema = schema.append(pa.field(name, array.type))
    metadata = dict(schema.metadata or {})
    if b"huggingface" in metadata:
        text = metadata[b"huggingface"].decode()
        hf = json.loads(text)
        hf["info"]["features"] |= latents.hf_features(legacy='"Sequence"' in text)
        metadata[b"huggingface"] = json.dumps(hf).encode()
    return schema.with_metadata(metadata)


def _stats(columns: dict[str, np.ndarray], version: str, where: str) -> dict[str, dict[str, np.ndarray]]:
    """One episode's stats of the new features: indices and vectors over its valid frames, `valid` over all. Vectors
    holding NaN or infinity are refused, naming `where` and the frame: they would be the dataset's stats and data."""
    valid = columns[VALID]
    if VECTORS in columns and (bad := np.flatnonzero(~np.isfinite(columns[VECTORS]).all(axis=(1, 2)) & valid)).size:
        raise LaryError(f"{where}: the latent_actions of frame {bad[0]} hold NaN or infinity ({bad.size} frame(s))")
    stats = {VALID: episode_stats(valid, version)}
    if valid.any():
        stats |= {name: episode_stats(values[valid], version) for name, values in columns.items() if name != VALID}
    return stats


def _write_data_file(
    source: Path, target: Path, lengths: dict[int, int], latents: _Latents, version: str, progress: tqdm
) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """Copy one data file with the new columns, one row group per episode as LeRobot writes; returns the stats of
    the new features for each of its episodes."""
    table = pq.read_table(source)
    episode = table.column("episode_index").to_numpy()
    starts = np.flatnonzero(np.diff(episode, prepend=-1))
    stats: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for start, stop in zip(starts, [*starts[1:], len(episode)]):
        index, rows = int(episode[start]), table.slice(start, stop - start)
        frames = rows.column("frame_index").to_numpy()
        if index in stats or index not in lengths or not np.array_equal(frames, np.arange(lengths[index])):
            raise LaryError(f"{source}: the rows of episode {index} are not its frames 0 .. length - 1, in one run")
        columns = latents.episode(index, lengths[index])
        stats[index] = _stats(columns, version, f"{latents.rows.where}, episode {index}")
        new = latents.arrow(columns)
        if writer is None:
            writer = pq.ParquetWriter(target, _schema(table.schema, new, latents))
        for name, array in new.items():
            rows = rows.append_column(name, array)
        writer.write_table(rows)
        progress.update()
    if writer is not None:
        writer.close()
    return stats


def _as_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {name: value.tolist() for name, value in stats.items()}


def _write_episode_stats(
    source: Path, target: Path, version: str, stats: dict[int, dict[str, dict]], features: list[str]
) -> None:
    """The per-episode stats of the new features beside the others: v3.0 `stats/<feature>/<stat>` columns of
    meta/episodes (after the existing ones; null for an episode without), v2.1 entries of each
    episodes_stats.jsonl line."""
    if version == V30:
        names = [(f, stat) for f in features for stat in next((s[f] for s in stats.values() if f in s), {})]
        for file in episodes_files(source):
            table = pq.read_table(file)
            episodes = table.column("episode_index").to_pylist()
            position = max((i + 1 for i, name in enumerate(table.column_names) if name.startswith("stats/")), default=0)
            for feature, stat in names:
                values = [stats[e][feature][stat].tolist() if feature in stats[e] else None for e in episodes]
                kind = pa.list_(pa.int64() if stat == "count" else pa.float64())
                table = table.add_column(position, f"stats/{feature}/{stat}", pa.array(values, type=kind))
                position += 1
            path = _copy_file(target, file.relative_to(source))
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
    else:
        lines = read_jsonl(source, EPISODES_STATS_JSONL)
        for line in lines:
            line["stats"] |= {name: _as_json(s) for name, s in stats[line["episode_index"]].items()}
        _copy_file(target, EPISODES_STATS_JSONL).write_text("".join(json.dumps(line) + "\n" for line in lines))


def _write_json(path: Path, data: dict) -> None:
    """As LeRobot writes its JSON files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False))


def _copy_file(target: Path, relative: str | Path) -> Path:
    """Where the copy's file `relative` (a path of the source) is written: inside `target`, checked."""
    return inside(target, relative, f"{target}: a file of the copy")


def _source_files(source: Path) -> list[Path]:
    """Every file of the dataset `source`, each checked to be in it (a symlink to a file elsewhere is refused)."""
    return [dataset_file(source, path.relative_to(source)) for path in sorted(source.rglob("*")) if path.is_file()]


def _copy_tree(source: Path, files: list[Path], target: Path, skip: set[Path], copy_videos: bool) -> None:
    """The `files` of `source` but those in `skip` (written anew), into `target`: videos hard-linked if allowed."""
    for path in files:
        if path in skip:
            continue
        destination = _copy_file(target, path.relative_to(source))
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".mp4" and not copy_videos:
            try:
                os.link(path.resolve(), destination)  # Hub snapshots hold symlinks: link their target
                continue
            except OSError:
                pass  # another file system: copy
        shutil.copy2(path, destination)


def export_latent_actions(
    dataset: LeRobotFolder | str | Path,
    latent_actions: pa.Table | str | Path,
    out: str | Path,
    *,
    with_vectors: bool = True,
    copy_videos: bool = False,
) -> Path:
    """Write a copy of the local LeRobot `dataset` (v3.0 or v2.1) into `out` with the latent actions of
    `latent_actions` (a pyarrow Table, a Parquet file, or a folder of `*.parquet` shards) as per-frame features,
    `info.json` and stats updated (see the module docstring). Returns `out`, which must not exist yet."""
    root = dataset.root if isinstance(dataset, LeRobotFolder) else Path(dataset)
    out = Path(out)
    info = read_info(root)
    version = info["codebase_version"]
    if out.exists():
        raise LaryError(f"{out} exists; choose another output folder or delete it")
    outside(out, root, "the dataset")
    taken = [name for name in (INDICES, VECTORS, VALID) if name in info["features"]]
    if taken:
        raise LaryError(f"{root / INFO_PATH} already has a feature {taken[0]!r}; export from the original dataset")
    table = episode_table(root, info)
    for camera in camera_keys(info):  # the copy keeps info.json's templates: each camera's videos must be inside too
        episode_table(root, info, camera)
    lengths = dict(zip(table["episode_index"].tolist(), table["length"].tolist()))
    data_files = list(dict.fromkeys(table["data_file"]))
    for file in data_files:
        if not file.is_file():
            raise LaryError(f"{file} is missing: the export needs every episode's data file")
    files = _source_files(root)
    rows = _Input(latent_actions)
    stride = _check_pairs(rows.keys, lengths, rows.where)
    latents = _Latents(rows, stride, with_vectors, provenance(latent_actions))
    rewritten = {root / INFO_PATH, root / STATS_PATH, root / EPISODES_STATS_JSONL, *data_files}
    rewritten |= set(episodes_files(root))

    incomplete = out.with_name(out.name + ".incomplete")
    if incomplete.exists():  # left by a killed export (marked as ours), or someone else's folder: kept
        if not (incomplete / UNFINISHED).is_file():
            raise LaryError(f"{incomplete} exists and is not an unfinished export; move it or choose another --out")
        shutil.rmtree(incomplete)
    incomplete.mkdir(parents=True)
    (incomplete / UNFINISHED).touch()
    try:
        _copy_tree(root, files, incomplete, rewritten, copy_videos)
        stats: dict[int, dict[str, dict]] = {}
        with tqdm(total=len(lengths), desc="export episodes", unit="episode", disable=progress_hidden()) as progress:
            for file in data_files:
                target = _copy_file(incomplete, file.relative_to(root))
                stats |= _write_data_file(file, target, lengths, latents, version, progress)
        features = latents.features()
        _write_episode_stats(root, incomplete, version, stats, list(features))
        if (root / STATS_PATH) in files:
            merged = json.loads((root / STATS_PATH).read_text())
            for feature in features:
                per_episode = [s[feature] for s in stats.values() if feature in s]
                if per_episode:
                    merged[feature] = _as_json(aggregate_stats(per_episode))
            _write_json(incomplete / STATS_PATH, merged)
        _write_json(incomplete / INFO_PATH, {**info, "features": {**info["features"], **features}})
        (incomplete / UNFINISHED).unlink()
        incomplete.rename(out)
    except BaseException:
        shutil.rmtree(incomplete, ignore_errors=True)
        raise
    labelled = sum(max(0, lengths[index] - stride) for index in rows.parts_of)
    logger.info(
        "exported %d episodes (%d frames with a latent action, K = %d) to %s", len(lengths), labelled, stride, out
    )
    return out
