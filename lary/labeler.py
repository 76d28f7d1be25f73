"""Latent actions as labels inside a training pipeline: frame pairs in, LAPA-DINOv3 codes out, on the model's device.

    labeler = LatentActionLabeler.from_pretrained("AGI-Eval/LAPA-DINOv3", dtype="bfloat16")
    labels = labeler.label_pairs(first_frames, second_frames)          # {"action_indices": (N, n) int64, ...}
    clip = labeler.label_video("clip.mp4", stride_seconds=0.6)         # pairs (t, t + round(0.6 x fps))
    dataset = dataset.map(labeler.datasets_map(first="frame", second="next_frame"), batched=True, batch_size=64)
    loader = DataLoader(lerobot_dataset, batch_size=32, collate_fn=labeler.collate("observation.images.top"))
    for batch in labeler.labelled(DataLoader(lerobot_dataset, num_workers=8), "observation.images.top"): ...

Frames go the way `lary extract` takes them (`lary.runtime.LatentActionRuntime`; a video through the model's windowed
forward, `LapaDinov3Model.latent_actions_of_video`): the processor's resize to uint8 model pixels (on the GPU when the
model is there), every distinct frame through the backbone once, then the pairs; so the same frames give the same codes
as `lary extract`. Float frames in [0, 1] (LeRobot's `(C, H, W)` tensors) are rounded
to 8 bits first (`LapaDinov3Processor.to_uint8`): a frame decoded to uint8 and divided by 255 comes back exactly, so a
LeRobot batch gives the codes of its decoded frames.

A labeler made by `from_pretrained` goes to other processes as what loads it (`LabelerSpec`: the model's name and
weights' identity, dtype, device, processor, batch size), never as its weights: a DataLoader worker or a
`datasets.map` process loads the model once, when it unpickles the labeler (a forked one finds the parent's), whatever
the start method. The same spec is the `datasets` fingerprint of `datasets_map`: a map is served from the cache until
the model, its weights, dtype or processor change.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lary import runtime
from lary.errors import LaryError, MediaError
from lary.frames import decode_video, probe_video, read_image, stride_frames
from lary.runtime import LATENT_ACTION_COLUMNS, LatentActionRuntime, to_numpy

FILE_LIKE = (str, Path, bytes, dict)  # read as image files (a 🤗 `datasets` Image value is a dict)


@dataclass(frozen=True)
class LabelerSpec:
    """What loads a labeler again in another process, and what determines its codes."""

    name_or_path: str
    identity: str | None  # `lary.runtime.model_identity`: the weights' sha256 (a folder) or the Hub commit
    dtype: str  # resolved: "auto" is what it chose here
    device: str
    batch_size: int
    allow_missing_weights: bool
    processor: tuple[tuple[str, Any], ...]  # the saved processor's settings (size, resample)


# one model per process and spec, while something uses it (a labeler dropped by its user is not kept alive here)
_process_labelers: weakref.WeakValueDictionary[LabelerSpec, LatentActionLabeler] = weakref.WeakValueDictionary()
_process_lock = threading.RLock()  # `from_pretrained` registers under it while `labeler_for` holds it


def labeler_for(spec: LabelerSpec) -> LatentActionLabeler:
    """This process's labeler for `spec`, loaded on first use (how a pickled labeler comes back in a worker)."""
    with _process_lock:
        labeler = _process_labelers.get(spec)
        if labeler is None:
            labeler = LatentActionLabeler.from_pretrained(spec.name_or_path, spec.device, spec.dtype, spec.batch_size,
                                                          spec.allow_missing_weights)
            if labeler.spec != spec:
                raise LaryError(f"{spec.name_or_path} is not the model the labeler was made with (its weights or "
                                "processor changed since): make the labeler again")
        return labeler


class VideoFrames:
    """A video file's RGB frames in presentation order (`lary.frames.decode_video`), decoded from the start by each
    `iter()`: the model's windowed forward reads a long stride's pairs with two."""

    def __init__(self, path: str | Path):
        self.path = path

    def __iter__(self) -> Iterator[np.ndarray]:
        return (frame.rgb for frame in decode_video(self.path))


def _content_key(frame: torch.Tensor) -> tuple:
    """Equal frames have equal keys: a frame given twice (the pairs of a clip) goes through the backbone once."""
    return tuple(frame.shape), hashlib.blake2b(frame.numpy().tobytes(), digest_size=16).digest()


