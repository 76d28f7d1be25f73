"""LAPA-DINOv3 on a GPU: model throughput at the released ViT-L shape, `lary extract` end to end, and CUDA parity.

One script for a GPU machine (a few minutes; `--parts` runs some of it), in the order of what matters most:
1. parity: the golden reference checkpoint's codes on the GPU in fp32 (no TF32; equal to the reference's) and bf16
   (agreement); `lary extract` with the embedded model on the real ALOHA videos on the GPU (fp32, resizing there) vs
   on the CPU (the same rows and codes); the GPU resize of real frames vs the CPU resize (within one grey level);
2. model-only pairs/s of the released shape (DINOv3 ViT-L/16 + the LAQ, random weights), SDPA attention, in bf16,
   pair mode (`pixel_values`, each frame through the backbone per pair) and video mode (`pixel_values_videos`,
   each frame once); with the FLOPs per pair (counted by `FlopCounterMode`) and the fraction of the card's dense bf16
   peak that this reaches;
3. `lary extract` end to end on 480x640 H.264 videos it writes (decoding in DataLoader workers, resizing on the GPU),
   bf16, and its ratio to model-only video mode;
4. the same in fp32 (no TF32), then `torch.compile`d in bf16, then `lary extract --compile`, while time is left
   (`--budget`).
With `--tiny` it runs a tiny shape on the CPU in seconds (what the test suite does). Prints one line per measurement
and a summary at the end, and rewrites `--json` after each measurement (a run cut short keeps what it measured).

    python benchmarks/bench_gpu.py [--tiny] [--json gpu_results.json] [--shared ../shared]
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
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import DINOv3ViTConfig

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor
from lary.configs.extract import ExtractConfig
from lary.extract.command import extract
from lary.extract.models import LatentActionExtractor
from lary.runtime import exact_float32
from lary.hub import EMBEDDED_MODEL

SHARED = Path(__file__).resolve().parents[2] / "shared"
# dense bf16 tensor-core peaks (FLOP/s) by device name
BF16_PEAKS = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
              "H100": 756e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
PARTS = ("parity", "bf16", "extract", "fp32", "compiled", "extract_compiled")  # in the order they run
TINY_BACKBONE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
TINY_LAQ = dict(quant_dim=8, spatial_depth=1, temporal_depth=1, decoder_depth=1, dim_head=16, heads=4)


class Results(dict):
    """Measurements by name, printed as they come and rewritten to `path` after each one."""

    def __init__(self, path: Path | None, **fields):
        super().__init__(fields)
        self.path, self.lines = path, []

    def add(self, name: str, value, text: str) -> None:
        self[name] = value
        self.lines.append(text)
        print(text, flush=True)
        if self.path:
            self.path.write_text(json.dumps(self, indent=1))


def section(results: Results, name: str, run, *args) -> None:
    """Run one part; a failure is reported (with its traceback) and the next part runs."""
    try:
        run(*args)
    except Exception as error:
        traceback.print_exc()
        results.add(f"{name}/error", f"{type(error).__name__}: {error}", f"{name}: FAILED ({type(error).__name__}: {error})")


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((value for key, value in BF16_PEAKS.items() if key in name), None)


def make_model(tiny: bool, device: torch.device, dtype: torch.dtype) -> LapaDinov3Model:
    """Random weights, initialised on `device` (fast on a GPU)."""
    torch.manual_seed(0)
    config = LapaDinov3Config(backbone_config=TINY_BACKBONE, **TINY_LAQ) if tiny else LapaDinov3Config()
    config._attn_implementation = "sdpa"
    with device:
        return LapaDinov3Model(config).eval().to(dtype)


def inputs(mode: str, pairs: int, device: torch.device, dtype: torch.dtype, size: int = 224) -> dict:
    """Random pixels in [-1, 1]: `pairs` frame pairs, or one clip of `pairs + 1` frames."""
    frames = (2, 3, size, size) if mode == "pairs" else (pairs + 1, 3, size, size)
    pixels = torch.rand(pairs if mode == "pairs" else 1, *frames, device=device, dtype=dtype) * 2 - 1
    return {"pixel_values": pixels} if mode == "pairs" else {"pixel_values_videos": pixels}


def flops_per_pair(model: LapaDinov3Model, batch: dict, pairs: int) -> float:
    """At the measured batch: in video mode a clip of `pairs + 1` frames, so about one frame per pair."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(**batch)
    return counter.get_total_flops() / pairs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pairs_per_second(forward, batch: dict, pairs: int, device: torch.device, seconds: float) -> float:
    """Median pairs/s over timed calls after warm-up (for a compiled model, the warm-up compiles)."""
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


