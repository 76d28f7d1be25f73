"""`lary extract --labels FILE`: your own labels for `--videos` / `--images`, written beside each pair's latent action.

Two forms, CSV or Parquet, keyed by the ids `lary extract` writes (paths relative to the inputs' common folder):
- a class per clip: columns `id` and `label`, integers (class `i` of the names `0 .. max`, fewer than
  `MAX_INTEGER_CLASSES`) or names (sorted into the class names). Every pair of the clip gets the label; the manifest
  lists the class names, so `lary evaluate --task classification` reads them.
- an action row per frame: columns `id`, `frame_index` and the action, as one list column `action` or as every other
  column (in file order), all numbers. The pair `(t, t + K)` gets the rows `t .. t + K - 1` (K x dof, the commands that
  lead from frame t to frame t + K, as LARY's action chunks), for `lary evaluate --task regression`.

The whole file is checked when it is read, before the model loads: a blank cell, a value that is not a number where
actions are, a class that is not a non-negative integer or a name, or an id that matches no input is refused, naming
the line (CSV) or row (Parquet) and the column. CSV cells are read as written (`007` stays `007`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lary.errors import LaryError

# Integer classes name the classes 0 .. max: beyond this, a typo (1000000000) would build a billion names.
MAX_INTEGER_CLASSES = 10_000
MAX_FRAME_INDEX = 2**53  # frame indices are read as float64 first: beyond this they are no longer exact


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise LaryError(f"--labels {path} does not exist")
    if not path.is_file():
        raise LaryError(f"--labels {path} is not a file")
    parquet = path.suffix.lower() == ".parquet"
    try:  # a CSV's cells as written: "" is blank, "007" stays a string, "NA" a name
        return pd.read_parquet(path) if parquet else pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as error:  # pandas raises many types for malformed files
        raise LaryError(f"--labels {path} cannot be read as {'Parquet' if parquet else 'CSV'}: {error}") from None


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def _integer(value: Any) -> int | None:
    """`value` as an integer (an int, an integral float, or the text of an int), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


