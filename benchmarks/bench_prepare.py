"""Throughput and peak memory of `lary prepare` for growing row counts (synthetic CALVIN-layout trees).

    python benchmarks/bench_prepare.py --rows 1000 10000 --image-size 64 --num-proc 1

Each size runs in a fresh process, so its peak RSS (ru_maxrss) is its own; a streaming `prepare` keeps it
flat as rows grow.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run_one(rows: int, image_size: int, num_proc: int) -> dict[str, float]:
    from lary_tree import make_lary_tree

    from lary.data.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        data_dir, metadata_dir = make_lary_tree(tmp, None, {"calvin": rows}, image_size=image_size)
        start = time.perf_counter()
        prepare(data_dir, metadata_dir, Path(tmp) / "out", configs=["calvin"], num_proc=num_proc)
        seconds = time.perf_counter() - start
    total_rows = 2 * rows  # train and validation
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": total_rows, "seconds": seconds, "rows_per_s": total_rows / seconds, "peak_rss_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000], help="CSV rows per split.")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.rows[0], args.image_size, args.num_proc)))
        return
    print("| rows | seconds | rows/s | peak RSS (MiB) |\n|---|---|---|---|")
    for rows in args.rows:
        command = [sys.executable, __file__, "--one", "--rows", str(rows), "--image-size", str(args.image_size),
                   "--num-proc", str(args.num_proc)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(f"| {result['rows']} | {result['seconds']:.1f} | {result['rows_per_s']:.0f} | {result['peak_rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
