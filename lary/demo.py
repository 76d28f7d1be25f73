"""`lary demo`: latent action codes of a clip, as a table and a PNG timeline, offline in seconds.

By default it runs the tiny model embedded in the repository (`examples/tiny-lapa-dinov3`, a random DINOv3-shaped
backbone trained on synthetic clips) on a generated clip whose motion is known; `--model` and `--video` run the
same on a real model and real footage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from lary.configs.model import DemoConfig
from lary.errors import LaryError
from lary.frames import load_processor, probe_video, read_video
from lary.hub import EMBEDDED_MODEL_NOTE, default_model, is_embedded_model, load_pretrained
from lary.synthetic import DIRECTIONS, make_clip


def spread_frames(path: str | Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """`num_frames` frames spread evenly over a video and their frame numbers: ((frames, H, W, 3) uint8, (frames,)).
    Only those frames are kept while decoding, so a long video costs time, not memory."""
    length = probe_video(path).num_frames
    if length < 2:
        raise LaryError(f"{path} has {length} frame(s); the demo needs at least two")
    picks = np.unique(np.linspace(0, length - 1, min(num_frames, length)).round().astype(int))
    return read_video(path, picks.tolist()), picks


def code_table(indices: torch.Tensor, frame_numbers: np.ndarray, stride: int) -> str:
    """One row per pair: the frames it joins (their numbers in the video) and its codes."""
    width = max(7, len(f"{frame_numbers[-1]}->{frame_numbers[-1]}"))
    lines = [f"{'pair':>4}  {'frames':>{width}}  codes", f"{'-' * 4}  {'-' * width}  {'-' * (3 * indices.shape[1])}"]
    for pair, codes in enumerate(indices.tolist()):
        joined = f"{frame_numbers[pair]}->{frame_numbers[pair + stride]}"
        lines.append(f"{pair:>4}  {joined:>{width}}  " + " ".join(f"{c:>2}" for c in codes))
    return "\n".join(lines)


def save_timeline(
    frames: np.ndarray, frame_numbers: np.ndarray, indices: torch.Tensor, stride: int, codebook_size: int, path: Path, title: str
) -> Path:
    """Frames on top (titled with their numbers); under each pair's first frame, its code grid (colour = code)."""
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
        axes[0, t].set_title(f"frame {frame_numbers[t]}", fontsize=8)
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
            axes[1, t].set_title(f"{frame_numbers[t]}->{frame_numbers[t + stride]}", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def demo(args: DemoConfig) -> int:
    """`lary demo`: print the codes of each pair and save `demo_timeline.png` in `args.out`."""
    model_path = str(args.model or default_model())
    # the installed classes (registered by `import lary`)
    model = load_pretrained(AutoModel, model_path, "--model", args.allow_missing_weights).eval()
    processor = load_processor(model_path, model.config.backbone_config.image_size)
    if args.video:
        frames, numbers = spread_frames(args.video, args.frames)
        title = f"{Path(args.video).name} with {model_path}"
    else:
        clip = make_clip(args.direction, num_frames=args.frames, size=processor.size, seed=args.seed)
        frames, numbers = clip.frames, np.arange(args.frames)
        title = f"synthetic clip moving {DIRECTIONS[clip.direction]} (seed {args.seed}) with {Path(model_path).name}"
    if not 1 <= args.stride < len(frames):
        raise LaryError(f"--stride must be in [1, {len(frames) - 1}] for {len(frames)} frames")

    inputs = processor(videos=[list(frames)], stride=args.stride)
    with torch.no_grad():
        output = model(**inputs)
    indices = output.action_indices[0]
    print(title)
    if is_embedded_model(model_path):
        print(f"Note: this is {EMBEDDED_MODEL_NOTE}.")
    print(code_table(indices, numbers, args.stride))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = save_timeline(frames, numbers, indices, args.stride, model.config.codebook_size, out / "demo_timeline.png", title)
    print(f"timeline: {path.resolve()}")
    return 0