class LatentActionLabeler:
    """LAPA-DINOv3 latent actions of frame pairs, batched on the model's device, without gradients.

    Frames may be PIL images, (H, W, 3) uint8 numpy arrays, (3, H, W) or (H, W, 3) tensors (uint8, or float in
    [0, 1], rounded to 8 bits), image files (paths, bytes, 🤗 `datasets` Image values), as lists or as batched
    arrays (N, H, W, 3) / tensors (N, 3, H, W); frames of different sizes may be mixed.

    Args:
        model: a `LapaDinov3Model` in eval mode.
        name_or_path: where its processor is saved (`preprocessor_config.json`: size, resample); default
            `model.name_or_path`, else the default processor at the backbone's size.
        batch_size: pairs per forward pass (each distinct frame goes through the backbone once).
    """

    def __init__(self, model, name_or_path: str | Path | None = None, batch_size: int = 32):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise LaryError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.model = model.eval()
        self.batch_size = int(batch_size)
        self.runtime = LatentActionRuntime(model, str(name_or_path or model.name_or_path), self.batch_size)
        self.processor = self.runtime.processor
        self.spec: LabelerSpec | None = None  # set by `from_pretrained`: a labeler of a model in memory stays here

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
        dtype = runtime.resolve_dtype(runtime.dtype_name(dtype), device)
        model = runtime.load_model(name_or_path, dtype, device, allow_missing_weights=allow_missing_weights,
                                   naming=runtime.API)
        labeler = cls(model, name_or_path, batch_size)
        processor = (("resample", labeler.processor.resample), ("size", labeler.processor.size))
        labeler.spec = LabelerSpec(str(name_or_path), runtime.model_identity(name_or_path, model), dtype, str(device),
                                   labeler.batch_size, allow_missing_weights, processor)
        with _process_lock:
            _process_labelers.setdefault(labeler.spec, labeler)  # forked workers find it loaded
        return labeler

    def __reduce__(self):
        """Pickled as its `LabelerSpec` (a few names), loaded once in the process that unpickles it."""
        if self.spec is None:
            raise LaryError(
                "a LatentActionLabeler made from a model in memory cannot go to another process (DataLoader workers "
                "under spawn or forkserver, datasets.map with num_proc) nor be fingerprinted by datasets: make it with "
                "LatentActionLabeler.from_pretrained(name_or_path), or label in this process"
            )
        return labeler_for, (self.spec,)

    @property
    def config(self):
        """The model's `LapaDinov3Config` (`codebook_size`, `code_seq_len`: what `LatentActionTokens.add_to` reads)."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def label_pairs(self, first_frames: Any, second_frames: Any) -> dict[str, np.ndarray]:
        """The latent actions of the pairs `(first_frames[i], second_frames[i])`: `action_indices` (N, n) int64,
        `latent_actions` (N, n, D) and `continuous_latent_actions` (N, n, q) float32 numpy arrays. A frame that
        appears more than once (the pairs of one clip) goes through the backbone once."""
        first = self._frames(first_frames, "first_frames")
        second = self._frames(second_frames, "second_frames")
        if len(first) != len(second):
            raise LaryError(f"{len(first)} first frames but {len(second)} second frames: each pair needs one of each")
        if not first:
            raise LaryError("no frame pairs to label")
        parts, previous = [], {}
        with runtime.torch_threads():
            for a in range(0, len(first), self.batch_size):
                values, previous = self._label(first[a : a + self.batch_size], second[a : a + self.batch_size], previous)
                parts.append(values)
        return {name: np.concatenate([part[name] for part in parts]) for name in LATENT_ACTION_COLUMNS}

    def label_video(
        self, path: str | Path, stride: int | None = None, stride_seconds: float | None = None
    ) -> dict[str, np.ndarray]:
        """Every pair `(t, t + k)` of a video file, decoded as `lary extract --videos` decodes it, through the model's
        windowed video forward (`LapaDinov3Model.latent_actions_of_video`): windows of `batch_size` pairs, every frame
        through the backbone once (a window hands the next the features of its last k frames; memory holds a window).
        A k above `batch_size` is not carried: the video is decoded twice, from frame 0 and from frame k. k = `stride`
        frames (default 1), or `stride_seconds` S at the video's own rate, k = round(S x fps) (`lary extract
        --stride-seconds`). The arrays of `label_pairs`, with each pair's `frame_index` and `next_frame_index` (N,)
        int64."""
        stride = self._stride(path, stride, stride_seconds)
        windows = self.model.latent_actions_of_video(VideoFrames(path), stride, self.processor, self.batch_size)
        with runtime.torch_threads():
            parts = [to_numpy({name: output[name] for name in LATENT_ACTION_COLUMNS}) for output in windows]
        if not parts:
            raise MediaError(path, f"has fewer than {stride + 1} frames: no pair (t, t + {stride})")
        labels = {name: np.concatenate([part[name] for part in parts]) for name in LATENT_ACTION_COLUMNS}
        labels["frame_index"] = np.arange(len(labels["action_indices"]), dtype=np.int64)
        labels["next_frame_index"] = labels["frame_index"] + stride
        return labels

    @staticmethod
    def _stride(path: str | Path, stride: Any, stride_seconds: Any) -> int:
        """`label_video`'s k, its arguments checked: a whole number of frames, or a finite positive number of seconds."""
        if stride is not None and stride_seconds is not None:
            raise LaryError("give stride (frames) or stride_seconds, not both")
        if stride_seconds is not None:
            if isinstance(stride_seconds, bool) or not isinstance(stride_seconds, numbers.Real) \
                    or not math.isfinite(stride_seconds) or stride_seconds <= 0:
                raise LaryError(f"stride_seconds={stride_seconds!r}: it must be a positive, finite number of seconds")
            return stride_frames(float(stride_seconds), probe_video(path).fps, str(path))
        stride = 1 if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
            raise LaryError(f"stride={stride!r}: it must be a positive whole number of frames (stride_seconds takes "
                            "seconds)")
        return int(stride)

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

    def datasets_map(self, first: str, second: str | None = None) -> LatentActionMap:
        """A function for 🤗 `Dataset.map(..., batched=True)` that adds the columns `action_indices`, `latent_actions`
        and `continuous_latent_actions` from the frame columns `first` and `second` (see `label_batch`). Its
        fingerprint is the labeler's `LabelerSpec` and the columns: the map is served from the cache until one changes;
        with `num_proc=N` each process loads the model once."""
        return LatentActionMap(self, first, second)

    def collate(
        self, first: str, second: str | None = None, base_collate: Callable[[list], Any] | None = None
    ) -> LatentActionCollate:
        """A `collate_fn` for a PyTorch `DataLoader`: `base_collate` (default `torch.utils.data.default_collate`), then
        the batch's latent actions (see `label_batch`) added as CPU tensors under `action_indices`, `latent_actions`
        and `continuous_latent_actions`. It runs the model where the collate runs: in each worker with
        `num_workers > 0` (any start method; each worker loads the model once). With
        a GPU model label in the main process instead: `labelled(loader, ...)`."""
        return LatentActionCollate(self, first, second, base_collate)

    def labelled(self, batches: Iterable[dict[str, Any]], first: str, second: str | None = None) -> LabelledBatches:
        """The batches of `batches` (a DataLoader whose workers decode and collate) with their latent actions added
        here, in the main process, on the labeler's device: how a GPU model labels while workers load the data."""
        return LabelledBatches(self, batches, first, second)

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
                frame = self.processor.to_uint8(frame, where)
            except ValueError as error:
                raise LaryError(str(error)) from None
            if frame.shape[0] == 0 or frame.shape[1] == 0:
                raise LaryError(f"{where} is {frame.shape[1]}x{frame.shape[0]} pixels: a frame needs at least one")
            converted.append(frame)
        return converted

    def _label(
        self, first: list[torch.Tensor], second: list[torch.Tensor], previous: dict[tuple, torch.Tensor]
    ) -> tuple[dict[str, np.ndarray], dict[tuple, torch.Tensor]]:
        """One batch of pairs: each distinct frame through the backbone once (those of the previous batch, `previous`,
        not again), then the pairs. Returns the latent actions and this batch's features by frame."""
        keys = [_content_key(frame) for frame in first + second]
        distinct = list(dict.fromkeys(keys))
        new = [key for key in distinct if key not in previous]
        frame_of = dict(zip(keys, first + second))
        features_of = {key: previous[key] for key in distinct if key in previous}
        if new:
            pixels = self.processor.resize([frame_of[key] for key in new], self.device)
            features_of.update(zip(new, self.runtime.features(pixels)))
        features = torch.stack([features_of[key] for key in distinct])
        position = {key: k for k, key in enumerate(distinct)}
        index = torch.tensor([position[key] for key in keys])
        values = self.runtime.latent_actions(features, index[: len(first)], index[len(first) :])
        return to_numpy(values), features_of


class LatentActionMap:
    """`LatentActionLabeler.datasets_map`'s function: picklable (the labeler as its `LabelerSpec`), so `datasets`
    hashes it to the same fingerprint in every session and sends it to `num_proc` processes."""

    def __init__(self, labeler: LatentActionLabeler, first: str, second: str | None):
        self.labeler, self.first, self.second = labeler, first, second

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return self.labeler.label_batch(batch, self.first, self.second)


class LatentActionCollate:
    """`LatentActionLabeler.collate`'s `collate_fn`: picklable (the labeler as its `LabelerSpec`, loaded once per
    worker), so it works with `num_workers > 0` under fork, spawn and forkserver."""

    def __init__(self, labeler: LatentActionLabeler, first: str, second: str | None, base_collate: Callable | None):
        self.labeler, self.first, self.second, self.base_collate = labeler, first, second, base_collate

    def __call__(self, samples: list) -> dict[str, Any]:
        batch = (self.base_collate or torch.utils.data.default_collate)(samples)
        return _with_latent_actions(self.labeler, batch, self.first, self.second)


class LabelledBatches:
    """`LatentActionLabeler.labelled`: a loader's batches, labelled in this process as they come."""

    def __init__(self, labeler: LatentActionLabeler, batches: Iterable[dict[str, Any]], first: str, second: str | None):
        self.labeler, self.batches, self.first, self.second = labeler, batches, first, second

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.batches:
            yield _with_latent_actions(self.labeler, batch, self.first, self.second)


def _with_latent_actions(labeler: LatentActionLabeler, batch: dict[str, Any], first: str, second: str | None) -> dict:
    batch.update({name: torch.from_numpy(value) for name, value in labeler.label_batch(batch, first, second).items()})
    return batch
