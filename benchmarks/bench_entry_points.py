"""Pairs per second of every way into the model, on the same video in one process, as ratios to `lary extract`.

The ways in, each on every pair (t, t + stride) of one video, computed by `lary.runtime` or, for the handler, by the
Hub files alone (the goal: each at least 0.9 of `lary extract`):
  extract       `lary extract --videos` (in this process; its decoding workers beside it): the pairs/s it reports,
                which time its loop (decode, compute, write), not loading the model or planning
  label_video   `LatentActionLabeler.label_video` (decodes in this process, then computes)
  label_pairs   `LatentActionLabeler.label_pairs(frames[:-k], frames[k:])` of the decoded frames (the labelling only)
  app           the app's `Analyzer.analyse` (decode, resize, compute)
  handler       the Inference Endpoints handler, the model folder's `handler.py` loaded as the toolkit loads it (the
                module from the folder, the folder first on `sys.path`, `EndpointHandler(folder)`), called with
                `{"inputs": <the video as base64>, "parameters": {"stride": k}}` (decode, resize, compute, the answer's
                objects), with the torch threads its constructor chose
Models are loaded once, before the rounds; each call starts from the process's torch threads at the start (extract
and the handler set theirs for their process). The ways take turns, one round of each after another, so a busy spell
of the machine lands on every way; each way's median over the rounds is reported. Codes are checked equal to extract's.

    python benchmarks/bench_entry_points.py [--video clip.mp4] [--frames 120] [--rounds 3] [--tiny] [--json r.json]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib.util
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from lary import LapaDinov3Config, LapaDinov3Model, LatentActionLabeler
from lary.app.analysis import Analyzer
from lary.app.limits import Limits
from lary.cli import main as lary_main
from lary.frames import read_video
from lary.hub import default_model, export
from lary.synthetic import write_video

VITS16 = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12, "num_attention_heads": 6,
          "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
REPORTED = re.compile(r"extracted \d+ rows \((\d+) pairs\) in ([\d.]+) s")


class Reported(logging.Handler):
    """`lary extract`'s summary line: the pairs and seconds of its loop."""

    def __init__(self):
        super().__init__()
        self.pairs_per_second: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if match := REPORTED.search(record.getMessage()):
            self.pairs_per_second = int(match.group(1)) / float(match.group(2))


def moving_square_video(path: Path, frames: int, height: int, width: int) -> Path:
    """A square crossing a gradient: frames that differ, so codes vary."""
    background = np.linspace(0, 160, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)

    def frame(t: int) -> np.ndarray:
        image = background.copy()
        x = (7 * t) % (width - height // 4)
        image[height // 3 : height // 3 + height // 4, x : x + height // 4] = (230, 60, 40)
        return image

    return write_video((frame(t) for t in range(frames)), path, fps=25)


def endpoint_handler(folder: Path) -> tuple[Any, int]:
    """`EndpointHandler(folder)` of the folder's `handler.py`, imported as huggingface-inference-toolkit imports it, and
    the torch threads its constructor set (the handler sets them for its process; other ways here keep the caller's)."""
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", folder / "handler.py")
    sys.path.insert(0, str(folder))
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler.EndpointHandler"] = module
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    handler = module.EndpointHandler(str(folder))
    handler_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    return handler, handler_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="default: a generated moving square, --frames of 480x640")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (every way once per round)")
    parser.add_argument("--tiny", action="store_true", help="the embedded tiny model instead of a ViT-S/16-shaped one")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    initial_threads = torch.get_num_threads()
    scratch = Path(tempfile.mkdtemp(prefix="bench_entry_points_"))
    video = args.video or moving_square_video(scratch / "clip.mp4", args.frames, 480, 640)
    if args.tiny:
        model = default_model()
    else:
        torch.manual_seed(0)
        model = export(LapaDinov3Model(LapaDinov3Config(backbone_config=VITS16, heads=6, dim_head=64)).eval(),
                       scratch / "model")  # with handler.py, as every folder lary writes
    frames = read_video(video)
    pairs, k = len(frames) - args.stride, args.stride
    os.environ.setdefault("LARY_ENDPOINT_MAX_FRAMES", str(len(frames)))  # the handler's default limit is 64 frames

    labeler = LatentActionLabeler.from_pretrained(model, device="cpu", batch_size=args.batch_size)
    analyzer = Analyzer(model, Limits(max_frames=len(frames)), device="cpu")
    analyzer.load()
    handler, handler_threads = endpoint_handler(Path(model))
    request = {"inputs": base64.b64encode(video.read_bytes()).decode(), "parameters": {"stride": k}}
    reported = Reported()
    logging.getLogger("lary.extract.command").addHandler(reported)
    logging.getLogger("lary.extract.command").setLevel(logging.INFO)
    runs = iter(range(10**6))

    def endpoint() -> np.ndarray:
        torch.set_num_threads(handler_threads)  # as in the endpoint's own process
        return np.array([pair["action_indices"] for pair in handler(request)])

    def extract() -> np.ndarray:
        out = scratch / f"out{next(runs)}"
        code = lary_main(["extract", "--model", str(model), "--videos", str(video), "--stride", str(k), "--batch-size",
                          str(args.batch_size), "--out", str(out), "--cpu"])
        assert code == 0, f"lary extract exited {code}"
        table = pq.read_table(sorted(out.glob("*.parquet"))).sort_by("frame_index")
        return np.array(table.column("action_indices").to_pylist())

    ways = {
        "extract": extract,
        "label_video": lambda: labeler.label_video(video, stride=k)["action_indices"],
        "label_pairs": lambda: labeler.label_pairs(frames[:-k], frames[k:])["action_indices"],
        "app": lambda: analyzer.analyse(video, stride=k).action_indices,
        "handler": endpoint,
    }

    def run(way) -> np.ndarray:
        """One call of a way, from the process's torch threads at the start (`lary extract` and the handler set
        theirs for the whole process, as in their own processes)."""
        try:
            return way()
        finally:
            torch.set_num_threads(initial_threads)

    codes = {name: run(way) for name, way in ways.items()}  # warm-up, and the codes to compare
    same = {name: bool(np.array_equal(value, codes["extract"])) for name, value in codes.items()}
    assert all(same.values()), f"other codes than lary extract's: {[name for name, equal in same.items() if not equal]}"
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            run(way)
            seconds = time.perf_counter() - start
            rates[name].append(reported.pairs_per_second if name == "extract" else pairs / seconds)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"torch {torch.__version__}, {initial_threads} threads at the start (the handler's: {handler_threads}); "
          f"{'tiny' if args.tiny else 'ViT-S/16-shaped'} model; {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}, stride {k}, batch {args.batch_size}; "
          f"median of {args.rounds} interleaved rounds; the same codes everywhere")
    for name, value in medians.items():
        print(f"  {name:12s} {value:8.2f} pairs/s  ({min(rates[name]):.2f}..{max(rates[name]):.2f})  "
              f"x{value / medians['extract']:.2f} of extract")
    if args.json:
        results = {"date": datetime.date.today().isoformat(), "tiny": args.tiny, "torch": torch.__version__,
                   "cpus": os.cpu_count(), "load_average": os.getloadavg(), "threads": initial_threads,
                   "handler_threads": handler_threads, "frames": len(frames), "size": list(frames.shape[1:3]),
                   "stride": k, "batch_size": args.batch_size, "rounds": args.rounds, "same_codes": same,
                   "pairs_per_s": {name: {"median": value, "rounds": rates[name], "of_extract": value / medians["extract"]}
                                   for name, value in medians.items()}}
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
