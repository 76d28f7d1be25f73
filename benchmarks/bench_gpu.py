"""LAPA-DINOv3 on a GPU: model throughput at the released ViT-L shape, `lary extract` end to end, and CUDA parity.

One script for a GPU machine (under 8 minutes on an H100):
1. model-only pairs/s of the released shape (DINOv3 ViT-L/16 + the LAQ, random weights) in bf16 and fp32, pair mode
   (`pixel_values`, each frame through the backbone per pair) and video mode (`pixel_values_videos`, each frame once),
   SDPA attention, eager and `torch.compile`d (bf16); with the FLOPs per pair (counted by `FlopCounterMode`) and the
   fraction of the card's dense bf16 peak that this reaches;
2. `lary extract` end to end on 480x640 H.264 videos it writes (decoding in DataLoader workers, resizing on the GPU),
   bf16, and its ratio to model-only video mode;
3. parity: the golden reference checkpoint's codes on CUDA fp32 vs CPU fp32 (equal), CUDA bf16 code agreement, and
   the GPU resize vs the CPU resize (within one grey level).
With `--tiny` it runs a tiny shape on the CPU in seconds (what the test suite does). Prints one line per
measurement and writes them all to `--json`.

    python benchmarks/bench_gpu.py [--tiny] [--json gpu_results.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import DINOv3ViTConfig

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor
from lary.configs.extract import ExtractConfig
from lary.extract.command import extract

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "lapa_dinov3_tiny"
# dense bf16 tensor-core peaks (FLOP/s) by device name
BF16_PEAKS = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
              "H100": 756e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
TINY_BACKBONE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
TINY_LAQ = dict(quant_dim=8, spatial_depth=1, temporal_depth=1, decoder_depth=1, dim_head=16, heads=4)


def report(results: dict, name: str, value, text: str) -> None:
    results[name] = value
    print(text, flush=True)


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    peak = next((value for key, value in BF16_PEAKS.items() if key in name), None)
    return name, peak


def make_model(tiny: bool, device: torch.device, dtype: torch.dtype) -> LapaDinov3Model:
    torch.manual_seed(0)
    config = LapaDinov3Config(backbone_config=TINY_BACKBONE, **TINY_LAQ) if tiny else LapaDinov3Config()
    config._attn_implementation = "sdpa"
    return LapaDinov3Model(config).eval().to(device, dtype)


def inputs(mode: str, pairs: int, device: torch.device, dtype: torch.dtype, size: int = 224) -> dict:
    """Random pixels in [-1, 1]: `pairs` frame pairs, or one clip of `pairs + 1` frames."""
    frames = (2, 3, size, size) if mode == "pairs" else (pairs + 1, 3, size, size)
    pixels = torch.rand(pairs if mode == "pairs" else 1, *frames, device=device, dtype=dtype) * 2 - 1
    return {"pixel_values": pixels} if mode == "pairs" else {"pixel_values_videos": pixels}


def flops_per_pair(model: LapaDinov3Model, mode: str, pairs: int, device: torch.device) -> float:
    """At the measured batch: in video mode a clip of `pairs + 1` frames, so about one frame per pair."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**inputs(mode, pairs, device, next(model.parameters()).dtype))
    return counter.get_total_flops() / pairs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pairs_per_second(forward, batch: dict, pairs: int, device: torch.device, seconds: float) -> float:
    """Median pairs/s over timed calls after warm-up."""
    with torch.inference_mode():
        for _ in range(3):
            forward(**batch)
        synchronize(device)
        rates, started = [], time.perf_counter()
        while time.perf_counter() - started < seconds or len(rates) < 3:
            start = time.perf_counter()
            forward(**batch)
            synchronize(device)
            rates.append(pairs / (time.perf_counter() - start))
    return statistics.median(rates)


