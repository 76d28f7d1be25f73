"""Output shards of `lary extract`: atomic writes, sidecars, retries, and the run record.

Shard `i` of `k` is written as `shard-0000i-of-0000k.parquet`, beside a sidecar `shard-0000i-of-0000k.json` (`rows`,
`pairs`, and the `errors` of what could not be read), atomically (`lary.parquet_shards`): a shard is complete exactly
when its Parquet file exists, so a killed run leaves nothing partial behind that a rerun would keep. A rerun first
checks the finished files (`drop_damaged`: a file truncated or emptied since, whose footer no longer reads or whose
row count differs from its sidecar, is removed and redone), then skips complete shards and retries what failed in
each shard's latest attempt: what it reads goes to `shard-0000i-of-0000k.retry-R.parquet` (+ sidecar); when a retry
reads nothing new, no file is added and the latest sidecar is updated in place.

`run.json` records what a rerun must repeat (`check_run`): the resolved inputs, the model and the options that change
rows, never paths into the output folder, so the folder can be moved and resumed there. It also marks the folder as
ours: a run writes only into a new or empty folder, or one whose `run.json` `lary extract` wrote (`check_folder`), and
every sidecar names its run (`run_id`), so a shard file of another run found in the folder is never taken for done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lary.errors import LaryError
from lary.parquet_shards import ParquetShard, sidecar_path, write_atomic

RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
ERRORS_FILE = "errors.jsonl"
SHARD_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})(?:\.retry-(\d+))?\.parquet$")
RUN_KEYS = {"inputs", "model", "options"}  # the top-level keys of our run.json (see `lary.extract.command.run_record`)
# the temporary files of our writers (`lary.parquet_shards.temporary_path`), and the lock: nothing else is removed
OWN_TEMPORARY = re.compile(
    r"^\.(?:shard-\d{5}-of-\d{5}(?:\.retry-\d+)?\.(?:parquet|json)|run\.json|plan\.json|manifest\.json|errors\.jsonl)"
    r"\.\d+\.tmp$"
)


def shard_name(shard: int, num_shards: int, attempt: int = 0) -> str:
    retry = f".retry-{attempt}" if attempt else ""
    return f"shard-{shard:05d}-of-{num_shards:05d}{retry}"


def remove_temporary_files(outdir: Path) -> None:
    """Leftovers of a killed run, our writers' temporary files only (call before any process starts writing)."""
    for path in outdir.glob(".*.tmp"):
        if OWN_TEMPORARY.match(path.name):
            path.unlink()


def check_folder(outdir: Path) -> None:
    """Refuse an `--out` that is neither new, empty, nor a `lary extract` folder (one whose `run.json` we wrote, or
    holding only our lock and temporary files: a run killed before it recorded itself), before anything is written
    there: its files are the user's, never to be overwritten, removed or taken for finished work."""
    if not outdir.is_dir() or read_run(outdir) is not None:  # a file there is refused when the folder is made
        return
    theirs = sorted(name for name in os.listdir(outdir) if name != ".lock" and not OWN_TEMPORARY.match(name))
    if theirs:
        shown = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3 else "")
        raise LaryError(f"--out {outdir} holds files lary extract did not write ({shown}) and no {RUN_FILE} of a "
                        "lary extract run: choose a new or empty folder")


def sidecar(outdir: Path, parquet: Path) -> dict[str, Any]:
    """The sidecar of a finished shard file."""
    return json.loads(sidecar_path(outdir / parquet.name).read_text())


def finished_attempts(outdir: Path, num_shards: int) -> dict[int, list[Path]]:
    """Shard -> its complete Parquet files in attempt order."""
    attempts: dict[int, list[tuple[int, Path]]] = {}
    for path in outdir.glob("shard-*.parquet"):
        match = SHARD_NAME.match(path.name)
        if match and int(match[2]) == num_shards:
            attempts.setdefault(int(match[1]), []).append((int(match[3] or 0), path))
    return {shard: [path for _, path in sorted(found)] for shard, found in attempts.items()}


class ShardWriter:
    """One attempt of a shard: its row batches (with their pair counts) streamed into a `ParquetShard` (row groups of
    1,000 rows, not one per batch); `close` publishes it with its sidecar (which names the run, `run`), or, for a
    retry that read nothing, only updates the errors of the attempt before it (`previous`)."""

    def __init__(self, outdir: Path, name: str, schema: pa.Schema, run: str, previous: Path | None = None):
        self.outdir, self.run, self.previous = outdir, run, previous
        self.shard = ParquetShard(outdir / f"{name}.parquet", schema)
        self.pairs = 0

    def write(self, table: pa.Table, pairs: int) -> None:
        self.shard.write(table)
        self.pairs += pairs

    def close(self, errors: list[dict[str, Any]]) -> None:
        if self.shard.rows == 0 and self.previous is not None:
            self.shard.discard()
            write_atomic(sidecar_path(self.previous), json.dumps({**sidecar(self.outdir, self.previous), "errors": errors}))
            return
        self.shard.publish({"rows": self.shard.rows, "pairs": self.pairs, "errors": errors, "run": self.run})


