"""The label health report of a `lary extract` folder: how much the latent action codes vary.

Computed at the end of every run from the written shards (so it covers every process and every resumed run), by
streaming their `action_indices` column in record batches: memory holds one batch and a count per distinct code
sequence seen (at most min(pairs, codebook_size ** positions)).

The report, per code position: the codebook entries used, the share of the most common code and the entropy of the
codes in bits (at most log2(codebook_size)); over whole code sequences: how many distinct ones, their entropy in bits,
and the share of the most common one. Two collapses (`collapses`) are named in its `warnings` (see docs/extract.md):

- a position whose most common code covers at least `STUCK_POSITION_SHARE` of the pairs carries (almost) nothing;
- the codes hardly vary when one sequence covers at least `COLLAPSED_SEQUENCE_SHARE` of the pairs, or the sequences'
  entropy is under `COLLAPSED_SEQUENCE_BITS` bit (half the pairs or more get the same label).

Below `MIN_PAIRS` pairs, shares are too coarse to judge: the report is written without warnings.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

STUCK_POSITION_SHARE = 0.95
COLLAPSED_SEQUENCE_SHARE = 0.5
COLLAPSED_SEQUENCE_BITS = 1.0
MIN_PAIRS = 32
READ_ROWS = 65536  # rows per record batch read from a shard


def _code_rows(column: pa.Array) -> np.ndarray:
    """(pairs, positions) int64 codes of an `action_indices` batch: one list per pair, or per clip a list of pairs."""
    while pa.types.is_list(column.type.value_type):
        column = column.flatten()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), -1)


def code_rows(paths: Iterable[Path]) -> Iterable[np.ndarray]:
    """The codes of every pair in the shard files `paths`, a record batch at a time."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=["action_indices"]):
            yield _code_rows(batch.column(0))


def folder_report(outdir: Path, shard_names: Iterable[str], codebook_size: int) -> dict[str, Any] | None:
    """The report of the finished shard files `shard_names` of the extract folder `outdir`."""
    return report(code_rows(outdir / name for name in shard_names), codebook_size)


def _bits(counts: np.ndarray) -> float:
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log2(shares)).sum()) + 0.0  # + 0.0: no -0.0 for one code


def report(batches: Iterable[np.ndarray], codebook_size: int) -> dict[str, Any] | None:
    """The label health of the codes in `batches` ((pairs, positions) arrays); None when there are no pairs."""
    position_counts: np.ndarray | None = None
    sequences: Counter[tuple[int, ...]] = Counter()
    for codes in batches:
        if not len(codes):
            continue
        if position_counts is None:
            position_counts = np.zeros((codes.shape[1], codebook_size), dtype=np.int64)
        for position in range(codes.shape[1]):
            position_counts[position] += np.bincount(codes[:, position], minlength=codebook_size)
        unique, counts = np.unique(codes, axis=0, return_counts=True)
        sequences.update(dict(zip(map(tuple, unique.tolist()), counts.tolist())))
    if position_counts is None:
        return None
    pairs = int(position_counts[0].sum())
    positions = [
        {"codes_used": int((counts > 0).sum()), "top_code": int(counts.argmax()),
         "top_code_share": round(float(counts.max() / pairs), 4), "entropy_bits": round(_bits(counts), 3)}
        for counts in position_counts
    ]
    top, top_count = sequences.most_common(1)[0]
    health = {
        "pairs": pairs,
        "codebook_size": codebook_size,
        "max_position_bits": round(math.log2(codebook_size), 3),
        "positions": positions,
        "sequences": {"distinct": len(sequences), "entropy_bits": round(_bits(np.array(list(sequences.values()))), 3),
                      "top": list(top), "top_share": round(top_count / pairs, 4)},
    }
    health["warnings"] = collapses(health)
    return health


def collapses(health: dict[str, Any]) -> list[str]:
    """The collapses the report shows (none below `MIN_PAIRS` pairs), a line each."""
    if health["pairs"] < MIN_PAIRS:
        return []
    lines = []
    sequences = health["sequences"]
    if sequences["top_share"] >= COLLAPSED_SEQUENCE_SHARE or sequences["entropy_bits"] < COLLAPSED_SEQUENCE_BITS:
        lines.append(
            f"label collapse: the codes hardly vary: {sequences['top_share']:.0%} of the {health['pairs']} pairs have "
            f"the code sequence {sequences['top']}, the sequences' entropy is {sequences['entropy_bits']:.2f} bits"
        )
    stuck = [index for index, position in enumerate(health["positions"])
             if position["top_code_share"] >= STUCK_POSITION_SHARE]
    if stuck:
        named = ", ".join(f"{index} (code {health['positions'][index]['top_code']}, "
                          f"{health['positions'][index]['top_code_share']:.0%})" for index in stuck)
        lines.append(
            f"position collapse: {len(stuck)} of {len(health['positions'])} code positions keep one code for at least "
            f"{STUCK_POSITION_SHARE:.0%} of the pairs and carry almost nothing: position {named}"
        )
    return lines


def summary_line(health: dict[str, Any]) -> str:
    """The report in one line for the extract summary."""
    positions = health["positions"]
    used = "/".join(str(position["codes_used"]) for position in positions)
    bits = "/".join(f"{position['entropy_bits']:.2f}" for position in positions)
    sequences = health["sequences"]
    judged = "" if health["pairs"] >= MIN_PAIRS else f" (under {MIN_PAIRS} pairs: not judged for collapse)"
    return (
        f"label health: codes used per position {used} of {health['codebook_size']}, entropy {bits} bits (at most "
        f"{health['max_position_bits']:g}); {sequences['distinct']} distinct code sequences over {health['pairs']} "
        f"pairs ({sequences['entropy_bits']:.2f} bits), the most common on {sequences['top_share']:.0%} of them{judged}"
    )
