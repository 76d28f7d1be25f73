"""Peak memory of `lary extract` on one long video does not grow with its length.

Writes 320x240 H.264 videos (30 fps) of 1,000, 3,000 and 9,000 frames (streamed: never held in memory), runs
`lary extract --videos` on each in a fresh process with a small LAPA-DINOv3 (the shared golden model's shape:
DINOv3 width 64, 2 layers, 224 px; its weights when `../shared` is present), samples the memory of the process and
its decoding workers together every 50 ms (proportional set size, so pages the forked workers share with the main
process count once), and prints the peak and pairs/s per video. The last line is
`peak RSS 9k/1k frames: X.XXx` (goal <= 1.2: memory independent of length).

    python benchmarks/bench_long_video.py [--lengths 1000 3000 9000] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import DINOv3ViTConfig

from lary import LapaDinov3Config, LapaDinov3Model
from lary.synthetic import write_video

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "lapa_dinov3_tiny"


def save_model(folder: Path) -> str:
    """The golden checkpoint converted (weights of the reference), or a random model of its shape."""
    if (GOLDEN / "laq_dinov3.pt").is_file():
        from lary.checkpoint import convert_checkpoint

        backbone = json.loads((GOLDEN / "backbone_config.json").read_text())
        backbone.pop("transformers_version", None)
        model = convert_checkpoint(GOLDEN / "laq_dinov3.pt", json.loads((GOLDEN / "laq_config.json").read_text()),
                                   DINOv3ViTConfig(**backbone))
        model.save_pretrained(folder)
        return "the golden checkpoint"
    torch.manual_seed(0)
    backbone = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
    LapaDinov3Model(LapaDinov3Config(backbone_config=backbone, quant_dim=8, spatial_depth=2, temporal_depth=2,
                                     decoder_depth=2, dim_head=16, heads=4)).eval().save_pretrained(folder)
    return "random weights (../shared absent)"


def panning_frames(count: int):
    """A textured scene panning one pixel per frame, wrapping around: `count` frames of 240 x 320."""
    scene = np.random.default_rng(0).integers(0, 256, (30, 80, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # 240 x 640
    for t in range(count):
        shift = t % 320
        yield np.ascontiguousarray(scene[:, shift : shift + 320])


def run(model: Path, video: Path, out: Path, workers: int) -> tuple[float, float]:
    """(peak memory in GiB of the process tree, pairs/s the run reports)."""
    command = [sys.executable, "-m", "lary", "extract", "--model", str(model), "--videos", str(video), "--out", str(out),
               "--cpu", "--num-workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss for p in tree if p.is_running()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        time.sleep(0.05)
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise RuntimeError(f"lary extract failed:\n{stderr[-3000:]}")
    rate = float(re.search(r"([\d.]+) pairs/s", stderr)[1])
    return peak / 2**30, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 3000, 9000])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        weights = save_model(scratch / "model")
        print(f"model: golden shape (DINOv3 width 64, 2 layers, 224 px), {weights}; {args.workers} decoding worker(s)")
        peaks = {}
        for length in args.lengths:
            video = write_video(panning_frames(length), scratch / f"video_{length}.mp4", fps=30)
            peak, rate = run(scratch / "model", video, scratch / f"out_{length}", args.workers)
            peaks[length] = peak
            print(f"{length:>6} frames: peak RSS {peak:.2f} GiB, {rate:.1f} pairs/s")
    first, last = args.lengths[0], args.lengths[-1]
    print(f"peak RSS {last / 1000:g}k/{first / 1000:g}k frames: {peaks[last] / peaks[first]:.2f}x")


if __name__ == "__main__":
    main()
