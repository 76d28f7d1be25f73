"""Peak memory of `lary evaluate` against the size of the features it trains on (synthetic extract outputs).

For each size, writes a `lary extract`-style output (Parquet shards + manifest.json) whose train split holds
`--gib` GiB of float32 features (`--tokens x --dim` per row; validation holds a tenth as many rows), runs
`lary evaluate` on it as a subprocess with a tiny probe for one epoch (the feature cache is built in that run),
and reports its peak RSS (ru_maxrss of the child). Reading features per batch keeps it flat as the features grow;
the previous in-memory loader needed at least the features' size on top.

    python benchmarks/bench_probe_memory.py --gib 0.25 1 4 [--tokens 64 --dim 256] [--task regression]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WRITE_ROWS = 256  # rows per Parquet row group, like `lary extract`'s per-batch writes
STRIDE, DOF, CLASSES = 2, 3, 4


def write_split(outdir: Path, split: str, rows: int, tokens: int, dim: int, seed: int) -> None:
    """Random features, labels and actions in 256-row row groups, never more than one group in memory."""
    outdir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    name = f"{split}-00000-of-00001.parquet"
    writer = None
    for start in range(0, rows, WRITE_ROWS):
        n = min(WRITE_ROWS, rows - start)
        values = pa.array(rng.standard_normal(n * tokens * dim, dtype=np.float32))
        per_token = pa.ListArray.from_arrays(pa.array(np.arange(0, n * tokens * dim + 1, dim, dtype=np.int32)), values)
        features = pa.ListArray.from_arrays(pa.array(np.arange(0, n * tokens + 1, tokens, dtype=np.int32)), per_token)
        actions = rng.standard_normal((n, STRIDE, DOF)).astype(np.float32).tolist()
        table = pa.table({"id": [f"{split}{i:08d}" for i in range(start, start + n)], "features": features,
                          "label": rng.integers(0, CLASSES, n), "action": actions})
        writer = writer or pq.ParquetWriter(outdir / name, table.schema)
        writer.write_table(table)
    writer.close()
    manifest = {"model": "synthetic-encoder", "model_revision": None, "dataset": "synthetic", "config": "bench",
                "split": split, "rows": rows, "shards": [name], "feature_columns": ["features"]}
    (outdir / "manifest.json").write_text(json.dumps(manifest))


def run_one(gib: float, tokens: int, dim: int, task: str) -> dict[str, float]:
    rows = max(1, int(gib * 2**30 / (4 * tokens * dim)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_split(root / "train", "train", rows, tokens, dim, 0)
        write_split(root / "validation", "validation", max(1, rows // 10), tokens, dim, 1)
        probe = (["--hidden-dim", "16", "--pooler-depth", "1", "--attention-heads", "1", "--lr", "1e-3"]
                 if task == "classification" else ["--hidden-dim", "16", "--lr", "1e-3"])
        command = [sys.executable, "-m", "lary", "evaluate", "--train", str(root / "train"), "--validation",
                   str(root / "validation"), "--task", task, "--out", str(root / "results"), "--epochs", "1",
                   "--cpu", "--cache-dir", str(root / "cache"), *probe]
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - start
    feature_gib = 1.1 * rows * 4 * tokens * dim / 2**30  # train + validation
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rows": rows, "feature_gib": feature_gib, "seconds": seconds, "peak_rss_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, nargs="+", default=[0.1, 0.4], help="GiB of train features per run.")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--task", choices=["classification", "regression"], default="regression")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.gib[0], args.tokens, args.dim, args.task)))
        return
    print("| train rows | features (GiB, train + val) | evaluate seconds | peak RSS (MiB) |\n|---|---|---|---|")
    for gib in args.gib:
        command = [sys.executable, __file__, "--one", "--gib", str(gib), "--tokens", str(args.tokens),
                   "--dim", str(args.dim), "--task", args.task]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(f"| {result['rows']} | {result['feature_gib']:.2f} | {result['seconds']:.0f} | {result['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
