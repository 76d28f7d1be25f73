"""Latent actions as labels inside a training pipeline: frame pairs in, LAPA-DINOv3 codes out, on the model's device.

    labeler = LatentActionLabeler.from_pretrained("AGI-Eval/LAPA-DINOv3", dtype="bfloat16")
    labels = labeler.label_pairs(first_frames, second_frames)          # {"action_indices": (N, n) int64, ...}
    clip = labeler.label_video("clip.mp4", stride_seconds=0.6)         # pairs (t, t + round(0.6 x fps))
    dataset = dataset.map(labeler.datasets_map(first="frame", second="next_frame"), batched=True, batch_size=64)
    loader = DataLoader(lerobot_dataset, batch_size=32, collate_fn=labeler.collate("observation.images.top"))

Frames go the way `lary extract` takes them (`lary.extract.models.LatentActionExtractor`): the processor's resize to
uint8 model pixels (on the GPU when the model is there), every frame through the backbone once, then the pairs; so
the same frames give the same codes as `lary extract`. Float frames in [0, 1] (LeRobot's `(C, H, W)` tensors) are
rounded to 8 bits first (`LapaDinov3Processor.to_uint8`): a frame decoded to uint8 and divided by 255 comes back
exactly, so a LeRobot batch gives the codes of its decoded frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lary.errors import LaryError, MediaError
from lary.extract.loader import Piece
from lary.extract.models import DTYPES, LATENT_ACTION_COLUMNS, LatentActionExtractor, exact_float32, load_model
from lary.frames import decode_video, probe_video, read_image, stride_frames

FILE_LIKE = (str, Path, bytes, dict)  # read as image files (a 🤗 `datasets` Image value is a dict)


def _dtype_name(dtype: str | torch.dtype | None) -> str:
    if dtype is None:
        return "float32"
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES and name != "auto":
        raise LaryError(f"dtype={dtype!r} is not one of {sorted(DTYPES) + ['auto']}")
    return name


class LatentActionLabeler:
    """LAPA-DINOv3 latent actions of frame pairs, batched on the model's device, without gradients.

    Frames may be PIL images, (H, W, 3) uint8 numpy arrays, (3, H, W) or (H, W, 3) tensors (uint8, or float in
    [0, 1], rounded to 8 bits), image files (paths, bytes, 🤗 `datasets` Image values), as lists or as batched
    arrays (N, H, W, 3) / tensors (N, 3, H, W); frames of different sizes may be mixed.

    Args:
        model: a `LapaDinov3Model` in eval mode.
        name_or_path: where its processor is saved (`preprocessor_config.json`: size, resample); default
            `model.name_or_path`, else the default processor at the backbone's size.
        batch_size: pairs per forward pass (each pair's two frames go through the backbone once).
    """

    def __init__(self, model, name_or_path: str | Path | None = None, batch_size: int = 32):
        if batch_size < 1:
            raise LaryError(f"batch_size must be at least 1; got {batch_size}")
        self.model = model.eval()
        self._extractor = LatentActionExtractor(model, str(name_or_path or model.name_or_path), batch_size)
        self.processor = self._extractor.processor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
        allow_missing_weights: bool = False,
    ) -> LatentActionLabeler:
        """Load a LAPA-DINOv3 model folder or Hub id as `lary extract --model` does (weights that do not fit its
        config are refused unless `allow_missing_weights`). `device`: default CUDA when there is one, else the CPU;
        `dtype`: float32 (default), "bfloat16" / `torch.bfloat16`, float16, or "auto" (as `lary extract --dtype auto`)."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_model(str(name_or_path), _dtype_name(dtype), None, device, allow_missing_weights=allow_missing_weights)
        return cls(model, name_or_path, batch_size)

    @property
    def config(self):
        """The model's `LapaDinov3Config` (`codebook_size`, `code_seq_len`: what `LatentActionTokens.add_to` reads)."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self._extractor.device

    def label_pairs(self, first_frames: Any, second_frames: Any) -> dict[str, np.ndarray]:
        """The latent actions of the pairs `(first_frames[i], second_frames[i])`: `action_indices` (N, n) int64,
        `latent_actions` (N, n, D) and `continuous_latent_actions` (N, n, q) float32 numpy arrays."""
        first = self._frames(first_frames, "first_frames")
        second = self._frames(second_frames, "second_frames")
        if len(first) != len(second):
            raise LaryError(f"{len(first)} first frames but {len(second)} second frames: each pair needs one of each")
        if not first:
            raise LaryError("no frame pairs to label")
        parts = [self._label(first[a : a + self.batch_size], second[a : a + self.batch_size])
                 for a in range(0, len(first), self.batch_size)]
        return {name: np.concatenate([part[name] for part in parts]) for name in LATENT_ACTION_COLUMNS}

    def label_video(
        self, path: str | Path, stride: int | None = None, stride_seconds: float | None = None
    ) -> dict[str, np.ndarray]:
        """Every pair `(t, t + k)` of a video file, decoded as `lary extract --videos` decodes it, a batch of pairs at a
        time (memory holds a batch and k frames): k = `stride` frames (default 1), or `stride_seconds` S at the video's
        own rate, k = round(S x fps) (`lary extract --stride-seconds`). The arrays of `label_pairs`, with each pair's
        `frame_index` and `next_frame_index` (N,) int64."""
        if stride is not None and stride_seconds is not None:
            raise LaryError("give stride (frames) or stride_seconds, not both")
        if stride_seconds is not None:
            stride = stride_frames(stride_seconds, probe_video(path).fps, str(path))
        stride = 1 if stride is None else stride
        if stride < 1:
            raise LaryError(f"stride={stride}: it must be a positive number of frames")
        frames: dict[int, torch.Tensor] = {}
        parts, first_indices = [], []
        decoded = decode_video(path)
        for frame in decoded:
            frames[frame.index] = torch.from_numpy(frame.rgb)
            starts = [t for t in frames if t + stride in frames]
            if len(starts) == self.batch_size:  # the batch's first frames, with the frames after them still needed
                parts.append(self._label([frames[t] for t in starts], [frames[t + stride] for t in starts]))
                first_indices += starts
                frames = {t: pixels for t, pixels in frames.items() if t > starts[-1]}
        starts = [t for t in frames if t + stride in frames]
        if starts:
            parts.append(self._label([frames[t] for t in starts], [frames[t + stride] for t in starts]))
            first_indices += starts
        if not parts:
            raise MediaError(path, f"has fewer than {stride + 1} frames: no pair (t, t + {stride})")
        labels = {name: np.concatenate([part[name] for part in parts]) for name in LATENT_ACTION_COLUMNS}
        labels["frame_index"] = np.asarray(first_indices, dtype=np.int64)
        labels["next_frame_index"] = labels["frame_index"] + stride
        return labels

    def label_batch(self, batch: dict[str, Any], first: str, second: str | None = None) -> dict[str, np.ndarray]:
        """`label_pairs` of a batch's columns `first` and `second`; with `second=None`, `first` holds both frames on a
        time axis of 2 after the batch axis (LeRobotDataset with `delta_timestamps={first: [0, k / fps]}`)."""
        for key in (first, second):
            if key is not None and key not in batch:
                raise LaryError(f"the batch has no key {key!r}; its keys: {sorted(batch)}")
        if second is not None:
            return self.label_pairs(batch[first], batch[second])
        frames = batch[first]
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            if frames.ndim != 5 or frames.shape[1] != 2:
                raise LaryError(
                    f"batch[{first!r}] has shape {tuple(frames.shape)}: with one key, each item holds its two frames on a "
                    f"time axis of 2, (B, 2, C, H, W) or (B, 2, H, W, C), as LeRobotDataset gives with "
                    f"delta_timestamps={{{first!r}: [0, k / fps]}}; or name the second frame's key too"
                )
            return self.label_pairs(frames[:, 0], frames[:, 1])
        bad = next((i for i, item in enumerate(frames) if len(item) != 2), None)
        if bad is not None:
            raise LaryError(f"batch[{first!r}][{bad}] holds {len(frames[bad])} frames; with one key each item holds a pair")
        return self.label_pairs([item[0] for item in frames], [item[1] for item in frames])

    def datasets_map(self, first: str, second: str | None = None) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
        """A function for 🤗 `Dataset.map(..., batched=True)` that adds the columns `action_indices`, `latent_actions`
        and `continuous_latent_actions` from the frame columns `first` and `second` (see `label_batch`)."""

        def add_latent_actions(batch: dict[str, Any]) -> dict[str, np.ndarray]:
            return self.label_batch(batch, first, second)

        return add_latent_actions

    def collate(
        self, first: str, second: str | None = None, base_collate: Callable[[list], Any] | None = None
    ) -> Callable[[list], dict[str, Any]]:
        """A `collate_fn` for a PyTorch `DataLoader`: `base_collate` (default `torch.utils.data.default_collate`), then
        the batch's latent actions (see `label_batch`) added as CPU tensors under `action_indices`, `latent_actions`
        and `continuous_latent_actions`. It runs the model where the collate runs: with a GPU model keep
        `num_workers=0`, or collate in the workers and call `label_batch` in the main process."""
        base = base_collate or torch.utils.data.default_collate

        def collate_with_latent_actions(samples: list) -> dict[str, Any]:
            batch = base(samples)
            batch.update({name: torch.from_numpy(value) for name, value in self.label_batch(batch, first, second).items()})
            return batch

        return collate_with_latent_actions

    def _frames(self, frames: Any, name: str) -> list[torch.Tensor]:
        """Any accepted frames as a list of uint8 (H, W, 3) CPU tensors."""
        if isinstance(frames, (torch.Tensor, np.ndarray)):
            if frames.ndim != 4:
                raise LaryError(
                    f"{name} has shape {tuple(frames.shape)}: pass a batch of frames, (N, H, W, 3) or (N, 3, H, W), or a list"
                )
            frames = list(frames)
        if not isinstance(frames, Sequence) or isinstance(frames, (str, bytes)):
            raise LaryError(f"{name} must be a list or a batch of frames; got {type(frames).__name__}")
        converted = []
        for index, frame in enumerate(frames):
            where = f"{name}[{index}]"
            if isinstance(frame, FILE_LIKE):
                frame = read_image(frame, where)
            if isinstance(frame, np.ndarray):  # as a tensor: (3, H, W) and float in [0, 1] too
                frame = torch.from_numpy(np.ascontiguousarray(frame))
            try:
                converted.append(self.processor.to_uint8(frame, where))
            except ValueError as error:
                raise LaryError(str(error)) from None
        return converted

    def _label(self, first: list[torch.Tensor], second: list[torch.Tensor]) -> dict[str, np.ndarray]:
        """One batch of pairs as `lary extract` computes a clip's: frames resized together where their sizes agree
        (on the model's device), then frame `i` paired with frame `i + len(first)`."""
        frames = first + second
        pixels: list[torch.Tensor | None] = [None] * len(frames)
        for shape in dict.fromkeys(frame.shape for frame in frames):
            positions = [k for k, frame in enumerate(frames) if frame.shape == shape]
            stacked = torch.stack([frames[k] for k in positions]).to(self.device, non_blocking=True)
            for k, resized in zip(positions, self.processor.resize(stacked)):
                pixels[k] = resized
        piece = Piece(sample=0, frame_indices=np.arange(len(frames)), times=np.full(len(frames), np.nan),
                      pixels=torch.stack(pixels), resized=True, stride=len(first))
        with exact_float32(self.device, self._extractor.dtype):
            return self._extractor.compute([piece])[0]
