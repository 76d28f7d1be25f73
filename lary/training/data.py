"""Training clips and frame pairs: videos, image folders, saved `datasets`, LARY/`datasets` configs and generated
synthetic clips.

Clips are decoded once, resized to the backbone's square image size and kept in memory as uint8. Batches are a
pure function of (seed, step): every process draws the same global batch and takes its own slice, so a run
resumed at step N sees exactly the batches it would have seen, on any number of processes.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from lary.data.loading import load_lary_split
from lary.synthetic import make_clips

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
SYNTHETIC_PREFIX = "synthetic:"
DATASET_PREFIX = "dataset:"
PAIR_COLUMNS = ["source_image", "target_image"]

Pair = tuple[int, int, int]  # (clip index, first frame, stride)


def _resize(frames: list[Image.Image], size: int) -> torch.Tensor:
    """(frames, 3, size, size) uint8, bicubic as the processor resizes."""
    arrays = [np.asarray(frame.convert("RGB").resize((size, size), Image.BICUBIC)) for frame in frames]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _read_video(path: Path) -> list[Image.Image]:
    try:
        with av.open(str(path)) as container:
            return [frame.to_image() for frame in container.decode(video=0)]
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from None


def _synthetic(spec: str, size: int) -> list[torch.Tensor]:
    """`synthetic:COUNT[:SEED]` -> COUNT generated clips."""
    parts = spec[len(SYNTHETIC_PREFIX) :].split(":")
    try:
        count, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise ValueError(f"expected synthetic:COUNT[:SEED], got {spec!r}") from None
    return [_resize([Image.fromarray(f) for f in clip.frames], size) for clip in make_clips(count, seed=seed, size=size)]


def _saved_dataset(path: Path, size: int) -> list[torch.Tensor]:
    """A `datasets.save_to_disk` folder whose `frames` column holds each clip's images."""
    import datasets

    dataset = datasets.load_from_disk(str(path))
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    clips = []
    for split in splits:
        if "frames" not in split.column_names:
            raise ValueError(f"{path}: a training dataset needs a `frames` column (a list of images per clip)")
        clips += [_resize(row["frames"], size) for row in tqdm(split, desc=f"load {path.name}", unit="clip")]
    return clips


def _dataset_config(spec: str, size: int) -> list[torch.Tensor]:
    """`dataset:PATH_OR_ID:CONFIG[:SPLIT]` (split `train` by default) -> one clip per row: its `frames`, or its
    `source_image` and `target_image` as a 2-frame clip."""
    parts = spec[len(DATASET_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"expected dataset:PATH_OR_ID:CONFIG[:SPLIT] (no ':' inside the path), got {spec!r}")
    path, config, split = parts[0], parts[1], parts[2] if len(parts) == 3 else "train"
    dataset = load_lary_split(path, config, split)
    if set(PAIR_COLUMNS) <= set(dataset.column_names):
        rows = tqdm(dataset.select_columns(PAIR_COLUMNS), desc=f"load {config}/{split}", unit="pair")
        return [_resize([row[name] for name in PAIR_COLUMNS], size) for row in rows]
    if "frames" in dataset.column_names:
        rows = tqdm(dataset.select_columns(["frames"]), desc=f"load {config}/{split}", unit="clip")
        return [_resize(row["frames"], size) for row in rows]
    raise ValueError(
        f"--data {spec}: config {config!r}, split {split!r} has neither a `frames` column (clips) nor "
        f"`source_image`/`target_image` (pairs); its columns: {dataset.column_names}"
    )


def load_clips(sources: list[str], size: int) -> list[torch.Tensor]:
    """Clips as (frames, 3, size, size) uint8 tensors from each source: a video file, a folder of images (one
    clip, in name order), a folder of videos or clip folders, a saved `datasets` folder,
    dataset:PATH_OR_ID:CONFIG[:SPLIT] or synthetic:COUNT[:SEED]."""
    clips: list[torch.Tensor] = []
    for source in sources:
        if source.startswith(SYNTHETIC_PREFIX):
            clips += _synthetic(source, size)
            continue
        if source.startswith(DATASET_PREFIX):
            clips += _dataset_config(source, size)
            continue
        path = Path(source)
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            clips.append(_resize(_read_video(path), size))
        elif path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            clips += _saved_dataset(path, size)
        elif path.is_dir():
            entries = sorted(path.iterdir())
            images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
            if images:
                clips.append(_resize([Image.open(p) for p in images], size))
            else:
                nested = [str(p) for p in entries if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES]
                clips += load_clips(nested, size)
        else:
            raise ValueError(f"--data {source}: not a video file, a folder, dataset:... or synthetic:COUNT[:SEED]")
    return [clip for clip in clips if len(clip) >= 2]


def pair_at(rng: np.random.Generator, lengths: np.ndarray, stride_range: tuple[int, int]) -> Pair:
    """A random (clip, first frame, stride): clips weighted by length, stride uniform in the range (capped by
    the clip's length), first frame uniform."""
    clip = int(rng.choice(len(lengths), p=lengths / lengths.sum()))
    stride = int(rng.integers(stride_range[0], min(stride_range[1], lengths[clip] - 1) + 1))
    start = int(rng.integers(0, lengths[clip] - stride))
    return clip, start, stride


class StepBatchSampler(Sampler[list[Pair]]):
    """Yields this process's slice of the global batch of every step from `start_step` to `num_steps`."""

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        num_steps: int,
        stride_range: tuple[int, int],
        seed: int,
        start_step: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
    ):
        if min(lengths) < 2:
            raise ValueError("every clip needs at least two frames")
        if stride_range[0] < 1 or stride_range[0] > stride_range[1]:
            raise ValueError(f"--stride-range must be 1 <= a <= b; got {stride_range}")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size, self.num_steps, self.stride_range = batch_size, num_steps, stride_range
        self.seed, self.start_step = seed, start_step
        self.process_index, self.num_processes = process_index, num_processes

    def __len__(self) -> int:
        return self.num_steps - self.start_step

    def __iter__(self):
        for step in range(self.start_step, self.num_steps):
            rng = np.random.default_rng([self.seed, step])
            pairs = [pair_at(rng, self.lengths, self.stride_range) for _ in range(self.batch_size * self.num_processes)]
            yield pairs[self.process_index * self.batch_size : (self.process_index + 1) * self.batch_size]


class FramePairs(Dataset):
    """Frame pairs as `pixel_values` (2, 3, H, W) in [-1, 1], or cached `backbone_features` (2, h, w, D)."""

    def __init__(self, clips: list[torch.Tensor], features: list[torch.Tensor] | None = None):
        self.clips = clips
        self.features = features

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, pair: Pair) -> dict[str, torch.Tensor]:
        clip, start, stride = pair
        frames = [start, start + stride]
        if self.features is not None:
            return {"backbone_features": self.features[clip][frames]}
        return {"pixel_values": self.clips[clip][frames].float() / 127.5 - 1}
