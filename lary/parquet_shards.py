"""Parquet shards written atomically: the one writer of `lary prepare` and `lary extract`.

A shard is written under a hidden temporary name and renamed into place when complete, after its JSON sidecar (if
any): the file exists exactly when it is whole, so a killed run leaves nothing partial that a rerun would keep.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: Path, text: str) -> None:
    """Write a small text file under a temporary name, then rename it into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


class ParquetShard:
    """One Parquet file of `schema`, streamed table by table into `.NAME.tmp` and published by `publish`."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.temporary = path.with_name(f".{path.name}.tmp")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.temporary, self.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def publish(self, sidecar: dict[str, Any] | None = None) -> Path:
        """Close the file (an empty shard has the schema and no rows), write the sidecar, rename into place."""
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.temporary, self.schema)
        self.writer.close()
        if sidecar is not None:
            write_atomic(sidecar_path(self.path), json.dumps(sidecar))
        os.replace(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.temporary.unlink(missing_ok=True)
