"""`lary demo`: latent action codes of a clip, as a table and a PNG timeline, offline in seconds.

By default it runs the tiny model embedded in the repository (`examples/tiny-lapa-dinov3`, a random DINOv3-shaped
backbone trained on synthetic clips) on a generated clip whose motion is known; `--model` and `--video` run the
same on a real model and real footage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
import torch
from transformers import AutoModel

import lary_hub

from lary import LapaDinov3Processor
from lary.synthetic import DIRECTIONS, make_clip

# `examples/` sits beside the Hub files, which install as `lary_hub` (a checkout, or package data of the wheel).
EMBEDDED_MODEL = Path(next(iter(lary_hub.__path__))) / "examples" / "tiny-lapa-dinov3"


def default_model() -> Path:
    if not (EMBEDDED_MODEL / "config.json").exists():
        raise FileNotFoundError(f"the embedded model is missing from {EMBEDDED_MODEL}: reinstall lary, or pass --model ID_OR_DIR")
    return EMBEDDED_MODEL


def read_video(path: str | Path, num_frames: int) -> np.ndarray:
    """`num_frames` frames spread evenly over the video, as (frames, H, W, 3) uint8."""
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, FileNotFoundError) as error:
        raise ValueError(f"cannot decode video {path}: {error}") from None
    if len(frames) < 2:
        raise ValueError(f"{path} has {len(frames)} frame(s); the demo needs at least two")
    picks = np.linspace(0, len(frames) - 1, min(num_frames, len(frames))).round().astype(int)
    return np.stack([frames[i] for i in picks])


def code_table(indices: torch.Tensor, stride: int) -> str:
    """One row per pair: the frames it joins and its codes."""
    lines = [f"{'pair':>4}  {'frames':>7}  codes", f"{'-' * 4}  {'-' * 7}  {'-' * (3 * indices.shape[1])}"]
    for pair, codes in enumerate(indices.tolist()):
        lines.append(f"{pair:>4}  {f'{pair}->{pair + stride}':>7}  " + " ".join(f"{c:>2}" for c in codes))
    return "\n".join(lines)


def save_timeline(frames: np.ndarray, indices: torch.Tensor, stride: int, codebook_size: int, path: Path, title: str) -> Path:
    """Frames on top; under each pair's first frame, its code grid (colour = code, number = code)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(frames)
    side = int(np.ceil(np.sqrt(indices.shape[1])))
    figure, axes = plt.subplots(
        2, count, figsize=(1.6 * count, 3.2), squeeze=False, gridspec_kw={"height_ratios": [1, 0.6]}
    )
    for t in range(count):
        axes[0, t].imshow(frames[t])
        axes[0, t].set_title(f"frame {t}", fontsize=8)
        axes[0, t].axis("off")
        axes[1, t].axis("off")
        if t < len(indices):
            grid = np.full(side * side, -1)
            grid[: indices.shape[1]] = indices[t].numpy()
            grid = grid.reshape(side, side)
            axes[1, t].imshow(np.ma.masked_less(grid, 0), cmap="tab10" if codebook_size <= 10 else "tab20", vmin=0, vmax=codebook_size - 1)
            for (y, x), code in np.ndenumerate(grid):
                if code >= 0:
                    axes[1, t].text(x, y, str(code), ha="center", va="center", fontsize=9, color="white", weight="bold")
            axes[1, t].set_title(f"{t}->{t + stride}", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model id or folder (default: the embedded examples/tiny-lapa-dinov3)")
    parser.add_argument("--video", help="a video file (default: a generated synthetic clip)")
    parser.add_argument("--frames", type=int, default=8, help="frames taken from the clip")
    parser.add_argument("--stride", type=int, default=1, help="frame distance of each pair")
    parser.add_argument("--direction", type=int, choices=range(len(DIRECTIONS)), help="motion of the synthetic clip (0=right, counter-clockwise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic clip")
    parser.add_argument("--out", default=".", help="folder for demo_timeline.png")


def main(args: argparse.Namespace) -> int:
    model_path = args.model or default_model()
    model = AutoModel.from_pretrained(str(model_path), trust_remote_code=True).eval()
    processor = LapaDinov3Processor.from_pretrained(str(model_path))
    if args.video:
        frames = read_video(args.video, args.frames)
        title = f"{Path(args.video).name} with {model_path}"
    else:
        clip = make_clip(args.direction, num_frames=args.frames, size=processor.size, seed=args.seed)
        frames = clip.frames
        title = f"synthetic clip moving {DIRECTIONS[clip.direction]} (seed {args.seed}) with {Path(model_path).name}"
    if not 1 <= args.stride < len(frames):
        raise ValueError(f"--stride must be in [1, {len(frames) - 1}] for {len(frames)} frames")

    inputs = processor(videos=[list(frames)], stride=args.stride)
    with torch.no_grad():
        output = model(pixel_values_videos=inputs["pixel_values_videos"], stride=args.stride)
    indices = output.action_indices[0]
    print(title)
    print(code_table(indices, args.stride))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = save_timeline(frames, indices, args.stride, model.config.codebook_size, out / "demo_timeline.png", title)
    print(f"timeline: {path.resolve()}")
    return 0
