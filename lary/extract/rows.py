"""The rows `lary extract` writes, as Arrow: column types, and tables from computed values.

Pair layout (videos, image folders, LeRobot episodes; also what `lary app` offers for download): one row per frame
pair `(t, t + stride)` with `id`, `frame_index` (t), `next_frame_index`, `timestamp`, `next_timestamp` (seconds; null
where unknown), the representation (`action_indices` (n), `latent_actions` (n x D), `continuous_latent_actions`
(n x q), or an encoder's `features`) and pass-through columns (labels, LeRobot targets).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

PAIR_COLUMNS: dict[str, pa.DataType] = {
    "frame_index": pa.int64(),
    "next_frame_index": pa.int64(),
    "timestamp": pa.float64(),
    "next_timestamp": pa.float64(),
}


def list_type(value_type: pa.DataType, depth: int) -> pa.DataType:
    for _ in range(depth):
        value_type = pa.list_(value_type)
    return value_type


def latent_action_types(pair_axis: bool = False) -> dict[str, pa.DataType]:
    """The latent action columns; `pair_axis`: one row holds all pairs of a clip (row layout)."""
    extra = int(pair_axis)
    return {
        "action_indices": list_type(pa.int64(), 1 + extra),
        "latent_actions": list_type(pa.float32(), 2 + extra),
        "continuous_latent_actions": list_type(pa.float32(), 2 + extra),
    }


def pair_schema(representation: dict[str, pa.DataType], extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    return pa.schema([("id", pa.string()), *PAIR_COLUMNS.items(), *representation.items(), *(extra or {}).items()])


def innermost(data_type: pa.DataType) -> pa.DataType:
    while pa.types.is_list(data_type):
        data_type = data_type.value_type
    return data_type


def dense_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A dense (rows, a, b, ...) array -> a nested `list<...>` array with one entry per row."""
    nested = pa.array(values.reshape(-1), type=value_type)
    for size in reversed(values.shape[1:]):
        nested = pa.ListArray.from_arrays(pa.array(np.arange(0, len(nested) + 1, size, dtype=np.int32)), nested)
    return nested


def ragged_array(rows: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    """Per-row arrays with equal trailing shapes (the first axis may vary) -> a nested `list<...>` array."""
    offsets = np.concatenate([[0], np.cumsum([row.shape[0] for row in rows])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), dense_array(np.concatenate(rows), value_type))


def table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    """A table of `schema` from per-row values: numpy arrays with a leading row axis, or lists (for list columns,
    of per-row arrays)."""
    arrays = {}
    for field in schema:
        value = columns[field.name]
        if not pa.types.is_list(field.type):
            arrays[field.name] = pa.array(value, field.type, from_pandas=True)
        elif isinstance(value, np.ndarray):
            arrays[field.name] = dense_array(value, innermost(field.type))
        else:
            arrays[field.name] = ragged_array([np.asarray(row) for row in value], innermost(field.type))
    return pa.Table.from_pydict(arrays, schema=schema)
