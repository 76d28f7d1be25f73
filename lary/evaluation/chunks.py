"""Action chunks of one length for the regression probe, checked before any work.

`lary extract --stride-seconds S` on videos at different frame rates gives pairs of different frame distances k
(round(S x fps): 13 frames at 25 fps, 15 at 29.97 fps for S = 0.5), and so per-frame action chunks of k steps each.
The probe predicts one `[steps, dof]` chunk per row, so the lengths must agree. Either

- extract again with a fixed `--stride k`: every chunk is k steps, but the pairs then span different times at
  different rates (k / fps seconds), so one latent action stands for more or less motion from video to video; or
- `--action-chunk resample`: every pair spans S seconds as asked, and each chunk is resampled to the train rows' most
  common length n: step j of the n is the action at j / n of the chunk's span, read linearly between the recorded
  steps (the chunk's k steps are the commands at the k frames from t; the last one is held past its frame). A chunk
  of n steps is left as it is. This keeps what the latent actions describe, (t, t + S seconds), and what the probe
  predicts, the commands over those S seconds.

We offer the second, since the time span is what `--stride-seconds` was asked for; a fixed `--stride` is the other
way out, named in the error. The default refuses, before the features are cached, naming the ids and their lengths:
interpolated targets are a choice to make knowingly (a gripper's open/close command becomes fractional in between).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lary.errors import LaryError
from lary.extract.shards import read_manifest

SHOWN_IDS = 3  # ids named per chunk length in the error


def chunk_lengths(outdir: Path, target: str) -> Counter[tuple[int, str]]:
    """Rows per (chunk length, id) of `target` in an extract folder, read from the Parquet shards' list lengths alone
    (no feature, no value). Empty when the column is missing or is not a chunk (a list of per-step lists): the probe's
    own loading reports that."""
    lengths: Counter[tuple[int, str]] = Counter()
    for shard in sorted(Path(outdir).glob("*.parquet")):
        schema = pq.read_schema(shard)
        if target not in schema.names or "id" not in schema.names:
            return Counter()
        kind = schema.field(target).type
        if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_list(kind.value_type):
            return Counter()
        table = pq.read_table(shard, columns=["id", target])
        steps = pc.list_value_length(table.column(target)).to_numpy(zero_copy_only=False)
        lengths.update(zip(steps.tolist(), table.column("id").to_pylist()))
    return lengths


def _describe(folder: Path, lengths: Counter[tuple[int, str]]) -> str:
    fps = read_manifest(folder).get("fps") or {}
    by_length: dict[int, list[str]] = {}
    for steps, sample_id in sorted(lengths):
        by_length.setdefault(steps, []).append(sample_id)
    parts = []
    for steps, ids in by_length.items():
        named = ", ".join(f"{i!r}" + (f" ({fps[i]:g} fps)" if i in fps else "") for i in ids[:SHOWN_IDS])
        more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
        parts.append(f"{steps} steps in {named}{more}")
    return f"{folder}: " + "; ".join(parts)


def chunk_steps(folders: list[Path], target: str, resample: bool) -> int | None:
    """The one chunk length of the train rows (`folders[0]`; the others must have it too), or with `resample` the
    train rows' most common length (the shorter on a tie) to resample every chunk to. None when no folder holds
    chunks. Different lengths without `resample` are refused, naming the ids and their lengths."""
    counts = [chunk_lengths(folder, target) for folder in folders]
    if not counts[0]:
        return None
    rows = Counter()
    for steps, _ in counts[0].elements():
        rows[steps] += 1
    steps = min(rows, key=lambda length: (-rows[length], length))
    if resample or all({length for length, _ in count} <= {steps} for count in counts):
        return steps
    stride_seconds = read_manifest(folders[0]).get("stride_seconds")
    why = (f" (--stride-seconds {stride_seconds:g} is a different number of frames at each frame rate)"
           if stride_seconds is not None else "")
    raise LaryError(
        f"the {target!r} chunks differ in length{why}: " + " | ".join(_describe(folder, count)
                                                                      for folder, count in zip(folders, counts) if count)
        + f"; the probe needs one length: pass --action-chunk resample (each chunk read at {steps} evenly spaced times "
        "over its span, the train rows' most common length), or extract again with a fixed --stride"
    )


def resample_chunk(chunk: np.ndarray, steps: int) -> np.ndarray:
    """A `[k, dof]` chunk as `[steps, dof]`: row j is the action at time j x k / steps (in the chunk's frames), linear
    between recorded rows, the last row held after its frame. k == steps returns the chunk itself."""
    k = len(chunk)
    if k == steps:
        return chunk
    times = np.arange(steps) * k / steps
    return np.stack([np.interp(times, np.arange(k), column) for column in chunk.T], axis=1).astype(chunk.dtype)