class Labels:
    """The labels of one file; `columns(id, frames, stride)` gives the label columns of a clip's pairs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.csv = self.path.suffix.lower() != ".parquet"
        table = _read_table(self.path)
        if table.empty:
            raise LaryError(f"--labels {self.path} has no rows (columns: {list(table.columns)})")
        if "id" not in table.columns:
            raise LaryError(f"--labels {self.path} has no `id` column (columns: {list(table.columns)})")
        self._check_filled(table, "id")
        table["id"] = table["id"].astype(str)
        self.first_row = {key: row for row, key in reversed(list(enumerate(table["id"])))}
        if "frame_index" in table.columns:
            self._read_actions(table)
        elif "label" in table.columns:
            self._read_classes(table)
        else:
            raise LaryError(
                f"--labels {self.path} needs `id,label` (a class per clip) or `id,frame_index,...` (an action row per "
                f"frame); its columns: {list(table.columns)}"
            )

    def _where(self, row: int, column: str | None = None) -> str:
        """The file, and the cell as an editor shows it: a CSV's line (its header is line 1) or a Parquet row."""
        place = f"line {row + 2}" if self.csv else f"row {row}"
        return f"--labels {self.path}, {place}" + (f", column {column!r}" if column else "")

    def _check_filled(self, table: pd.DataFrame, column: str) -> None:
        for row, value in enumerate(table[column]):
            if _blank(value):
                raise LaryError(f"{self._where(row, column)}: blank cell")

    def _read_classes(self, table: pd.DataFrame) -> None:
        self.kind = "class"
        duplicated = np.flatnonzero(table["id"].duplicated().to_numpy())
        if len(duplicated):
            row = int(duplicated[0])
            raise LaryError(f"{self._where(row)}: id {table['id'].iloc[row]!r} has more than one label")
        self._check_filled(table, "label")
        values = list(table["label"])
        integers = [_integer(value) for value in values]
        if all(value is not None for value in integers):
            for row, value in enumerate(integers):
                if not 0 <= value < MAX_INTEGER_CLASSES:
                    raise LaryError(
                        f"{self._where(row, 'label')}: class {value} is not an integer in 0 .. "
                        f"{MAX_INTEGER_CLASSES - 1} (integer classes name the classes 0 .. the largest); use names "
                        f"for other labels"
                    )
            self.names = [str(i) for i in range(max(integers) + 1)]
            self.by_id = dict(zip(table["id"], integers))
        else:
            for row, value in enumerate(values):
                if not isinstance(value, str) and _integer(value) is None:
                    raise LaryError(f"{self._where(row, 'label')}: {value!r} is neither an integer class nor a name")
            names = [str(value) for value in values]
            self.names = sorted(set(names))
            index = {name: position for position, name in enumerate(self.names)}
            self.by_id = {key: index[name] for key, name in zip(table["id"], names)}
        self.types = {"label": pa.int64()}

    def _numbers(self, table: pd.DataFrame, column: str, what: str, integral: bool = False) -> np.ndarray:
        """A column as float64, every cell a finite number (a non-negative integer below 2**53, exact in float64 and
        int64, if `integral`), else refused."""
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if integral:
            bad |= (values < 0) | (values != np.floor(values)) | (values >= MAX_FRAME_INDEX)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = table[column].iloc[row]
            problem = "blank cell" if _blank(value) else f"{value!r} is not {what}"
            raise LaryError(f"{self._where(row, column)}: {problem}")
        return values

    def _action_lists(self, table: pd.DataFrame) -> np.ndarray:
        """The `action` column's lists as (rows, dof) float32: every cell a list of finite numbers of one length."""
        rows = []
        for row, value in enumerate(table["action"]):
            if _blank(value):
                raise LaryError(f"{self._where(row, 'action')}: blank cell")
            try:
                action = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                action = None
            if action is None or action.ndim != 1 or not np.isfinite(action).all():
                hint = " (a list column needs Parquet; in a CSV give one column per dimension)" if self.csv else ""
                raise LaryError(f"{self._where(row, 'action')}: {value!r} is not a list of numbers{hint}")
            if rows and len(action) != len(rows[0]):
                raise LaryError(f"{self._where(row, 'action')}: {len(action)} numbers; the first row has {len(rows[0])}")
            rows.append(action)
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def _read_actions(self, table: pd.DataFrame) -> None:
        self.kind = "action"
        self.names = None
        frame_index = self._numbers(table, "frame_index", f"a frame index (an integer in 0 .. {MAX_FRAME_INDEX - 1})",
                                    integral=True).astype(np.int64)
        if "action" in table.columns:
            rows = self._action_lists(table)
        else:
            dims = [c for c in table.columns if c not in ("id", "frame_index")]
            if not dims:
                raise LaryError(f"--labels {self.path}: no action columns beside `id` and `frame_index`")
            rows = np.stack([self._numbers(table, c, "a number (every column besides `id` and `frame_index` is an "
                                           "action dimension)") for c in dims], axis=1).astype(np.float32)
        self.by_id = {}
        for key, positions in table.groupby("id", sort=False).indices.items():
            order = positions[np.argsort(frame_index[positions], kind="stable")]
            frames = frame_index[order]
            repeated = np.flatnonzero(frames[1:] == frames[:-1])
            if len(repeated):
                row = int(order[repeated[0] + 1])
                raise LaryError(f"{self._where(row, 'frame_index')}: id {key!r} has two rows for frame_index {frames[repeated[0]]}")
            self.by_id[key] = (frames, rows[order])
        self.types = {"action": pa.list_(pa.list_(pa.float32()))}

    def check_ids(self, ids: list[str], complete: bool = True) -> None:
        """Every sample must have labels: name the first that has none. With `complete` (all inputs, no `--limit`),
        every id of the file must also be an input's: an id that matches none is a typo or a clip left out (its class
        would be a name without clips)."""
        missing = [sample_id for sample_id in ids if sample_id not in self.by_id]
        if missing:
            raise LaryError(
                f"--labels {self.path} has no labels for {len(missing)} of {len(ids)} input(s), first {missing[0]!r}; "
                f"its ids look like {next(iter(self.by_id), None)!r}"
            )
        if complete:
            unknown = sorted(set(self.by_id) - set(ids), key=self.first_row.__getitem__)
            if unknown and ids:
                more = f" ({len(unknown) - 1} more ids do not either)" if len(unknown) > 1 else ""
                raise LaryError(f"{self._where(self.first_row[unknown[0]], 'id')}: {unknown[0]!r} matches no input"
                                f"{more}; the inputs' ids look like {ids[0]!r}")

    def check_frames(self, sample_id: str, num_frames: int, stride: int) -> None:
        """Action labels must cover frames `0 .. num_frames - 2`, the first frames' chunks of every pair."""
        if self.kind != "action" or num_frames <= stride:
            return
        frames = self.by_id[sample_id][0]
        missing = np.setdiff1d(np.arange(num_frames - 1), frames)
        if len(missing):
            raise LaryError(
                f"--labels {self.path}: id {sample_id!r} has {num_frames} frames but no action row for frame_index "
                f"{missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )

    def columns(self, sample_id: str, first_frames: np.ndarray, stride: int) -> dict[str, list]:
        """Label columns of the pairs `(t, t + stride)` for each `t` in `first_frames`."""
        if self.kind == "class":
            return {"label": [self.by_id[sample_id]] * len(first_frames)}
        frames, rows = self.by_id[sample_id]
        positions = np.searchsorted(frames, first_frames)
        actions = []
        for t, position in zip(first_frames, positions):
            chunk = frames[position : position + stride]
            if len(chunk) < stride or chunk[0] != t or chunk[-1] != t + stride - 1:
                raise LaryError(f"--labels {self.path}: id {sample_id!r} lacks action rows for frames {t}..{t + stride - 1}")
            actions.append(rows[position : position + stride])
        return {"action": actions}
