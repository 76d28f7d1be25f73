"""Training clips and frame pairs: videos, image folders, saved `datasets`, LARY/`datasets` configs and generated
synthetic clips.

Clips are decoded once (`lary.frames`), resized by the model's processor to the backbone's square image size and kept
in memory as uint8; the processor also normalises each batch. Batches are a pure function of (seed, step): every
process draws the same global batch and takes its own slice, so a run resumed at step N sees exactly the batches it
would have seen, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from lary import LapaDinov3Processor
from lary.data.loading import load_lary_split
from lary.errors import LaryError
from lary.frames import VIDEO_SUFFIXES, decode_video, image_files, read_image
from lary.logs import progress_hidden
from lary.synthetic import make_clips

SYNTHETIC_PREFIX = "synthetic:"
DATASET_PREFIX = "dataset:"
PAIR_COLUMNS = ["source_image", "target_image"]

Pair = tuple[int, int, int]  # (clip index, first frame, stride)


def _resize(frames: Iterable[np.ndarray], processor: LapaDinov3Processor) -> torch.Tensor:
    """RGB uint8 frames -> (frames, 3, size, size) uint8, resized as they are read (`resize_stream`: a long video is
    never held at full resolution; frames may differ in size)."""
    pixels = list(processor.resize_stream(frames))
    return torch.stack(pixels) if pixels else torch.empty((0, 3, processor.size, processor.size), dtype=torch.uint8)


def _synthetic(spec: str, processor: LapaDinov3Processor) -> list[torch.Tensor]:
    """`synthetic:COUNT[:SEED]` -> COUNT generated clips."""
    parts = spec[len(SYNTHETIC_PREFIX) :].split(":")
    try:
        count, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise LaryError(f"expected synthetic:COUNT[:SEED], got {spec!r}") from None
    return [_resize(clip.frames, processor) for clip in make_clips(count, seed=seed, size=processor.size)]


def _saved_dataset(path: Path, processor: LapaDinov3Processor) -> list[torch.Tensor]:
    """A `datasets.save_to_disk` folder whose `frames` column holds each clip's images."""
    import datasets

    dataset = datasets.load_from_disk(str(path))
    splits = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    clips = []
    for split in splits:
        if "frames" not in split.column_names:
            raise LaryError(f"{path}: a training dataset needs a `frames` column (a list of images per clip)")
        rows = tqdm(split, desc=f"load {path.name}", unit="clip", disable=progress_hidden())
        clips += [_resize((read_image(image) for image in row["frames"]), processor) for row in rows]
    return clips


def _dataset_config(spec: str, processor: LapaDinov3Processor) -> list[torch.Tensor]:
    """`dataset:PATH_OR_ID:CONFIG[:SPLIT]` (split `train` by default) -> one clip per row: its `frames`, or its
    `source_image` and `target_image` as a 2-frame clip."""
    parts = spec[len(DATASET_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise LaryError(f"expected dataset:PATH_OR_ID:CONFIG[:SPLIT] (no ':' inside the path), got {spec!r}")
    path, config, split = parts[0], parts[1], parts[2] if len(parts) == 3 else "train"
    dataset = load_lary_split(path, config, split)
    if set(PAIR_COLUMNS) <= set(dataset.column_names):
        rows = tqdm(dataset.select_columns(PAIR_COLUMNS), desc=f"load {config}/{split}", unit="pair", disable=progress_hidden())
        return [_resize((read_image(row[name]) for name in PAIR_COLUMNS), processor) for row in rows]
    if "frames" in dataset.column_names:
        rows = tqdm(dataset.select_columns(["frames"]), desc=f"load {config}/{split}", unit="clip", disable=progress_hidden())
        return [_resize((read_image(image) for image in row["frames"]), processor) for row in rows]
    raise LaryError(
        f"--data {spec}: config {config!r}, split {split!r} has neither a `frames` column (clips) nor "
        f"`source_image`/`target_image` (pairs); its columns: {dataset.column_names}"
    )


def load_clips(sources: list[str], processor: LapaDinov3Processor) -> list[torch.Tensor]:
    """Clips as (frames, 3, size, size) uint8 tensors (resized by `processor`) from each source: a video file, a
    folder of images (one clip, in natural order), a folder of videos or clip folders, a saved `datasets` folder,
    dataset:PATH_OR_ID:CONFIG[:SPLIT] or synthetic:COUNT[:SEED]."""
    clips: list[torch.Tensor] = []
    for source in sources:
        if source.startswith(SYNTHETIC_PREFIX):
            clips += _synthetic(source, processor)
            continue
        if source.startswith(DATASET_PREFIX):
            clips += _dataset_config(source, processor)
            continue
        path = Path(source)
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            clips.append(_resize((frame.rgb for frame in decode_video(path)), processor))
        elif path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            clips += _saved_dataset(path, processor)
        elif path.is_dir():
            images = image_files(path)
            if images:
                clips.append(_resize((read_image(image) for image in images), processor))
            else:
                nested = [str(p) for p in sorted(path.iterdir()) if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES]
                clips += load_clips(nested, processor)
        else:
            raise LaryError(f"--data {source}: not a video file ({', '.join(VIDEO_SUFFIXES)}), a folder, dataset:... or synthetic:COUNT[:SEED]")
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
            raise LaryError("every clip needs at least two frames")
        if stride_range[0] < 1 or stride_range[0] > stride_range[1]:
            raise LaryError(f"--stride-range must be 1 <= a <= b; got {stride_range}")
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


class TrainingPairs(Dataset):
    """The training clips' frame pairs, indexed by a sampled `Pair`, as model inputs: `pixel_values` (2, 3, H, W)
    in [-1, 1] (normalised by the processor), or cached `backbone_features` (2, h, w, D). (An episode's pairs with
    their targets are `lary.lerobot.FramePairs`.)"""

    def __init__(self, clips: list[torch.Tensor], processor: LapaDinov3Processor, features: list[torch.Tensor] | None = None):
        self.clips, self.processor, self.features = clips, processor, features

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, pair: Pair) -> dict[str, torch.Tensor]:
        clip, start, stride = pair
        frames = [start, start + stride]
        if self.features is not None:
            return {"backbone_features": self.features[clip][frames]}
        return {"pixel_values": self.processor.normalize(self.clips[clip][frames])}
