"""`lary extract --labels FILE`: your own labels for `--videos` / `--images`, written beside each pair's latent action.

Two forms, CSV or Parquet, keyed by the ids `lary extract` writes (paths relative to the inputs' common folder):
- a class per clip: columns `id` and `label` (names or integers). Every pair of the clip gets the label; the
  manifest lists the class names (sorted), so `lary evaluate --task classification` reads them.
- an action row per frame: columns `id`, `frame_index` and the action, as one list column `action` or as several
  numeric columns (in file order). The pair `(t, t + K)` gets the rows `t .. t + K - 1` (K x dof, the commands that
  lead from frame t to frame t + K, as LARY's action chunks), for `lary evaluate --task regression`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lary.errors import LaryError


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise LaryError(f"--labels {path} does not exist")
    try:
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as error:  # pandas raises many types for malformed files
        raise LaryError(f"--labels {path} cannot be read as {'Parquet' if path.suffix == '.parquet' else 'CSV'}: {error}") from None


class Labels:
    """The labels of one file; `columns(id, frames, stride)` gives the label columns of a clip's pairs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        table = _read_table(self.path)
        if "id" not in table.columns:
            raise LaryError(f"--labels {self.path} has no `id` column (columns: {list(table.columns)})")
        table["id"] = table["id"].astype(str)
        if "frame_index" in table.columns:
            self._read_actions(table)
        elif "label" in table.columns:
            self._read_classes(table)
        else:
            raise LaryError(
                f"--labels {self.path} needs `id,label` (a class per clip) or `id,frame_index,...` (an action row per "
                f"frame); its columns: {list(table.columns)}"
            )

    def _read_classes(self, table: pd.DataFrame) -> None:
        self.kind = "class"
        duplicated = table["id"][table["id"].duplicated()]
        if len(duplicated):
            raise LaryError(f"--labels {self.path}: id {duplicated.iloc[0]!r} has more than one label")
        values = table["label"]
        if pd.api.types.is_integer_dtype(values):
            self.names = [str(i) for i in range(int(values.max()) + 1)]
            self.by_id = {key: int(value) for key, value in zip(table["id"], values)}
        else:
            self.names = sorted(set(values.astype(str)))
            self.by_id = {key: self.names.index(str(value)) for key, value in zip(table["id"], values)}
        self.types = {"label": pa.int64()}

    def _read_actions(self, table: pd.DataFrame) -> None:
        self.kind = "action"
        self.names = None
        if "action" in table.columns:
            rows = np.stack([np.asarray(value, dtype=np.float32) for value in table["action"]])
        else:
            numeric = [c for c in table.columns if c not in ("id", "frame_index") and pd.api.types.is_numeric_dtype(table[c])]
            if not numeric:
                raise LaryError(f"--labels {self.path}: no action columns beside `id` and `frame_index`")
            rows = table[numeric].to_numpy(np.float32)
        self.by_id = {}
        for key, group in table.assign(_row=np.arange(len(table))).groupby("id", sort=False):
            frames = group["frame_index"].to_numpy()
            order = np.argsort(frames)
            frames = frames[order]
            if len(np.unique(frames)) != len(frames):
                raise LaryError(f"--labels {self.path}: id {key!r} has two rows for one frame_index")
            self.by_id[key] = (frames, rows[group["_row"].to_numpy()[order]])
        self.types = {"action": pa.list_(pa.list_(pa.float32()))}

    def check_ids(self, ids: list[str]) -> None:
        """Every sample must have labels: name the first that has none."""
        missing = [sample_id for sample_id in ids if sample_id not in self.by_id]
        if missing:
            raise LaryError(
                f"--labels {self.path} has no labels for {len(missing)} of {len(ids)} input(s), first {missing[0]!r}; "
                f"its ids look like {next(iter(self.by_id), None)!r}"
            )

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
