"""The rows `lary extract` writes, as Arrow: column types, a run's schema (`output_schema`), and tables from computed
values (`batch_table`: the rows of one computed batch).

Pair layout (videos, image folders, LeRobot episodes; also what `lary app` offers for download): one row per frame
pair `(t, t + stride)` with `id`, `frame_index` (t), `next_frame_index`, `timestamp`, `next_timestamp` (seconds; null
where unknown), the representation (`action_indices` (n), `latent_actions` (n x D), `continuous_latent_actions`
(n x q), or an encoder's `features`) and pass-through columns (labels, LeRobot targets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from lary.extract.labels import Labels
    from lary.extract.loader import Batch
    from lary.extract.models import Extractor
    from lary.extract.sources import Source

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


def output_schema(source: Source, extractor: Extractor, labels: Labels | None) -> pa.Schema:
    """The columns `lary extract` writes for `source` (its layout and pass-through columns), `extractor` and `labels`."""
    if source.layout == "row":
        return pa.schema([("id", pa.string()), *extractor.columns(source.kind == "clip").items(), *source.passthrough_types.items()])
    return pair_schema(extractor.columns(False), {**source.passthrough_types, **(labels.types if labels else {})})


def batch_table(batch: Batch, outputs: list[dict[str, np.ndarray]], source: Source, schema: pa.Schema,
                labels: Labels | None) -> pa.Table:
    """The rows of one computed batch: one per piece (row layout) or one per pair (pair layout)."""
    columns: dict[str, Any] = {}
    if source.layout == "row":
        columns["id"] = [source.sample_id(piece.sample) for piece in batch.pieces]
        for piece in batch.pieces:
            for name in source.passthrough_types:
                columns.setdefault(name, []).append(piece.passthrough[name])
        for name in outputs[0]:  # a pair row holds its one pair; a clip row all its pairs
            columns[name] = [out[name] if source.kind == "clip" else out[name][0] for out in outputs]
        return table(columns, schema)
    for piece in batch.pieces:
        first, second = piece.frame_indices[: piece.pairs], piece.frame_indices[piece.stride :]
        sample_id = source.sample_id(piece.sample)
        values = {
            "id": [sample_id] * piece.pairs,
            "frame_index": first,
            "next_frame_index": second,
            "timestamp": piece.times[: piece.pairs],
            "next_timestamp": piece.times[piece.stride :],
            **source.pair_columns(piece.sample, first, piece.stride),
            **(labels.columns(sample_id, first, piece.stride) if labels is not None else {}),
        }
        for name, value in values.items():
            columns.setdefault(name, []).extend(value)
    for name in outputs[0]:
        columns[name] = np.concatenate([out[name] for out in outputs])
    return table(columns, schema)
