"""Does `lary extract` overlap decoding with the model? Loader-only, model-only and end-to-end throughput on one core.

Writes 480x640 H.264 videos, picks a LAPA-DINOv3 shape (random weights) whose model time per pair is close to the
decode+resize time per frame on one CPU core, then measures, with rounds interleaved (loader, model, extract, ...):
- loader-only: the `lary extract` DataLoader with 1 worker (decode with PyAV, resize to 224 with the processor),
  frames/s, no model;
- model-only: the extractor on already prepared frames, pairs/s, `torch.set_num_threads(1)`;
- end-to-end: `lary extract` (1 worker, 1 torch thread) over the same videos, pairs/s of its extraction loop.
Each video of F frames gives F - 1 pairs, so frames/s and pairs/s compare directly. The last line is
`pipeline overlap: X.XX` = end-to-end / min(loader-only, model-only): 1.0 is perfect overlap, about 0.5 is a loop
that decodes and computes in turn.

    python benchmarks/bench_pipeline.py [--videos 4] [--frames 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lary import LapaDinov3Config, LapaDinov3Model
from lary.configs.extract import ExtractConfig
from lary.extract import plan
from lary.extract.command import extract, load_plan, make_plan, make_source
from lary.extract.loader import Batch, UnitStream
from lary.extract.models import LatentActionExtractor
from lary.extract.sources import Source
from lary.synthetic import write_video

BATCH = 16


def write_videos(folder: Path, count: int, frames: int) -> Path:
    """480x640 H.264 videos of a textured scene panning across the frame."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for index in range(count):
        scene = rng.integers(0, 256, (60, 100, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # 480 x 800
        clip = np.stack([scene[:, 2 * t : 2 * t + 640] for t in range(frames)])
        write_video(clip, folder / f"video_{index}.mp4", fps=30)
    return folder


SHAPES = [(width, depth) for width in (64, 128, 192) for depth in (1, 2, 4, 8)]  # candidate (width, backbone depth)


def save_model(folder: Path, width: int, depth: int) -> Path:
    """A DINOv3-shaped backbone of `depth` layers and a one-layer LAQ, both `width` wide (random weights)."""
    torch.manual_seed(0)
    heads = width // 32
    backbone = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": depth,
                "num_attention_heads": heads, "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
    config = LapaDinov3Config(backbone_config=backbone, heads=heads, dim_head=32, spatial_depth=1, temporal_depth=1,
                              decoder_depth=1)
    LapaDinov3Model(config).eval().save_pretrained(folder)
    return folder


def config_for(model: Path, videos: Path, out: Path, workers: int = 1) -> ExtractConfig:
    return ExtractConfig(model=str(model), videos=[str(videos / "*.mp4")], out=out, batch_size=BATCH, cpu=True,
                         num_workers=workers, threads=1, shard_size=10**6)


def prepared_batches(model: Path, videos: Path, scratch: Path) -> tuple[Source, list[plan.WorkUnit], LatentActionExtractor]:
    """The source, the units as `lary extract` plans them, and an extractor."""
    config = config_for(model, videos, scratch / "plan")
    config.out.mkdir(parents=True)
    source = make_source(config)
    extractor = LatentActionExtractor(LapaDinov3Model.from_pretrained(model).eval(), str(model), BATCH)
    make_plan(config.out, source, config, 1, None)
    units = plan.remaining(config.out, load_plan(config.out, config, len(source)))
    return source, units, extractor


def loader_frames_per_second(source: Source, units: list[plan.WorkUnit], extractor: LatentActionExtractor) -> float:
    """Frames decoded and resized per second by one DataLoader worker (a video's last frame is not counted, so that
    frames/s compares with pairs/s)."""
    stream = UnitStream(source, units, extractor, BATCH, 1)
    loader = DataLoader(stream, batch_size=None, num_workers=1, collate_fn=lambda item: item)
    start, frames = time.perf_counter(), 0
    for item in loader:
        frames += item.pairs if isinstance(item, Batch) else 0
    return frames / (time.perf_counter() - start)


def model_pairs_per_second(batches: list[Batch], extractor: LatentActionExtractor) -> float:
    start, pairs = time.perf_counter(), 0
    for batch in batches:
        extractor.compute(batch.pieces)
        pairs += batch.pairs
    return pairs / (time.perf_counter() - start)


class Rate(logging.Handler):
    """Catches the pairs/s that `lary extract` reports for its extraction loop (model loading not included)."""

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"([\d.]+) pairs/s", record.getMessage())
        if match:
            self.rate = float(match[1])


def end_to_end_pairs_per_second(model: Path, videos: Path, out: Path) -> float:
    rate = Rate()
    logger = logging.getLogger("lary.extract.command")
    logger.addHandler(rate)
    logger.setLevel(logging.INFO)
    try:
        assert extract(config_for(model, videos, out)) == 0
    finally:
        logger.removeHandler(rate)
    return rate.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        videos = write_videos(scratch / "videos", args.videos, args.frames)

        # the model shape: backbone depth whose pairs/s is closest to the loader's frames/s
        source, units, extractor = prepared_batches(save_model(scratch / "probe", 64, 1), videos, scratch / "p")
        loader_rate = loader_frames_per_second(source, units, extractor)
        batches = [item for item in UnitStream(source, units, extractor, BATCH, 1) if isinstance(item, Batch)]
        best = None
        for width, depth in SHAPES:
            folder = save_model(scratch / f"m{width}x{depth}", width, depth)
            rate = model_pairs_per_second(batches[:2], prepared_batches(folder, videos, scratch / f"c{width}x{depth}")[2])
            print(f"calibration: width {width}, depth {depth}: model {rate:.1f} pairs/s (loader {loader_rate:.1f} frames/s)")
            if best is None or abs(np.log(rate / loader_rate)) < abs(np.log(best[1] / loader_rate)):
                best = ((width, depth), rate, folder)
        model_dir = best[2]
        _, _, extractor = prepared_batches(model_dir, videos, scratch / "final")

        results: dict[str, list[float]] = {"loader": [], "model": [], "extract": []}
        for round_ in range(args.rounds):
            results["loader"].append(loader_frames_per_second(source, units, extractor))
            results["model"].append(model_pairs_per_second(batches, extractor))
            results["extract"].append(end_to_end_pairs_per_second(model_dir, videos, scratch / f"out{round_}"))
            print(f"round {round_ + 1}: " + ", ".join(f"{name} {values[-1]:.1f}" for name, values in results.items()))

    loader, model, end_to_end = (statistics.median(results[name]) for name in ("loader", "model", "extract"))
    print(f"videos: {args.videos} x {args.frames} frames, 480x640 H.264; model width {best[0][0]}, backbone depth {best[0][1]}; "
          f"1 worker, 1 torch thread; medians of {args.rounds} interleaved rounds")
    print(f"decode+resize (1 worker = 1 core): {loader:.1f} frames/s per core")
    print(f"loader-only: {loader:.1f} frames/s")
    print(f"model-only: {model:.1f} pairs/s")
    print(f"end-to-end lary extract: {end_to_end:.1f} pairs/s")
    print(f"pipeline overlap: {end_to_end / min(loader, model):.2f}")


if __name__ == "__main__":
    main()
