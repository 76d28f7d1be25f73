"""`lary extract` throughput with 1 and 2 CPU processes (accelerate), and the scaling ratio.

Builds a tiny LAPA-DINOv3 (random weights, DINOv3-shaped backbone of `--width`) and a dataset of random frame
pairs, runs the same extraction as one process and as `accelerate launch --multi_gpu --num_processes 2 ... --cpu`
(`--threads 1 --num-workers 0`: one thread per process and decoding inline in both, so the ratio measures process
scaling alone, not threads), checks both outputs are identical, and
prints pairs/s of each and 2-process / 1-process. Model loading and start-up are included in neither figure:
pairs/s is what `lary extract` reports for its extraction loop.

    python benchmarks/bench_extract_scaling.py [--rows 256] [--width 192]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lary import LapaDinov3Config, LapaDinov3Model


def make_inputs(root: Path, rows: int, width: int) -> tuple[Path, Path]:
    torch.manual_seed(0)
    backbone = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": 4,
                "num_attention_heads": width // 64, "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
    config = LapaDinov3Config(backbone_config=backbone, heads=width // 64, dim_head=64, spatial_depth=2,
                              temporal_depth=2, decoder_depth=2)
    LapaDinov3Model(config).eval().save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(rows + 1)]
    features = datasets.Features({"id": datasets.Value("string"), "source_image": datasets.Image(),
                                  "target_image": datasets.Image()})
    pairs = datasets.Dataset.from_dict(
        {"id": [f"{i:06d}" for i in range(rows)], "source_image": frames[:-1], "target_image": frames[1:]},
        features=features,
    )
    pairs.to_parquet(str(root / "pairs" / "data" / "validation-00000-of-00001.parquet"))
    return root / "model", root / "pairs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def extract(launcher: list[str], model: Path, dataset: Path, out: Path, shard_size: int) -> float:
    command = [sys.executable, *launcher, "-m", "lary", "extract", "--model", str(model), "--dataset", str(dataset),
               "--split", "validation", "--out", str(out), "--shard-size", str(shard_size), "--cpu", "--threads", "1",
               "--num-workers", "0"]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return float(re.search(r"([\d.]+) pairs/s", completed.stderr)[1])


def read(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(path) for path in sorted(out.glob("*.parquet"))]).sort_by("id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--width", type=int, default=192, help="Backbone width (a multiple of 64).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, dataset = make_inputs(root, args.rows, args.width)
        shard_size = max(1, args.rows // 8)
        one = extract([], model, dataset, root / "one", shard_size)
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
        two = extract(launch, model, dataset, root / "two", shard_size)
        assert read(root / "two").equals(read(root / "one")), "2 processes wrote different rows than 1"
    print(f"{args.rows} pairs, backbone width {args.width}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"1 process   {one:8.2f} pairs/s")
    print(f"2 processes {two:8.2f} pairs/s")
    print(f"scaling     {two / one:8.2f}x")


if __name__ == "__main__":
    main()
