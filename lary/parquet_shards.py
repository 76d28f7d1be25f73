"""Parquet shards written atomically: the one writer of `lary prepare` and `lary extract`.

A shard is written under a hidden temporary name of its own process (`.NAME.PID.tmp`: a process that outlives its run
never writes into the file of the next one) and renamed into place when complete, after its JSON sidecar (if any): the
file exists exactly when it is whole, so a killed run leaves nothing partial that a rerun would keep. A full disk
raises `NoSpaceError` naming the file.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lary.errors import NoSpaceError


@contextmanager
def no_space_names(path: Path, advice: str = "free space and rerun") -> Iterator[None]:
    """Turn a full disk's `OSError` (ENOSPC, from Python or pyarrow) into a `NoSpaceError` naming `path` (or the file
    an inner `NoSpaceError` names) and what to do."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise NoSpaceError(error.path if isinstance(error, NoSpaceError) else path, advice) from error


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, text: str) -> None:
    """Write a small text file under a temporary name, then rename it into place (a write that fails, a full disk
    included, leaves neither)."""
    temporary = temporary_path(path)
    try:
        with no_space_names(path):
            temporary.write_text(text)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


ROW_GROUP_ROWS = 1000  # rows per Parquet row group by default (`datasets`' writer batch), not one group per write
ROW_GROUP_BYTES = 64 * 2**20  # fewer rows when they are large (encoder features): the Hub's viewer reads <= 100 MB


class ParquetShard:
    """One Parquet file of `schema`, streamed table by table into `.NAME.PID.tmp` in row groups of `row_group_rows` rows
    (fewer when they pass `ROW_GROUP_BYTES`), and published by `publish`."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        self.path, self.schema, self.row_group_rows = path, schema, row_group_rows
        self.temporary = temporary_path(path)
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []  # the next row group's tables
        self.pending_rows = self.pending_bytes = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        if self.pending_rows >= self.row_group_rows or self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        with no_space_names(self.path):
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.temporary, self.schema)
            if self.pending:
                self.writer.write_table(pa.concat_tables(self.pending))
                self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def publish(self, sidecar: dict[str, Any] | None = None) -> Path:
        """Close the file (an empty shard has the schema and no rows), write the sidecar, rename into place."""
        self._flush()
        with no_space_names(self.path):
            self.writer.close()
        if sidecar is not None:
            write_atomic(sidecar_path(self.path), json.dumps(sidecar))
        os.replace(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.temporary.unlink(missing_ok=True)
