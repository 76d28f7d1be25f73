"""`lary prepare`: LARY metadata CSVs + DATA_DIR -> Parquet shards, action statistics and a dataset card.

Rows stream from the CSV through a process pool (ordered, so shards keep CSV order) into shards that roll
over at `--max-shard-size`. Each split is written under `OUT/<config>/.incomplete-<split>/` and renamed into
place only once complete, so an interrupted run leaves no partial shards behind.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from datasets.arrow_writer import TypedSequence
from tqdm import tqdm

from lary.configs.data import DEFAULT_MAX_SHARD_SIZE, PrepareConfig
from lary.errors import LaryError
from lary.logs import progress_hidden
from lary.parquet_shards import ParquetShard

from .card import write_card
from .examples import build_features, class_names, load_example, media_paths, read_rows
from .layout import LAYOUTS, ConfigLayout, get_layout
from .media import MediaError

WRITER_BATCH_SIZE = 64
INFO_NAME = "prepare_info.json"
STATS_NAME = "action_stats.json"
SHOWN_PATHS = 5

logger = logging.getLogger(__name__)


class MediaFilesError(LaryError):
    """Media files that are missing or unreadable, with their count and the first paths."""

    def __init__(self, where: str, problems: list[tuple[str, str]], count: int):
        shown = "\n".join(f"  {path} ({reason})" for path, reason in problems[:SHOWN_PATHS])
        super().__init__(
            f"{where}: {count} media file(s) missing or unreadable, first ones:\n{shown}\n"
            "Fix them, or pass --skip-missing to leave their rows out (they are then listed in the card)."
        )
        self.count = count


def parse_size(text: str) -> int:
    """`"500MB"` -> bytes (B, KB, MB, GB; powers of 1024)."""
    units = {"GB": 2**30, "MB": 2**20, "KB": 2**10, "B": 1}
    value = text.strip().upper()
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    return int(value)


class ActionMoments:
    """Per-dimension mean and std of action rows, merged chunk by chunk (Chan et al.) in float64."""

    def __init__(self):
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64)
        n, mean = len(chunk), chunk.mean(axis=0)
        m2 = ((chunk - mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        if mean.shape != self.mean.shape:
            raise ValueError(f"action dof {mean.shape[0]} differs from earlier rows' {self.mean.shape[0]}")
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.tolist(), "std": np.sqrt(self.m2 / self.count).tolist()}


@dataclass
class ActionStats:
    """Train-split action statistics: over all rows, and per `robot_type` where the CSV has one."""

    by_robot: bool
    overall: ActionMoments = field(default_factory=ActionMoments)
    robots: dict[str, ActionMoments] = field(default_factory=dict)
    mixed_dof: bool = False

    def update(self, example: dict[str, Any]) -> None:
        action = np.asarray(example["action"])
        if self.by_robot:
            self.robots.setdefault(example["robot_type"], ActionMoments()).update(action)
        if not self.mixed_dof:
            try:
                self.overall.update(action)
            except ValueError:
                self.mixed_dof = True  # e.g. RoboCOIN: robots differ in action size

    def to_dict(self, layout: ConfigLayout) -> dict[str, Any]:
        stats: dict[str, Any] = {"config": layout.name, "split": "train", "stride": layout.stride}
        stats["all"] = None if self.mixed_dof or self.overall.mean is None else self.overall.to_dict()
        if self.by_robot:
            stats["robot_type"] = {robot: moments.to_dict() for robot, moments in sorted(self.robots.items())}
        return stats


def _load(index_row: tuple[int, dict[str, str]], layout: ConfigLayout, split: str, media_dir: Path, names):
    """Worker: one row -> ("ok", example) or ("bad", id, path, reason)."""
    index, row = index_row
    try:
        return "ok", load_example(layout, row, index, split, media_dir, names)
    except MediaError as error:
        return "bad", f"{layout.name}/{split}/{index}", error.path, error.reason


def _missing_files(layout: ConfigLayout, csv_path: Path, media_dir: Path) -> tuple[int, list[tuple[str, str]], int]:
    """One cheap pass over the CSV, before anything is read: (rows, first missing paths, missing count). A path that
    leads out of `media_dir` is refused on one line naming the CSV, the row (from 0, as in the rows' ids) and the value."""
    rows, missing, count = 0, [], 0
    for rows, row in enumerate(read_rows(csv_path, layout.columns), start=1):
        for path in media_paths(layout, row, media_dir, f"{csv_path}: row {rows - 1}"):
            if not path.is_file():
                count += 1
                if len(missing) < SHOWN_PATHS:
                    missing.append((str(path), "missing"))
    return rows, missing, count


def payload_size(value: Any) -> int:
    """Bytes an example's media, arrays and strings take: the shard size, up to Parquet overhead."""
    if isinstance(value, dict):
        return sum(payload_size(item) for item in value.values())
    if isinstance(value, list):
        return sum(payload_size(item) for item in value)
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (bytes, str)):
        return len(value)
    return 8


