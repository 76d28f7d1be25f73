"""Decoding one video to RGB on an otherwise idle machine, three ways (rounds interleaved, medians):
- PyAV's default: FFmpeg's decoder threads, and conversion threads started for every frame;
- `lary.frames.decode_video`'s default (notebooks, the demo, the app): FFmpeg's decoder threads, the conversion on
  the calling thread;
- `lary extract`'s workers (one core each): decoding and conversion on the calling thread.

Writes 480x640, 720x1280 and 1080x1920 H.264 videos (yuv420p) of a textured scene panning across the frame; prints
frames/s and each way's ratio to PyAV's default.

    python benchmarks/bench_decode_threads.py [--frames 120] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from lary.frames import AUTO_THREADS, decode_video
from lary.synthetic import write_video

SIZES = ((480, 640), (720, 1280), (1080, 1920))


def panning_video(path: Path, height: int, width: int, frames: int) -> Path:
    scene = np.random.default_rng(0).integers(0, 256, (height // 8, width // 4, 3), dtype=np.uint8)
    scene = scene.repeat(8, 0).repeat(8, 1)  # height x 2 width
    clip = (np.ascontiguousarray(scene[:, 4 * t : 4 * t + width]) for t in range(frames))
    return write_video(clip, path, fps=30, pix_fmt="yuv420p")


def pyav_default(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


VARIANTS = {
    "PyAV's default": pyav_default,
    "decode_video default": lambda path: sum(1 for _ in decode_video(path, threads=AUTO_THREADS)),
    "extract workers": lambda path: sum(1 for _ in decode_video(path, threads=1)),
}


def frames_per_second(path: Path, decode) -> float:
    start = time.perf_counter()
    count = decode(path)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for height, width in SIZES:
            path = panning_video(Path(scratch) / f"{height}x{width}.mp4", height, width, min(args.frames, width // 4))
            results: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, decode in VARIANTS.items():
                    results[name].append(frames_per_second(path, decode))
            medians = {name: statistics.median(values) for name, values in results.items()}
            base = medians["PyAV's default"]
            line = ", ".join(f"{name} {value:.0f} ({value / base:.2f}x)" for name, value in medians.items())
            print(f"{width}x{height} H.264, frames/s: {line}")


if __name__ == "__main__":
    main()