def model_throughput(args, device: torch.device, results: dict) -> None:
    name, peak = bf16_peak(device)
    report(results, "device", name, f"device: {name}" + (f", dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else ""))
    for dtype in (torch.bfloat16, torch.float32):
        model = make_model(args.tiny, device, dtype)
        for mode in ("pairs", "video"):
            flops = flops_per_pair(model, mode, args.pairs, device)
            batch = inputs(mode, args.pairs, device, dtype)
            variants = [("eager", model)]
            if dtype == torch.bfloat16 and (device.type == "cuda" or args.compile):
                variants.append(("compiled", torch.compile(model)))
            for variant, forward in variants:
                key = f"{mode}/{str(dtype).removeprefix('torch.')}/{variant}"
                try:
                    rate = pairs_per_second(forward, batch, args.pairs, device, args.seconds)
                except Exception as error:  # e.g. a compiler missing on the machine: report, go on
                    report(results, key, None, f"{key}: failed ({type(error).__name__}: {error})")
                    continue
                fraction = rate * flops / peak if peak else None
                shown = f", {100 * fraction:.1f}% of the bf16 peak" if fraction else ""
                report(results, key, {"pairs_per_s": rate, "gflop_per_pair": flops / 1e9, "peak_fraction": fraction},
                       f"{key}: {rate:,.1f} pairs/s, {flops / 1e9:.2f} GFLOP/pair{shown}")
        del model


def write_videos(folder: Path, count: int, frames: int) -> Path:
    """480x640 H.264 (ultrafast preset) of a textured scene panning across the frame."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    scene = np.random.default_rng(0).integers(0, 256, (60, 160, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    for index in range(count):
        with av.open(str(folder / f"video_{index}.mp4"), mode="w") as container:
            stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
            stream.height, stream.width, stream.pix_fmt = 480, 640, "yuv420p"
            for t in range(frames):
                image = np.ascontiguousarray(scene[:, (index * 37 + t) % 640 :][:, :640])
                if image.shape[1] < 640:
                    image = np.ascontiguousarray(np.concatenate([image, scene[:, : 640 - image.shape[1]]], axis=1))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
    return folder


class Rate(logging.Handler):
    """The pairs/s `lary extract` reports for its extraction loop."""

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"([\d.]+) pairs/s", record.getMessage())
        if match:
            self.rate = float(match[1])


def extract_end_to_end(args, device: torch.device, results: dict, scratch: Path) -> None:
    model_dir = scratch / "model"
    make_model(args.tiny, torch.device("cpu"), torch.float32).save_pretrained(model_dir)
    LapaDinov3Processor().save_pretrained(model_dir)
    videos = write_videos(scratch / "videos", args.videos, args.frames)
    rate = Rate()
    logger = logging.getLogger("lary.extract.command")
    logger.addHandler(rate)
    logger.setLevel(logging.INFO)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    config = ExtractConfig(model=str(model_dir), videos=[str(videos / "*.mp4")], out=scratch / "out", dtype=dtype,
                           batch_size=args.pairs, cpu=device.type != "cuda")
    started = time.perf_counter()
    assert extract(config) == 0
    wall = time.perf_counter() - started
    logger.removeHandler(rate)
    pairs = args.videos * (args.frames - 1)
    model_only = (results.get(f"video/{'bfloat16' if device.type == 'cuda' else 'float32'}/eager") or {}).get("pairs_per_s")
    ratio = rate.rate / model_only if model_only else None
    report(results, "extract", {"pairs_per_s": rate.rate, "pairs": pairs, "wall_s": wall, "of_model_only": ratio,
                                "workers": os.cpu_count()},
           f"lary extract end to end ({dtype}, {args.videos} x {args.frames} frames 480x640 H.264): {rate.rate:,.1f} pairs/s"
           + (f", {100 * ratio:.0f}% of model-only video mode" if ratio else "") + f" ({wall:.0f} s with model loading)")


def parity(device: torch.device, results: dict) -> None:
    """Golden checkpoint: codes on the device vs the CPU; the resize on the device vs the CPU."""
    if not (GOLDEN / "laq_dinov3.pt").is_file():
        report(results, "parity", None, f"parity: skipped, {GOLDEN} is absent")
        return
    from safetensors.torch import load_file

    from lary.checkpoint import convert_checkpoint

    backbone = json.loads((GOLDEN / "backbone_config.json").read_text())
    backbone.pop("transformers_version", None)
    model = convert_checkpoint(GOLDEN / "laq_dinov3.pt", json.loads((GOLDEN / "laq_config.json").read_text()),
                               DINOv3ViTConfig(**backbone))
    frames = load_file(GOLDEN / "cases.safetensors")["frames"]  # (cases, 2, 224, 224, 3) uint8
    processor = LapaDinov3Processor()
    pixels = processor(images=[list(pair) for pair in frames])["pixel_values"]
    with torch.inference_mode():
        cpu = model(pixel_values=pixels).action_indices
        on_device = model.to(device)(pixel_values=pixels.to(device)).action_indices.cpu()
        bf16 = model.to(torch.bfloat16)(pixel_values=pixels.to(device, torch.bfloat16)).action_indices.cpu()
    report(results, "parity/fp32_codes_equal", bool(torch.equal(cpu, on_device)),
           f"parity: {device.type} fp32 codes equal the CPU's: {torch.equal(cpu, on_device)}")
    agreement = (bf16 == cpu).float().mean().item()
    report(results, "parity/bf16_code_agreement", agreement, f"parity: {device.type} bf16 code agreement with CPU fp32: {100 * agreement:.1f}%")
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 480, 640, 3), dtype=np.uint8))
    difference = (processor.resize(raw.to(device)).cpu().int() - processor.resize(raw).int()).abs().max().item()
    report(results, "parity/resize_max_difference", difference, f"parity: {device.type} resize vs CPU resize: max difference {difference} grey level(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (seconds): what the tests run")
    parser.add_argument("--pairs", type=int, help="pairs per forward pass (default: 256 on a GPU, 4 with --tiny)")
    parser.add_argument("--seconds", type=float, help="timed seconds per measurement (default: 8, 0.5 with --tiny)")
    parser.add_argument("--videos", type=int, help="videos for the end-to-end run (default: 16, 2 with --tiny)")
    parser.add_argument("--frames", type=int, help="frames per video (default: 600, 12 with --tiny)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the CPU")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    defaults = dict(pairs=4, seconds=0.5, videos=2, frames=12) if args.tiny else dict(pairs=256, seconds=8.0, videos=16, frames=600)
    for name, value in defaults.items():
        setattr(args, name, getattr(args, name) or value)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    results = {"date": datetime.date.today().isoformat(), "tiny": args.tiny, "torch": torch.__version__}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the fp32 rows and the parity check
    model_throughput(args, device, results)
    with tempfile.TemporaryDirectory() as scratch:
        extract_end_to_end(args, device, results, Path(scratch))
    parity(device, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
