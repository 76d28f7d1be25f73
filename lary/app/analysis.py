"""What the page computes, without Gradio: a video's frame range to latent actions, the "what if" decoding, the
downloads.

Frames come through `lary.frames` (probe, then decode only the requested range, seeking to its first frame) and the
model's processor, like every other command. The model runs as every way in runs it (`lary.runtime`: its dtype, its
thread policy; float32 without TF32 on a GPU): the clip's pixels through the model's windowed video forward
(`LapaDinov3Model.latent_actions_of_video`), each frame through the DINOv3 backbone once, a window of pairs
`(t, t + stride)` at a time so that a progress bar moves; what video mode (`pixel_values_videos`) computes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from lary.app.limits import MEGABYTE, Limits
from lary.errors import LaryError, MediaError
from lary import runtime
from lary.extract import rows
from lary.frames import decode_video, probe_video

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]  # (fraction done, what is being done)
PAIRS_PER_STEP = 64  # pairs per forward pass: bounds memory, moves the progress bar
THUMBNAIL_SIDE = 256  # longest side of the frames kept for display


def _silent(fraction: float, message: str) -> None:
    """The default `Progress`: nothing to show."""


@dataclass
class Clip:
    """The frames of one request: a video's frame range as model pixels, with display thumbnails."""

    name: str  # the file name: the rows' `id`, as `lary extract` names a single video
    num_frames: int  # of the whole video
    fps: float
    width: int
    height: int
    frame_indices: np.ndarray  # (F,) int64, frame numbers in the video
    times: np.ndarray  # (F,) float64 seconds, NaN where unknown
    pixels: torch.Tensor  # (F, 3, S, S) uint8, the processor's resize
    thumbnails: list[np.ndarray]  # (h, w, 3) uint8, aspect kept
    note: str = ""  # why fewer frames were read than the video has


@dataclass
class Analysis:
    """A clip's latent actions: one row per pair `(t, t + stride)` of its frames."""

    clip: Clip
    stride: int
    action_indices: np.ndarray  # (pairs, n) int64
    latent_actions: np.ndarray  # (pairs, n, D) float32
    continuous_latent_actions: np.ndarray  # (pairs, n, q) float32
    codebook_size: int
    seconds: float

    @property
    def pairs(self) -> int:
        return len(self.action_indices)

    @property
    def nbytes(self) -> int:
        """The memory its arrays hold: the frames (pixels, thumbnails) and the latent actions."""
        clip = self.clip
        arrays = (clip.frame_indices, clip.times, *clip.thumbnails, self.action_indices, self.latent_actions,
                  self.continuous_latent_actions)
        return clip.pixels.nbytes + sum(array.nbytes for array in arrays)

    def frame_numbers(self, pair: int) -> tuple[int, int]:
        """The video frame numbers a pair joins."""
        return int(self.clip.frame_indices[pair]), int(self.clip.frame_indices[pair + self.stride])


@dataclass
class WhatIf:
    """The decoder's prediction of a pair's next-frame features for chosen codes, beside the real features."""

    codes: list[int]
    frames: tuple[int, int]  # video frame numbers: first, next
    first_image: np.ndarray  # thumbnails
    next_image: np.ndarray
    real: np.ndarray  # (h, w, D) DINOv3 features of the next frame
    predicted: np.ndarray  # (h, w, D) for `codes`
    mse: float  # predicted vs real
    own_codes_mse: float  # the prediction from the pair's own codes vs real
    copy_mse: float  # the first frame's features vs real: "nothing moves"


def frame_range(num_frames: int, first: int | None, last: int | None, max_frames: int) -> tuple[int, int, str]:
    """`[start, stop)` of the frames to read, and a note when an open range was cut to `max_frames`.

    `first` defaults to 0; `last` (inclusive; None or 0, which is never a last frame) to as many frames as the limit
    allows. An explicit range longer than the limit is refused.
    """
    start = 0 if first is None else int(first)
    if not 0 <= start < num_frames:
        raise LaryError(f"first frame {start} is outside the video (frames 0 to {num_frames - 1})")
    if not last:  # a number box cannot be left empty in the page: 0 stands for "open"
        stop = min(num_frames, start + max_frames)
        if stop == num_frames:
            return start, stop, ""
        return start, stop, (
            f"read frames {start} to {stop - 1} of {num_frames}: at most {max_frames} per request (set the frame range "
            "to see others)"
        )
    last = int(last)
    if last <= start:
        raise LaryError(f"last frame {last} must come after first frame {start}")
    note = ""
    if last >= num_frames:
        note = f"the video ends at frame {num_frames - 1}"
        last = num_frames - 1
    if last - start + 1 > max_frames:
        raise LaryError(
            f"frames {start} to {last} are {last - start + 1} frames; this page reads at most {max_frames} per request: "
            "narrow the range (`lary extract` runs whole videos)"
        )
    return start, last + 1, note