def _encoded_table(examples: list[dict[str, Any]], features: datasets.Features) -> pa.Table:
    """Examples as an Arrow table of `features` (images as bytes, arrays as `datasets` types; the schema carries the
    features, as `datasets` writes them)."""
    encoded = features.encode_batch({name: [example[name] for example in examples] for name in features})
    arrays = [pa.array(TypedSequence(encoded[name], type=features[name])) for name in features]
    return pa.Table.from_arrays(arrays, schema=features.arrow_schema)


def _write_shards(
    results: Iterator, total: int, where: str, staging: Path, features: datasets.Features, max_shard_size: int,
    stats: ActionStats | None,
) -> tuple[int, int, list[dict[str, str]]]:
    """Stream loaded rows into staging shards (`WRITER_BATCH_SIZE` rows per row group, a new shard past
    `max_shard_size` bytes); returns (shards, rows, skipped rows)."""
    shards = [ParquetShard(staging / "shard-00000.parquet", features.arrow_schema, WRITER_BATCH_SIZE)]
    shard_bytes, rows, skipped, pending = 0, 0, [], []
    for result in tqdm(results, total=total, desc=f"prepare {where}", unit="row", disable=progress_hidden()):
        if result[0] == "bad":
            skipped.append({"id": result[1], "path": result[2], "reason": result[3]})
            continue
        example = result[1]
        if stats is not None:
            stats.update(example)
        if shard_bytes > max_shard_size:
            if pending:
                shards[-1].write(_encoded_table(pending, features))
                pending = []
            shards[-1].publish()
            shards.append(ParquetShard(staging / f"shard-{len(shards):05d}.parquet", features.arrow_schema, WRITER_BATCH_SIZE))
            shard_bytes = 0
        pending.append(example)
        if len(pending) == WRITER_BATCH_SIZE:
            shards[-1].write(_encoded_table(pending, features))
            pending = []
        shard_bytes += payload_size(example)
        rows += 1
    if pending:
        shards[-1].write(_encoded_table(pending, features))
    shards[-1].publish()
    return len(shards), rows, skipped


def write_split(
    layout: ConfigLayout,
    split: str,
    data_dir: Path,
    metadata_dir: Path,
    config_dir: Path,
    features: datasets.Features,
    pool: multiprocessing.pool.Pool | None,
    skip_missing: bool,
    max_shard_size: int,
    stats: ActionStats | None,
) -> dict[str, Any]:
    """Write `<split>-NNNNN-of-NNNNN.parquet` shards; returns the split's row count, shards and skipped rows."""
    csv_path = layout.csv_path(metadata_dir, split)
    media_dir = layout.media_dir(data_dir, split)
    where = f"{layout.name}/{split}"
    total, missing, missing_count = _missing_files(layout, csv_path, media_dir)
    if missing_count and not skip_missing:
        raise MediaFilesError(where, missing, missing_count)

    staging = config_dir / f".incomplete-{split}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    names = features["label"].names if "label" in features else None
    load = functools.partial(_load, layout=layout, split=split, media_dir=media_dir, names=names)
    tasks: Iterator = enumerate(read_rows(csv_path, layout.columns))
    results = pool.imap(load, tasks, chunksize=4) if pool else map(load, tasks)

    try:
        num_shards, rows, skipped = _write_shards(results, total, where, staging, features, max_shard_size, stats)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if skipped and not skip_missing:
        shutil.rmtree(staging)
        raise MediaFilesError(where, [(item["path"], item["reason"]) for item in skipped], len(skipped))

    final = [config_dir / f"{split}-{i:05d}-of-{num_shards:05d}.parquet" for i in range(num_shards)]
    for i, path in enumerate(final):
        os.replace(staging / f"shard-{i:05d}.parquet", path)
    for stale in set(config_dir.glob(f"{split}-*-of-*.parquet")) - set(final):
        stale.unlink()
    staging.rmdir()
    return {"rows": rows, "shards": num_shards, "skipped": skipped}


