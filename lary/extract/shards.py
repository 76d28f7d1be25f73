"""Work shards of `lary extract`: planning by row-index ranges, atomic writes, resume, retries and the run record.

Shard `i` of `k` covers rows `[i * shard_size, (i + 1) * shard_size)` and is written as
`shard-0000i-of-0000k.parquet`, beside a sidecar `shard-0000i-of-0000k.json` (`rows`, `pairs`, and the `errors`
of unreadable rows). Both are written under temporary names and renamed, the sidecar first: a shard is complete
exactly when its Parquet file exists, so a killed run leaves nothing partial behind that a rerun would keep.
A rerun skips complete shards and retries the failed rows of each shard's latest attempt into
`shard-0000i-of-0000k.retry-R.parquet` (+ sidecar).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
ERRORS_FILE = "errors.jsonl"
SHARD_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})(?:\.retry-(\d+))?\.parquet$")


@dataclass(frozen=True)
class WorkUnit:
    """Rows `indices` of shard `shard`, attempt 0 (the whole range) or a retry of earlier failures."""

    shard: int
    num_shards: int
    attempt: int
    indices: tuple[int, ...]

    @property
    def name(self) -> str:
        retry = f".retry-{self.attempt}" if self.attempt else ""
        return f"shard-{self.shard:05d}-of-{self.num_shards:05d}{retry}"


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def remove_temporary_files(outdir: Path) -> None:
    """Leftovers of a killed run (call before any process starts writing)."""
    for path in outdir.glob(".*.tmp"):
        path.unlink()


def sidecar(outdir: Path, parquet: Path) -> dict[str, Any]:
    return json.loads((outdir / parquet.name.replace(".parquet", ".json")).read_text())


def finished_attempts(outdir: Path, num_shards: int) -> dict[int, list[Path]]:
    """Shard -> its complete Parquet files in attempt order."""
    attempts: dict[int, list[tuple[int, Path]]] = {}
    for path in outdir.glob("shard-*.parquet"):
        match = SHARD_NAME.match(path.name)
        if match and int(match[2]) == num_shards:
            attempts.setdefault(int(match[1]), []).append((int(match[3] or 0), path))
    return {shard: [path for _, path in sorted(found)] for shard, found in attempts.items()}


def plan(outdir: Path, num_rows: int, shard_size: int) -> list[WorkUnit]:
    """What is left to do: missing shards, and retries of the rows that failed in a shard's latest attempt."""
    num_shards = max(1, -(-num_rows // shard_size))
    done = finished_attempts(outdir, num_shards)
    units = []
    for shard in range(num_shards):
        if shard not in done:
            indices = tuple(range(shard * shard_size, min((shard + 1) * shard_size, num_rows)))
            units.append(WorkUnit(shard, num_shards, 0, indices))
            continue
        failed = sidecar(outdir, done[shard][-1])["errors"]
        if failed:
            units.append(WorkUnit(shard, num_shards, len(done[shard]), tuple(error["index"] for error in failed)))
    return units


class ShardWriter:
    """Streams one unit's row batches into a temporary Parquet file; `close` publishes it atomically."""

    def __init__(self, outdir: Path, unit: WorkUnit, schema: pa.Schema):
        self.path = outdir / f"{unit.name}.parquet"
        self.temporary = outdir / f".{unit.name}.parquet.tmp"
        self.sidecar = outdir / f"{unit.name}.json"
        self.writer = pq.ParquetWriter(self.temporary, schema)
        self.rows = self.pairs = 0

    def write(self, table: pa.Table, pairs: int) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.pairs += pairs

    def close(self, errors: list[dict[str, Any]]) -> None:
        self.writer.close()
        _write_atomic(self.sidecar, json.dumps({"rows": self.rows, "pairs": self.pairs, "errors": errors}))
        os.replace(self.temporary, self.path)


def check_run(outdir: Path, arguments: dict[str, Any]) -> None:
    """Raise if `OUTDIR/run.json` records different arguments than this run's."""
    recorded = json.loads((outdir / RUN_FILE).read_text())["arguments"]
    differing = [
        f"{name}: {recorded.get(name)!r} there, {arguments.get(name)!r} now"
        for name in sorted(set(recorded) | set(arguments))
        if recorded.get(name) != arguments.get(name)
    ]
    if differing:
        raise ValueError(
            f"{outdir} holds a run with different arguments ({outdir / RUN_FILE}):\n  "
            + "\n  ".join(differing)
            + "\nRerun with the same arguments to resume, or choose another --out."
        )


def record_run(outdir: Path, arguments: dict[str, Any]) -> None:
    """Write `run.json` unless an earlier run did (then `check_run` compares)."""
    if not (outdir / RUN_FILE).exists():
        _write_atomic(outdir / RUN_FILE, json.dumps({"arguments": arguments}, indent=1))


def summarize(outdir: Path, num_rows: int, shard_size: int) -> dict[str, Any]:
    """All complete shards: file names, rows, pairs, and the errors still left (latest attempt of each shard)."""
    num_shards = max(1, -(-num_rows // shard_size))
    shards, rows, pairs, errors = [], 0, 0, []
    for _, paths in sorted(finished_attempts(outdir, num_shards).items()):
        for path in paths:
            info = sidecar(outdir, path)
            shards.append(path.name)
            rows += info["rows"]
            pairs += info["pairs"]
        errors += sidecar(outdir, paths[-1])["errors"]
    return {"shards": shards, "rows": rows, "pairs": pairs, "errors": errors}


def write_errors(outdir: Path, errors: list[dict[str, Any]]) -> None:
    """`errors.jsonl`: one `{"id", "index", "reason"}` per row still unreadable; removed when none is."""
    path = outdir / ERRORS_FILE
    if errors:
        _write_atomic(path, "".join(json.dumps(error) + "\n" for error in errors))
    elif path.exists():
        path.unlink()


def write_manifest(outdir: Path, manifest: dict[str, Any]) -> None:
    _write_atomic(outdir / MANIFEST_FILE, json.dumps(manifest, indent=1))