def _damage(outdir: Path, parquet: Path) -> str | None:
    """Why a finished shard file cannot be trusted, or None when its footer reads and holds its sidecar's rows."""
    try:
        rows = pq.read_metadata(parquet).num_rows
    except (OSError, pa.ArrowException) as error:
        return f"its Parquet footer does not read ({error})"
    try:
        recorded = sidecar(outdir, parquet)["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its sidecar {sidecar_path(parquet).name} is missing or unreadable"
    return None if recorded == rows else f"it holds {rows} rows, its sidecar says {recorded}"


def check_shards(outdir: Path, num_shards: int, run: str) -> None:
    """Refuse finished shard files that another run wrote (their sidecars name another `run_id`, or none): copied or
    left in the folder, they are not this run's work, and are neither counted nor overwritten."""
    for paths in finished_attempts(outdir, num_shards).values():
        for path in paths:
            try:
                theirs = sidecar(outdir, path).get("run")
            except (OSError, ValueError, AttributeError):
                continue  # a damaged sidecar: `drop_damaged` redoes the shard
            if theirs != run:
                raise LaryError(f"--out {outdir}: {path.name} was not written by the run {RUN_FILE} records (its sidecar "
                                f"names run {theirs!r}, this folder's is {run!r}): move it away, or choose another --out")


def drop_damaged(outdir: Path, num_shards: int) -> list[str]:
    """Remove every finished shard file that cannot be trusted (see `_damage`), with the later attempts of its shard
    (they retried what it had failed), so that the rerun redoes them; returns a line per removed file."""
    dropped = []
    for paths in finished_attempts(outdir, num_shards).values():
        reason = None
        for path in paths:
            reason = "it retried a damaged attempt" if reason else _damage(outdir, path)
            if reason:
                dropped.append(f"{path.name}: {reason}")
                path.unlink()
                sidecar_path(path).unlink(missing_ok=True)
    return dropped


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for name, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _difference(name: str, there: Any, now: Any) -> str:
    if isinstance(there, list) and isinstance(now, list):
        first = next((index for index, (a, b) in enumerate(zip(there, now)) if a != b), min(len(there), len(now)))
        shown = [repr(values[first]) if first < len(values) else "nothing" for values in (there, now)]
        return f"{name}: {len(there)} there, {len(now)} now; item {first + 1}: {shown[0]} there, {shown[1]} now"
    return f"{name}: {there!r} there, {now!r} now"


def check_run(outdir: Path, record: dict[str, Any]) -> None:
    """Raise if `OUTDIR/run.json` records a different run than `record` (both from `lary.extract.command.run_record`:
    resolved inputs, the model's identity, the options that change rows)."""
    recorded = read_run(outdir)
    if "inputs" not in recorded:
        raise LaryError(
            f"{outdir} holds a run of an earlier lary, whose {RUN_FILE} records the text of its arguments: finish it "
            "with that version, or choose another --out"
        )
    there, now = _flatten(recorded), _flatten(record)
    differing = [_difference(name, there.get(name), now.get(name)) for name in sorted(set(there) | set(now))
                 if there.get(name) != now.get(name)]
    if differing:
        raise LaryError(
            f"{outdir} holds a run of other inputs, model or options ({outdir / RUN_FILE}):\n  "
            + "\n  ".join(differing)
            + "\nRerun with the same inputs to resume, or choose another --out."
        )


def read_run(outdir: Path) -> dict[str, Any] | None:
    """`OUTDIR/run.json` when `lary extract` wrote it (an object with our keys, or an earlier lary's `arguments`);
    None when there is none; a file of that name that is not ours, or damaged, is refused naming it."""
    path = outdir / RUN_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LaryError(f"--out {outdir}: {RUN_FILE} cannot be read ({error}): it is damaged, or not ours; choose "
                        "another --out") from None
    if not isinstance(record, dict) or not (RUN_KEYS <= set(record) or set(record) == {"arguments"}):
        raise LaryError(f"--out {outdir}: {RUN_FILE} is not the record of a lary extract run: choose a new or empty "
                        "folder")
    return record


def run_id(record: dict[str, Any]) -> str:
    """A run's identity in its shards' sidecars: the digest of its `run.json` record."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def record_run(outdir: Path, record: dict[str, Any]) -> str:
    """Write `run.json` unless an earlier run did (then `check_run` compares); returns the run's `run_id`."""
    if read_run(outdir) is None:
        write_atomic(outdir / RUN_FILE, json.dumps(record, indent=1))
    return run_id(read_run(outdir))  # as read back, as every later run reads it


def summarize(outdir: Path, num_shards: int) -> dict[str, Any]:
    """All complete shards: file names, rows, pairs, and the errors still left (latest attempt of each shard)."""
    names, rows, pairs, errors = [], 0, 0, []
    for _, paths in sorted(finished_attempts(outdir, num_shards).items()):
        for path in paths:
            info = sidecar(outdir, path)
            names.append(path.name)
            rows += info["rows"]
            pairs += info["pairs"]
        errors += sidecar(outdir, paths[-1])["errors"]
    return {"shards": names, "rows": rows, "pairs": pairs, "errors": errors}


def write_errors(outdir: Path, errors: list[dict[str, Any]]) -> None:
    """`errors.jsonl`: one record per sample (or pair range) still unreadable; removed when none is."""
    path = outdir / ERRORS_FILE
    if errors:
        write_atomic(path, "".join(json.dumps(error) + "\n" for error in errors))
    elif path.exists():
        path.unlink()


def read_manifest(outdir: str | Path) -> dict[str, Any]:
    """The `manifest.json` of a `lary extract` output folder."""
    path = Path(outdir) / MANIFEST_FILE
    if not path.is_file():
        raise LaryError(f"{path} not found: pass a folder written by `lary extract`")
    return json.loads(path.read_text())


def write_manifest(outdir: Path, manifest: dict[str, Any]) -> None:
    write_atomic(outdir / MANIFEST_FILE, json.dumps(manifest, indent=1))
