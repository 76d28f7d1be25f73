"""Does `lary extract` overlap decoding with the model? Loader-only, model-only and end-to-end throughput on one core.

Writes 480x640 H.264 videos, picks a LAPA-DINOv3 shape (random weights) whose model time per pair is close to the
decode+resize time per frame on one CPU core, then measures, with rounds interleaved (loader, model, extract, ...):
- loader-only: the `lary extract` DataLoader with 1 worker (decode with PyAV, resize to 224 with the processor),
  frames/s, no model;
- decode-only: the same loader doing what its workers do when the model is on a GPU (decode; the uint8 frames go to
  the GPU, which resizes them), frames/s: how many cores keep a GPU busy;
- model-only: the extractor on the run's prepared frames (the very batches end to end computes, at `lary extract`'s
  default batch size), pairs/s, `torch.set_num_threads(1)`;
- end-to-end: `lary extract` (1 worker, 1 torch thread) over the same videos, pairs/s of its extraction loop.
- model-only while decoding: model-only again while another process decodes on the other core. Two busy cores run
  slower than one (shared caches and memory bandwidth; on a shared VM, the host's other tenants), so this is the
  most end to end can reach on the machine; the line before last compares with it.
Each video of F frames gives F - 1 pairs, so frames/s and pairs/s compare directly. The last line is
`pipeline overlap: X.XX` = end-to-end / min(loader-only, model-only): 1.0 is perfect overlap, about 0.5 is a loop
that decodes and computes in turn.

    python benchmarks/bench_pipeline.py [--videos 6] [--frames 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import multiprocessing.synchronize
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lary import LapaDinov3Config, LapaDinov3Model
from lary.configs.extract import ExtractConfig
from lary.extract import plan
from lary.extract.command import make_plan, make_source
from lary.extract.loader import Batch, UnitStream
from lary.extract.models import LatentActionExtractor
from lary.extract.sources import Source
from lary.synthetic import write_video

BATCH = ExtractConfig.__dataclass_fields__["batch_size"].default  # `lary extract`'s default


def write_videos(folder: Path, count: int, frames: int) -> Path:
    """480x640 H.264 videos (yuv420p, as cameras record) of a textured scene panning across the frame, wrapping
    around (streamed to the encoder)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for index in range(count):
        scene = rng.integers(0, 256, (60, 160, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)  # 480 x 1280
        scene = np.concatenate([scene, scene[:, :640]], axis=1)
        clip = (np.ascontiguousarray(scene[:, (2 * t) % 1280 :][:, :640]) for t in range(frames))
        write_video(clip, folder / f"video_{index}.mp4", fps=30, pix_fmt="yuv420p")
    return folder


SHAPES = [(width, depth) for width in (32, 64, 96, 128) for depth in (1, 2, 3, 4, 6)]  # candidate (width, backbone depth)


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


def config_for(model: Path, videos: Path, out: Path) -> ExtractConfig:
    return ExtractConfig(model=str(model), videos=[str(videos / "*.mp4")], out=out, batch_size=BATCH, cpu=True,
                         num_workers=1, threads=1, shard_size=10**6)


def prepared_batches(model: Path, videos: Path, scratch: Path) -> tuple[Source, list[plan.WorkUnit], LatentActionExtractor]:
    """The source, the units as `lary extract` plans them, and an extractor."""
    config = config_for(model, videos, scratch / "plan")
    config.out.mkdir(parents=True)
    source = make_source(config)
    extractor = LatentActionExtractor(LapaDinov3Model.from_pretrained(model).eval(), str(model), BATCH)
    units = plan.remaining(config.out, make_plan(config.out, source, config, 1, None).shards)
    return source, units, extractor


def decoded_batches(source: Source, units: list[plan.WorkUnit], extractor: LatentActionExtractor,
                    limit: int | None = None) -> list[Batch]:
    """The run's prepared batches, as `lary extract` cuts them (the first `limit` of them)."""
    stream = iter(UnitStream(source, units, extractor, BATCH, 1))
    batches = [item for item in itertools.islice(stream, limit) if isinstance(item, Batch)]
    stream.close()  # closes the video it was reading
    return batches


def loader_frames_per_second(source: Source, units: list[plan.WorkUnit], extractor: LatentActionExtractor) -> float:
    """Frames decoded and prepared per second by one DataLoader worker (a video's last frame is not counted, so that
    frames/s compares with pairs/s)."""
    stream = UnitStream(source, units, extractor, BATCH, 1)
    loader = DataLoader(stream, batch_size=None, num_workers=1, collate_fn=lambda item: item)
    start, frames = time.perf_counter(), 0
    for item in loader:
        frames += item.pairs if isinstance(item, Batch) else 0
    return frames / (time.perf_counter() - start)


def model_pairs_per_second(batches: list[Batch], extractor: LatentActionExtractor, pairs: int) -> float:
    """Pairs per second of the model alone over `pairs` pairs, cycling through `batches`."""
    start, done = time.perf_counter(), 0
    for batch in itertools.cycle(batches):
        if done >= pairs:
            break
        extractor.compute(batch.pieces)
        done += batch.pairs
    return done / (time.perf_counter() - start)


def decode_until(stop: multiprocessing.synchronize.Event, source: Source, units: list[plan.WorkUnit],
                 extractor: LatentActionExtractor) -> None:
    """Decode and resize, as a DataLoader worker does, until `stop` is set (in a process of its own)."""
    torch.set_num_threads(1)
    while not stop.is_set():
        for _ in itertools.takewhile(lambda _: not stop.is_set(), UnitStream(source, units, extractor, BATCH, 1)):
            pass


def model_pairs_per_second_while_decoding(
    batches: list[Batch], extractor: LatentActionExtractor, pairs: int, source: Source, units: list[plan.WorkUnit]
) -> float:
    """Model-only pairs/s while another process decodes on the other core: the most that end to end can reach on
    this machine, where two busy cores run slower than one (shared caches and memory bandwidth, the host's other
    tenants)."""
    stop = multiprocessing.get_context("fork").Event()
    decoder = multiprocessing.get_context("fork").Process(target=decode_until, args=(stop, source, units, extractor))
    decoder.start()
    try:
        time.sleep(0.5)  # the decoder is busy before the clock starts
        return model_pairs_per_second(batches, extractor, pairs)
    finally:
        stop.set()
        decoder.join()


def end_to_end_pairs_per_second(model: Path, videos: Path, out: Path) -> float:
    """`lary extract` as a user runs it (a fresh process, 1 worker, 1 torch thread): the pairs/s it reports for its
    extraction loop (model loading not included)."""
    command = [sys.executable, "-m", "lary", "extract", "--model", str(model), "--videos", str(videos / "*.mp4"),
               "--out", str(out), "--batch-size", str(BATCH), "--cpu", "--num-workers", "1", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(re.findall(r"([\d.]+) pairs/s;", done.stderr)[-1])


MEASURES = ("loader", "decode", "model", "extract", "model while decoding")


def measure(name: str, model: Path, videos: Path, scratch: Path) -> float:
    """One measurement, in the process that runs it (`--measure`): each runs in a fresh process, as `lary extract`
    does, so that none inherits another's memory (a forked decoding worker is slowed by a parent that decoded)."""
    if name == "extract":
        return end_to_end_pairs_per_second(model, videos, scratch / "out")
    torch.set_num_threads(1)
    source, units, extractor = prepared_batches(model, videos, scratch)
    if name == "loader":
        return loader_frames_per_second(source, units, extractor)
    if name == "decode":
        extractor.resize_on_device = True  # what the workers do for a model on a GPU: frames leave at their size
        return loader_frames_per_second(source, units, extractor)
    batches = decoded_batches(source, units, extractor)  # the very batches end to end computes
    pairs = sum(unit.rows for unit in units)
    if name == "model":
        return model_pairs_per_second(batches, extractor, pairs)
    return model_pairs_per_second_while_decoding(batches, extractor, pairs, source, units)


def measure_in_new_process(name: str, model: Path, videos: Path, scratch: Path) -> float:
    command = [sys.executable, __file__, "--measure", name, "--model", str(model), "--video-dir", str(videos),
               "--scratch", str(scratch)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--video-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(measure(args.measure, args.model, args.video_dir, args.scratch))
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        videos = write_videos(scratch / "videos", args.videos, args.frames)

        # the model shape: backbone depth whose pairs/s is closest to the loader's frames/s
        source, units, extractor = prepared_batches(save_model(scratch / "probe", 64, 1), videos, scratch / "p")
        loader_rate = loader_frames_per_second(source, units, extractor)
        batches = decoded_batches(source, units, extractor, limit=12)
        pairs = sum(unit.rows for unit in units)
        best = None
        for width, depth in SHAPES:
            folder = save_model(scratch / f"m{width}x{depth}", width, depth)
            rate = model_pairs_per_second(batches, prepared_batches(folder, videos, scratch / f"c{width}x{depth}")[2], pairs // 4)
            print(f"calibration: width {width}, depth {depth}: model {rate:.1f} pairs/s (loader {loader_rate:.1f} frames/s)")
            if best is None or abs(np.log(rate / loader_rate)) < abs(np.log(best[1] / loader_rate)):
                best = ((width, depth), rate, folder)
        model_dir = best[2]

        results: dict[str, list[float]] = {name: [] for name in MEASURES}
        for round_ in range(args.rounds):
            for name in MEASURES:
                results[name].append(measure_in_new_process(name, model_dir, videos, scratch / f"{name}{round_}"))
            print(f"round {round_ + 1}: " + ", ".join(f"{name} {values[-1]:.1f}" for name, values in results.items()))

    loader, decode, model, end_to_end, loaded = (statistics.median(results[name]) for name in MEASURES)
    print(f"videos: {args.videos} x {args.frames} frames, 480x640 H.264; model width {best[0][0]}, backbone depth {best[0][1]}; "
          f"batch {BATCH}, 1 worker, 1 torch thread; medians of {args.rounds} interleaved rounds")
    print(f"decode+resize (1 worker = 1 core): {loader:.1f} frames/s per core")
    print(f"decode only, the resize left to a GPU (1 worker = 1 core): {decode:.1f} frames/s per core")
    print(f"loader-only: {loader:.1f} frames/s")
    print(f"model-only: {model:.1f} pairs/s")
    print(f"end-to-end lary extract: {end_to_end:.1f} pairs/s")
    print(f"model-only while another process decodes: {loaded:.1f} pairs/s "
          f"(two busy cores: {loaded / model:.2f}x the model's speed alone; end to end / this: {end_to_end / loaded:.2f})")
    print(f"pipeline overlap: {end_to_end / min(loader, model):.2f}")


if __name__ == "__main__":
    main()