def thumbnail(rgb: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A display copy of a frame, its longest side at most `side` pixels."""
    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.Resampling.BICUBIC)
    return np.asarray(image)


def _renamed(error: MediaError, path: str | Path, name: str) -> MediaError:
    """The error with the upload's temporary path replaced by the file's name."""
    return MediaError(name, error.reason.replace(str(path), name))


def _check_file(path: str | Path, name: str, limits: Limits) -> None:
    try:
        size = Path(path).stat().st_size
    except OSError:
        raise MediaError(name, "missing (the upload did not arrive; try again)") from None
    if size > limits.max_file_mb * MEGABYTE:
        raise LaryError(f"{name} is {size / MEGABYTE:.1f} MB; this page takes files up to {limits.max_file_mb} MB")


def read_clip(
    path: str | Path,
    processor,
    limits: Limits,
    first: int | None = None,
    last: int | None = None,
    progress: Progress = _silent,
) -> Clip:
    """Probe the video, check it against `limits`, and decode only frames `first..last` (see `frame_range`)."""
    name = Path(path).name
    _check_file(path, name, limits)
    try:
        info = probe_video(path)
    except MediaError as error:
        raise _renamed(error, path, name) from None
    if info.num_frames < 2:
        raise LaryError(f"{name} has {info.num_frames} frame(s); latent actions need at least two (a pair)")
    if info.width * info.height > limits.max_pixels:
        raise LaryError(
            f"{name} is {info.width}x{info.height} ({info.width * info.height:,} pixels a frame); this page takes frames "
            f"up to {limits.max_pixels:,} pixels: scale the video down first"
        )
    start, stop, note = frame_range(info.num_frames, first, last, limits.max_frames)
    count = stop - start

    thumbnails, indices, times = [], [], []
    broken: list[str] = []  # why decoding stopped early, if it did

    def decoded() -> Iterator[np.ndarray]:
        """The frames' RGB, noting each one's thumbnail, index and time; a video that breaks off keeps what it gave."""
        start_pts = int(info.pts[start]) if info.seekable else None
        try:
            for frame in decode_video(path, start, stop, start_pts=start_pts):
                thumbnails.append(thumbnail(frame.rgb))
                indices.append(frame.index)
                times.append(frame.time)
                progress(len(indices) / count, f"decoding frame {frame.index}")
                yield frame.rgb
        except MediaError as error:
            if len(indices) < 2:
                raise _renamed(error, path, name) from None
            broken.append(f"the video breaks off after frame {indices[-1]}")

    pixels = list(processor.resize_stream(decoded()))  # resized as decoded: one chunk at full size at a time
    if broken:
        note = broken[0]
    if len(indices) < 2:
        raise MediaError(name, f"{len(indices)} of its frames could be decoded; latent actions need two")
    if len(indices) < count and not note:
        note = f"the video ends after frame {indices[-1]}"
    return Clip(
        name=name, num_frames=info.num_frames, fps=info.fps, width=info.width, height=info.height,
        frame_indices=np.asarray(indices, dtype=np.int64), times=np.asarray(times, dtype=np.float64),
        pixels=torch.stack(pixels), thumbnails=thumbnails, note=note,
    )


def parse_codes(text: str | None, count: int, codebook_size: int) -> list[int]:
    """'3 1 0 7' (or with commas, brackets) -> [3, 1, 0, 7], checked: `count` codes in `[0, codebook_size)`."""
    text = (text or "").strip()
    expected = f"{count} whole numbers from 0 to {codebook_size - 1}, separated by spaces"
    if not re.fullmatch(r"[\[\](),\s\d-]*", text):
        raise LaryError(f"codes must be {expected}; got {text!r}")
    codes = [int(value) for value in re.findall(r"-?\d+", text)]
    if len(codes) != count or any(not 0 <= code < codebook_size for code in codes):
        raise LaryError(f"codes must be {expected}; got {text!r}")
    return codes


class Analyzer:
    """One LAPA-DINOv3 model and its processor, loaded once and shared by every request (and thread)."""

    def __init__(
        self, model: str | Path, limits: Limits | None = None, device: str | None = None, allow_missing_weights: bool = False
    ):
        self.name = str(model)
        self.allow_missing_weights = allow_missing_weights
        self.limits = limits or Limits()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._lock = threading.Lock()
        self._loaded = None

    def load(self) -> runtime.LatentActionRuntime:
        """The model and its processor (`lary.runtime.LatentActionRuntime`), loaded on first use."""
        with self._lock:
            if self._loaded is None:
                logger.info("loading %s on %s", self.name, self.device)
                model = runtime.load_model(self.name, "float32", self.device,
                                           allow_missing_weights=self.allow_missing_weights)
                self._loaded = runtime.LatentActionRuntime(model, self.name, PAIRS_PER_STEP)
        return self._loaded

    @property
    def model(self):
        return self.load().model

    @property
    def processor(self):
        return self.load().processor

    @torch.inference_mode()
    def analyse(
        self,
        path: str | Path,
        stride: int = 1,
        first: int | None = None,
        last: int | None = None,
        progress: Progress = _silent,
    ) -> Analysis:
        """Latent actions of every pair `(t, t + stride)` in frames `first..last` of a video, within the limits."""
        began = time.perf_counter()
        stride = int(stride)
        if stride < 1:
            raise LaryError(f"stride must be a positive integer; got {stride}")
        model = self.model
        # decoding is cheap next to the model: the first 20% of the bar
        clip = read_clip(path, self.processor, self.limits, first, last, lambda f, m: progress(0.2 * f, m))
        frames = len(clip.frame_indices)
        if stride >= frames:
            raise LaryError(f"stride {stride} needs at least {stride + 1} frames; frames {clip.frame_indices[0]} to "
                            f"{clip.frame_indices[-1]} are {frames}")

        pairs, outputs, done = frames - stride, [], 0
        # the clip is in memory (within the frame limit): windows carry any stride, each frame through DINOv3 once
        windows = model.latent_actions_of_video(clip.pixels, stride, pairs_per_window=max(PAIRS_PER_STEP, stride))
        progress(0.2, f"latent actions of {pairs} pairs")
        with runtime.torch_threads():
            for output in windows:
                outputs.append(runtime.to_numpy({name: output[name] for name in runtime.LATENT_ACTION_COLUMNS}))
                done += len(outputs[-1]["action_indices"])
                progress(0.2 + 0.8 * done / pairs, f"latent actions of pairs 1-{done} of {pairs}")
        analysis = Analysis(
            clip=clip,
            stride=stride,
            codebook_size=model.config.codebook_size,
            seconds=time.perf_counter() - began,
            **{name: np.concatenate([output[name] for output in outputs]) for name in runtime.LATENT_ACTION_COLUMNS},
        )
        logger.info("%s: %d pairs in %.1f s", clip.name, analysis.pairs, analysis.seconds)
        return analysis

    @torch.inference_mode()
    def what_if(self, analysis: Analysis, pair: int, codes: list[int]) -> WhatIf:
        """The next-frame features the decoder predicts from pair `pair`'s first frame and `codes`."""
        pair = int(pair)
        if not 0 <= pair < analysis.pairs:
            raise LaryError(f"pair {pair} is outside the clip's pairs (0 to {analysis.pairs - 1})")
        first, second = pair, pair + analysis.stride
        computing = self.load()
        features = computing.features(analysis.clip.pixels[[first, second]])
        both_codes = torch.tensor([codes, analysis.action_indices[pair].tolist()], device=self.device)
        with runtime.exact_float32(computing.device, computing.dtype):
            predicted, own = self.model.decode_actions(both_codes, first_features=features[:1].expand(2, -1, -1, -1))
        real = features[1]

        def mse(a: torch.Tensor) -> float:
            return float((a.float() - real.float()).pow(2).mean())

        return WhatIf(
            codes=list(codes), frames=analysis.frame_numbers(pair),
            first_image=analysis.clip.thumbnails[first], next_image=analysis.clip.thumbnails[second],
            real=real.float().cpu().numpy(), predicted=predicted.float().cpu().numpy(),
            mse=mse(predicted), own_codes_mse=mse(own), copy_mse=mse(features[0]),
        )


def pair_table(analysis: Analysis) -> pa.Table:
    """The rows `lary extract --videos` writes for this clip (pair layout): one per pair, the same columns."""
    clip, stride, pairs = analysis.clip, analysis.stride, analysis.pairs
    columns = {
        "id": [clip.name] * pairs,
        "frame_index": clip.frame_indices[:pairs],
        "next_frame_index": clip.frame_indices[stride:],
        "timestamp": clip.times[:pairs],
        "next_timestamp": clip.times[stride:],
        "action_indices": analysis.action_indices,
        "latent_actions": analysis.latent_actions,
        "continuous_latent_actions": analysis.continuous_latent_actions,
    }
    return rows.table(columns, rows.pair_schema(rows.latent_action_types()))


def write_downloads(analysis: Analysis, folder: Path) -> tuple[Path, Path]:
    """`<video>_latent_actions.parquet` and `.json` (a list of row objects, the same columns) in `folder`."""
    table = pair_table(analysis)
    stem = re.sub(r"[^\w.-]+", "_", Path(analysis.clip.name).stem) or "video"
    parquet, json_path = folder / f"{stem}_latent_actions.parquet", folder / f"{stem}_latent_actions.json"
    pq.write_table(table, parquet)
    with open(json_path, "w") as file:
        json.dump(table.to_pylist(), file)
    return parquet, json_path