def prepare_config(
    layout: ConfigLayout,
    data_dir: Path,
    metadata_dir: Path,
    out: Path,
    pool: multiprocessing.pool.Pool | None,
    skip_missing: bool,
    max_shard_size: int,
) -> dict[str, Any] | None:
    """Prepare one config's splits; None (with a message) when none of its CSVs is present."""
    splits = [split for split in layout.csv_names if layout.csv_path(metadata_dir, split).is_file()]
    if not splits:
        logger.info("skipping %s: none of %s is in %s", layout.name, ", ".join(layout.csv_names.values()), metadata_dir)
        return None
    names = class_names(layout, metadata_dir) if layout.kind != "regression" else None
    features = build_features(layout, names)
    config_dir = out / layout.name
    config_dir.mkdir(parents=True, exist_ok=True)
    for leftover in config_dir.glob(".incomplete-*"):  # from an interrupted run
        shutil.rmtree(leftover)
    info: dict[str, Any] = {"config": layout.name, "kind": layout.kind, "splits": {}}
    for split in splits:
        stats = ActionStats(layout.stats_by_robot) if layout.kind == "regression" and split == "train" else None
        info["splits"][split] = write_split(
            layout, split, data_dir, metadata_dir, config_dir, features, pool, skip_missing, max_shard_size, stats
        )
        if stats is not None and stats.overall.count + len(stats.robots):
            (config_dir / STATS_NAME).write_text(json.dumps(stats.to_dict(layout), indent=1))
    (config_dir / INFO_NAME).write_text(json.dumps(info, indent=1))
    return info


def prepare(
    data_dir: str | Path,
    metadata_dir: str | Path,
    out: str | Path,
    configs: list[str] | None = None,
    num_proc: int = 1,
    skip_missing: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> dict[str, dict[str, Any]]:
    """Prepare `configs` (default: all) into `out` and (re)write its card; returns each prepared config's info."""
    data_dir, metadata_dir, out = Path(data_dir), Path(metadata_dir), Path(out)
    layouts = [get_layout(name) for name in (configs or LAYOUTS)]
    max_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    out.mkdir(parents=True, exist_ok=True)
    prepared = {}
    pool = multiprocessing.Pool(num_proc) if num_proc > 1 else None
    try:
        for layout in layouts:
            info = prepare_config(layout, data_dir, metadata_dir, out, pool, skip_missing, max_bytes)
            if info is not None:
                prepared[layout.name] = info
    finally:
        if pool is not None:
            pool.terminate()
    write_card(out, [json.loads(path.read_text()) for path in sorted(out.glob(f"*/{INFO_NAME}"))])
    return prepared


def prepare_command(config: PrepareConfig) -> int:
    """`lary prepare`: every config whose CSVs are present; exit code 1 when none is."""
    prepared = prepare(
        config.data_dir, config.metadata_dir, config.out, config.configs, config.num_proc, config.skip_missing,
        config.max_shard_size,
    )
    for name, info in prepared.items():
        counts = ", ".join(f"{split} {split_info['rows']}" for split, split_info in info["splits"].items())
        logger.info("%s: %s", name, counts)
    logger.info("wrote %s (%d config(s)); load with lary.data.load_lary_split(%r, CONFIG, SPLIT)", config.out, len(prepared), str(config.out))
    return 0 if prepared else 1