def throughput(args, device: torch.device, results: Results, dtype: torch.dtype, variant: str,
               modes=("video", "pairs")) -> None:
    _, peak = bf16_peak(device)
    model = make_model(args.tiny, device, dtype)
    forward = torch.compile(model) if variant == "compiled" else model
    for mode in modes:
        key = f"{mode}/{str(dtype).removeprefix('torch.')}/{variant}"
        if time.perf_counter() > args.deadline:
            results.add(key, None, f"{key}: skipped (past --budget)")
            continue
        batch = inputs(mode, args.pairs, device, dtype)
        flops = flops_per_pair(model, batch, args.pairs)
        try:
            rate = pairs_per_second(forward, batch, args.pairs, device, args.seconds)
        except Exception as error:  # e.g. a compiler missing on the machine: report, go on
            results.add(key, None, f"{key}: failed ({type(error).__name__}: {error})")
            continue
        fraction = rate * flops / peak if peak else None
        shown = f", {100 * fraction:.1f}% of the bf16 peak" if fraction else ""
        results.add(key, {"pairs_per_s": rate, "gflop_per_pair": flops / 1e9, "peak_fraction": fraction},
                    f"{key}: {rate:,.1f} pairs/s, {flops / 1e9:.2f} GFLOP/pair{shown}")
    del model, forward
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_video(path: Path, index: int, frames: int) -> None:
    """480x640 H.264 (ultrafast preset) of a textured scene panning across the frame."""
    import av

    scene = np.random.default_rng(0).integers(0, 256, (60, 160, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    scene = np.concatenate([scene, scene], axis=1)  # 1280 wide: any 640-wide window fits
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = 480, 640, "yuv420p"
        for t in range(frames):
            start = (index * 37 + t) % 640
            image = np.ascontiguousarray(scene[:, start : start + 640])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def write_videos(folder: Path, count: int, frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(min(count, os.cpu_count() or 1)) as pool:
        list(pool.map(write_video, [folder / f"video_{i}.mp4" for i in range(count)], range(count), [frames] * count))
    return folder


class Rate(logging.Handler):
    """The pairs/s `lary extract` reports, and its line on where the loop's time went."""

    rate: float | None = None
    loop: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        match = re.search(r"([\d.]+) pairs/s", message)
        if match:
            self.rate = float(match[1])
        if "waited for frames" in message:
            self.loop = message


def run_extract(config: ExtractConfig) -> tuple[Rate, float]:
    """`lary extract` in this process: (what it reported, wall seconds with model loading)."""
    rate = Rate()
    logger = logging.getLogger("lary.extract.command")
    logger.addHandler(rate)
    logger.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        code = extract(config)
    finally:
        logger.removeHandler(rate)
    if code != 0:
        raise RuntimeError(f"lary extract exited with {code}: see {config.out / 'errors.jsonl'}")
    return rate, time.perf_counter() - started


def extract_end_to_end(args, device: torch.device, results: Results, scratch: Path, compiled: bool = False) -> None:
    """`lary extract` (with `--compile` if `compiled`) on videos it writes, against the model alone in video mode."""
    model_dir, videos = scratch / "model", scratch / "videos"
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    if not model_dir.is_dir():
        make_model(args.tiny, device, getattr(torch, dtype)).save_pretrained(model_dir)
        LapaDinov3Processor().save_pretrained(model_dir)
        started = time.perf_counter()
        write_videos(videos, args.videos, args.frames)
        print(f"wrote {args.videos} videos in {time.perf_counter() - started:.0f} s", flush=True)
    variant = "compiled" if compiled else "eager"
    config = ExtractConfig(model=str(model_dir), videos=[str(videos / "*.mp4")], out=scratch / f"out-{variant}",
                           dtype=dtype, batch_size=args.pairs, cpu=device.type != "cuda", compile=compiled)
    compute, rates = LatentActionExtractor.compute, []

    def timed_compute(self, pieces):  # pairs/s of each batch's compute (it ends copying the outputs to the CPU)
        start = time.perf_counter()
        outputs = compute(self, pieces)
        rates.append(sum(piece.pairs for piece in pieces) / (time.perf_counter() - start))
        return outputs

    LatentActionExtractor.compute = timed_compute
    try:
        reported, wall = run_extract(config)
    finally:
        LatentActionExtractor.compute = compute
    rate, in_loop = reported.rate, statistics.median(rates[1:] or rates)
    pairs = args.videos * (args.frames - 1)
    model_only = (results.get(f"video/{dtype}/{variant}") or {}).get("pairs_per_s")
    ratio = rate / model_only if model_only else None
    results.add("extract" + ("/compiled" if compiled else ""),
                {"pairs_per_s": rate, "pairs": pairs, "wall_s": wall, "of_model_only": ratio, "loop": reported.loop,
                 "compute_pairs_per_s": in_loop},
                f"lary extract{' --compile' if compiled else ''} end to end ({dtype}, {args.videos} x {args.frames} frames "
                f"480x640 H.264): {rate:,.1f} pairs/s" + (f", {100 * ratio:.0f}% of {variant} model-only video mode" if ratio else "")
                + f" ({wall:.0f} s with "
                f"model loading); its compute step (resize, model, outputs to the CPU) ran at {in_loop:,.1f} pairs/s "
                f"(median batch after the first); {reported.loop}")


def golden_parity(device: torch.device, results: Results, golden: Path) -> None:
    """The reference checkpoint's codes and continuous actions on the golden frames: CPU and `device`, fp32 and bf16."""
    from safetensors.torch import load_file

    from lary.checkpoint import convert_checkpoint

    backbone = json.loads((golden / "backbone_config.json").read_text())
    backbone.pop("transformers_version", None)
    model = convert_checkpoint(golden / "laq_dinov3.pt", json.loads((golden / "laq_config.json").read_text()),
                               DINOv3ViTConfig(**backbone))
    cases = load_file(golden / "cases.safetensors")  # frames: (cases, 2, 224, 224, 3) uint8
    pixels = LapaDinov3Processor()(images=[list(pair) for pair in cases["frames"]])["pixel_values"]
    with torch.inference_mode():
        cpu = model(pixel_values=pixels)
        on_device = model.to(device)(pixel_values=pixels.to(device))
        bf16 = model.to(torch.bfloat16)(pixel_values=pixels.to(device, torch.bfloat16)).action_indices.cpu()
    codes = on_device.action_indices.cpu()
    reference = cases["indices"]
    results.add("parity/fp32_codes_equal", bool(torch.equal(cpu.action_indices, codes)),
                f"parity: {device.type} fp32 codes equal the CPU's: {torch.equal(cpu.action_indices, codes)}")
    results.add("parity/fp32_codes_equal_reference", bool(torch.equal(codes, reference)),
                f"parity: {device.type} fp32 codes equal the reference's ({reference.numel()} codes): {torch.equal(codes, reference)}")
    difference = (on_device.continuous_latent_actions.cpu() - cases["continuous"]).abs().max().item()
    results.add("parity/fp32_continuous_max_difference", difference,
                f"parity: {device.type} fp32 continuous latent actions vs the reference's: max difference {difference:.2e}")
    agreement = (bf16 == reference).float().mean().item()
    results.add("parity/bf16_code_agreement", agreement,
                f"parity: {device.type} bf16 code agreement with the reference: {100 * agreement:.1f}%")


def video_parity(device: torch.device, results: Results, aloha: Path, scratch: Path) -> None:
    """The real ALOHA videos: the device's resize of decoded frames vs the CPU's, and `lary extract` with the embedded
    model on the device (fp32, resizing there) vs on the CPU: the same rows and codes."""
    from lary.frames import read_video

    videos = sorted(aloha.glob("*.mp4"))
    frames = torch.from_numpy(read_video(videos[0]))
    processor = LapaDinov3Processor()
    difference = (processor.resize(frames.to(device)).cpu().int() - processor.resize(frames).int()).abs().max().item()
    results.add("parity/resize_max_difference", difference,
                f"parity: {device.type} resize of {len(frames)} real {frames.shape[2]}x{frames.shape[1]} frames vs "
                f"the CPU resize: max difference {difference} grey level(s)")
    tables = {}
    keys = ["id", "frame_index", "next_frame_index"]
    for where in ("cpu", device.type):
        config = ExtractConfig(model=str(EMBEDDED_MODEL), videos=[str(path) for path in videos],
                               out=scratch / f"aloha-{where}", cpu=where == "cpu", batch_size=16)
        run_extract(config)
        table = pq.read_table(sorted(config.out.glob("shard-*.parquet")))
        tables[where] = table.sort_by([(key, "ascending") for key in keys[:2]])
    cpu, other = tables["cpu"], tables[device.type]
    same_rows = cpu.select(keys).equals(other.select(keys))
    codes_cpu = np.asarray(cpu["action_indices"].to_pylist())
    codes_device = np.asarray(other["action_indices"].to_pylist())
    agreement = float((codes_cpu == codes_device).mean())
    results.add("parity/extract_rows_equal", same_rows,
                f"parity: lary extract on ALOHA, {device.type} vs CPU: the same {cpu.num_rows} rows: {same_rows}")
    results.add("parity/extract_code_agreement", agreement,
                f"parity: lary extract on ALOHA, {device.type} fp32 vs CPU fp32: {100 * agreement:.2f}% of "
                f"{codes_cpu.size} codes agree")


def summary(results: Results) -> None:
    print("\nsummary")
    for line in results.lines:
        print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (seconds): what the tests run")
    parser.add_argument("--pairs", type=int, help="pairs per forward pass (default: 256 on a GPU, 4 with --tiny)")
    parser.add_argument("--seconds", type=float, help="timed seconds per measurement (default: 6, 0.5 with --tiny)")
    parser.add_argument("--videos", type=int, help="videos for the end-to-end run (default: 16, 2 with --tiny)")
    parser.add_argument("--frames", type=int, help="frames per video (default: 600, 12 with --tiny)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the CPU")
    parser.add_argument("--budget", type=float, default=420, help="seconds after which the remaining timings are skipped")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared fixtures (golden checkpoint, ALOHA videos)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(parts - set(PARTS)))}; choose from {', '.join(PARTS)}")
    defaults = dict(pairs=4, seconds=0.5, videos=2, frames=12) if args.tiny else dict(pairs=256, seconds=6.0, videos=16, frames=600)
    for name, value in defaults.items():
        setattr(args, name, getattr(args, name) or value)
    args.deadline = time.perf_counter() + args.budget
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    name, peak = bf16_peak(device)
    results = Results(args.json, date=datetime.date.today().isoformat(), tiny=args.tiny, torch=torch.__version__,
                      cpus=os.cpu_count())
    results.add("device", name, f"device: {name}" + (f", dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else ""))
    golden, aloha = args.shared / "golden" / "lapa_dinov3_tiny", args.shared / "robot" / "aloha"
    with tempfile.TemporaryDirectory() as scratch:
        if "parity" in parts:
            if (golden / "laq_dinov3.pt").is_file():
                with exact_float32(device, torch.float32):  # as `lary extract --dtype float32` computes
                    section(results, "parity/golden", golden_parity, device, results, golden)
            else:
                results.add("parity/golden", None, f"parity: skipped, {golden} is absent")
            if aloha.is_dir():
                section(results, "parity/video", video_parity, device, results, aloha, Path(scratch))
            else:
                results.add("parity/video", None, f"parity: skipped, {aloha} is absent")
        if "bf16" in parts:
            section(results, "model/bfloat16", throughput, args, device, results, torch.bfloat16, "eager")
        if "extract" in parts:
            section(results, "extract", extract_end_to_end, args, device, results, Path(scratch))
        if "fp32" in parts:
            with exact_float32(device, torch.float32):  # fp32 means fp32, as in `lary extract --dtype float32`
                section(results, "model/float32", throughput, args, device, results, torch.float32, "eager")
        if device.type == "cuda" or args.compile:
            if "compiled" in parts:
                section(results, "model/compiled", throughput, args, device, results, torch.bfloat16, "compiled")
            if "extract_compiled" in parts and time.perf_counter() < args.deadline:
                section(results, "extract/compiled", extract_end_to_end, args, device, results, Path(scratch), True)
    summary(results)


if __name__ == "__main__":
    main()
