"""Processor of LAPA-DINOv3: frame pairs and clips to square pixels in [-1, 1], as LARYBench preprocesses them.

The default resize reproduces LARYBench's LAPA-DINOv3 preprocessing (OpenCV `cv2.resize(frame, (size, size),
interpolation=cv2.INTER_CUBIC)` on 8-bit RGB, then /255): bicubic with a = -0.75 and half-pixel centres, no
antialiasing, rounded to 8 bits. It runs in torch on the frames' device (CPU or GPU) and agrees with OpenCV within one
grey level. Only PIL, numpy and torch are used (no torchvision, no OpenCV).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import Pipeline
from transformers.image_processing_base import BatchFeature, ImageProcessingMixin

Frame = Any  # PIL.Image.Image | np.ndarray (H, W, 3) uint8 | torch.Tensor (3, H, W) or (H, W, 3), uint8 or float in [0, 1]

# "bicubic": LARYBench's OpenCV INTER_CUBIC (no antialiasing); "pil_bicubic_antialias": PIL's bicubic, which widens its
# filter when downsampling (smoother frames, other codes than the reference on detailed footage).
RESAMPLES = ("bicubic", "pil_bicubic_antialias")
# Values converted to float at once while resizing: on CPU about one 480x640 frame, so the float copy is a buffer the
# allocator reuses (a 16-frame copy was a fresh 60 MB mapping each call, and its page faults made the resize 1.7x
# slower); on a GPU, where memory is reused by torch's allocator, many frames per kernel launch.
RESIZE_CHUNK_VALUES = {"cpu": 2**20, "cuda": 2**26}
EXIF_ORIENTATION = 0x0112  # the EXIF tag (`ExifTags.Base.Orientation` from Pillow 9.3)


class LapaDinov3ProcessorKwargs(TypedDict, total=False):
    size: int
    stride: int
    resample: str
    return_tensors: str


def resize_frames(frames: torch.Tensor, size: int, resample: str = "bicubic") -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> uint8 (N, 3, size, size), on the frames' device; frames already that size are not
    resampled."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3); got {frames.dtype} {tuple(frames.shape)}")
    channels_first = frames.permute(0, 3, 1, 2)
    if tuple(frames.shape[1:3]) == (size, size):
        return channels_first.contiguous()
    if resample == "pil_bicubic_antialias":
        resized = [
            np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))
            for frame in frames.cpu().numpy()
        ]
        return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).to(frames.device)
    if resample != "bicubic":
        raise ValueError(f"resample={resample!r} is not one of {RESAMPLES}")
    # transposed while still uint8 (a quarter of the bytes), then resampled from contiguous float planes: 12% faster
    # than converting the channels-last view, with the same numbers
    chunk_frames = max(1, RESIZE_CHUNK_VALUES.get(frames.device.type, RESIZE_CHUNK_VALUES["cuda"]) // frames[0].numel())
    chunks = [
        F.interpolate(chunk.contiguous().float(), size=(size, size), mode="bicubic", align_corners=False, antialias=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in channels_first.split(chunk_frames)
    ]
    return torch.cat(chunks)


def _writable_tensor(frame: np.ndarray) -> torch.Tensor:
    """A numpy frame as a tensor, sharing its memory where torch can (not a negatively strided or read-only view)."""
    frame = np.ascontiguousarray(frame)
    return torch.from_numpy(frame if frame.flags.writeable else frame.copy())


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]: x / 255, then 2x - 1 (the backbone's input range), on their device."""
    return pixels.float().div_(255).mul_(2).sub_(1)


def rgb8(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8 RGB, as OpenCV's `imread` (LARYBench's reader) gives it.

    16-bit grey (`I;16`, `I;16B`, `I;16L`, and `I`, as which older Pillow opens them) keeps its high byte (`>> 8`, as
    libpng's `png_set_strip_16` in OpenCV, and as Pillow reads 16-bit RGB), where PIL's own conversion clips every
    value above 255 to white. Float images (`F`) are taken as 0..1. Alpha is dropped (the colour under it stays);
    palettes, 1-bit, CMYK and other modes go through PIL's conversion. An EXIF orientation is applied, as `imread`
    applies it (JPEG, PNG, WebP; 8- and 16-bit). A float image holding NaN or infinity is refused (ValueError).
    """
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # checked first: exif_transpose copies every image
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        grey = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():  # NaN would become 0, a black frame's codes
            raise ValueError("the float image holds NaN or infinity")
        grey = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    elif image.mode in ("P", "PA"):  # through RGBA: PIL warns on a palette's transparency going straight to RGB
        return np.asarray(image.convert("RGBA").convert("RGB"))
    else:
        return np.asarray(image.convert("RGB"))
    return np.repeat(grey[..., None], 3, axis=-1)


class LapaDinov3Processor(ImageProcessingMixin):
    r"""
    Turns frame pairs (`images=[[f0, f1], ...]`) into `pixel_values` (batch, 2, 3, size, size) and equal-length clips
    (`videos=[frames, ...]`) into `pixel_values_videos` (batch, frames, 3, size, size) plus the pair `stride`.

    Frames are PIL images (any mode; converted to RGB), (H, W, 3) uint8 numpy arrays, or (3, H, W) / (H, W, 3) torch
    tensors (uint8, or float in [0, 1], which are rounded to 8 bits first, as video frames are). Each is resized to
    `size` x `size` (`resize`), then scaled to [0, 1] and mapped to `2x - 1` (`normalize`).

    Args:
        size (`int`, defaults to 224): the square input size of the backbone.
        stride (`int`, defaults to 1): frame distance of the pairs taken from clips.
        resample (`str`, defaults to `"bicubic"`): `"bicubic"` reproduces LARYBench (OpenCV INTER_CUBIC, no
            antialiasing, within one grey level); `"pil_bicubic_antialias"` is PIL's antialiased bicubic.
    """

    model_input_names = ["pixel_values", "pixel_values_videos"]
    valid_kwargs = LapaDinov3ProcessorKwargs

    def __init__(self, size: int = 224, stride: int = 1, resample: str = "bicubic", **kwargs):
        super().__init__(**kwargs)
        if resample not in RESAMPLES:
            raise ValueError(f"resample={resample!r} is not one of {RESAMPLES}")
        self.size = size
        self.stride = stride
        self.resample = resample

    def resize(
        self, frames: torch.Tensor | Sequence[torch.Tensor | np.ndarray], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """uint8 frames -> uint8 model pixels (N, 3, size, size) on `device` (default: where the frames are), resized
        there (a GPU resizes on the GPU). `frames` is a batch (N, H, W, 3), or a sequence of (H, W, 3) frames of any
        sizes: frames of one size are resized together, moved to `device` a chunk (`RESIZE_CHUNK_VALUES`) at a time."""
        if isinstance(frames, torch.Tensor):
            return resize_frames(frames if device is None else frames.to(device, non_blocking=True), self.size,
                                 self.resample)
        frames = [frame if isinstance(frame, torch.Tensor) else _writable_tensor(frame) for frame in frames]
        device = torch.device(device) if device is not None else frames[0].device if frames else torch.device("cpu")
        pixels = torch.empty((len(frames), 3, self.size, self.size), dtype=torch.uint8, device=device)
        chunk_values = RESIZE_CHUNK_VALUES.get(device.type, RESIZE_CHUNK_VALUES["cuda"])
        for shape in dict.fromkeys(frame.shape for frame in frames):
            positions = [k for k, frame in enumerate(frames) if frame.shape == shape]
            for chunk in torch.tensor(positions).split(max(1, chunk_values // math.prod(shape))):
                stacked = torch.stack([frames[k] for k in chunk.tolist()]).to(device, non_blocking=True)
                pixels[chunk.to(device)] = resize_frames(stacked, self.size, self.resample)
        return pixels

    def resize_stream(self, frames: Iterable[Frame], device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """Frames of any accepted type and size, resized as they are read: uint8 model pixels (3, size, size) on
        `device` (default: the CPU), one per frame, in order. A chunk of `RESIZE_CHUNK_VALUES` values is read before
        it is resized, so memory holds one chunk of frames at their own size, whatever the stream's length."""
        device = torch.device(device or "cpu")
        budget = RESIZE_CHUNK_VALUES.get(device.type, RESIZE_CHUNK_VALUES["cuda"])
        pending: list[torch.Tensor] = []
        values = 0
        for frame in frames:
            pending.append(self.to_uint8(frame))
            values += pending[-1].numel()
            if values >= budget:
                yield from self.resize(pending, device)
                pending, values = [], 0
        if pending:
            yield from self.resize(pending, device)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels from `resize` -> float32 in [-1, 1]."""
        return normalize_pixels(pixels)

    def __call__(
        self,
        images: Sequence[Sequence[Frame]] | None = None,
        videos: Sequence[Sequence[Frame]] | None = None,
        stride: int | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        if (images is None) == (videos is None):
            raise ValueError("pass either `images` (a list of [first, second] frame pairs) or `videos` (a list of clips)")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt'")
        if images is not None:
            groups = self._groups(images, "images", "pair")
            for index, pair in enumerate(groups):
                if len(pair) != 2:
                    raise ValueError(f"images[{index}] must be a pair of exactly two frames; got {len(pair)}")
            return BatchFeature({"pixel_values": self._stack(groups, "images")})

        stride = self.stride if stride is None else stride
        groups = self._groups(videos, "videos", "clip")
        for index, clip in enumerate(groups):
            if len(clip) <= stride:
                raise ValueError(f"videos[{index}] has {len(clip)} frames; stride {stride} needs at least {stride + 1}")
            if len(clip) != len(groups[0]):
                raise ValueError(
                    f"videos[{index}] has {len(clip)} frames but videos[0] has {len(groups[0])}: "
                    "clips in one batch must have the same length"
                )
        if stride < 1:
            raise ValueError(f"stride must be a positive integer; got {stride}")
        return BatchFeature({"pixel_values_videos": self._stack(groups, "videos"), "stride": int(stride)})

    @staticmethod
    def _groups(batch: Any, name: str, unit: str) -> list[Sequence[Frame]]:
        if isinstance(batch, (torch.Tensor, np.ndarray)) and batch.ndim == 5:
            batch = list(batch)
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or len(batch) == 0:
            raise ValueError(f"`{name}` must be a non-empty list of {unit}s; got {type(batch).__name__}")
        for index, group in enumerate(batch):
            if isinstance(group, Image.Image) or not isinstance(group, (Sequence, torch.Tensor, np.ndarray)):
                raise ValueError(f"{name}[{index}] must be a {unit} (a list of frames); got {type(group).__name__}")
        return [list(group) for group in batch]

    def _stack(self, groups: list[Sequence[Frame]], name: str) -> torch.Tensor:
        """Every frame resized and normalised; frames of one size are resized together."""
        frames = [self.to_uint8(frame, f"{name}[{i}][{j}]") for i, group in enumerate(groups) for j, frame in enumerate(group)]
        return self.normalize(self.resize(frames)).unflatten(0, (len(groups), -1))

    @staticmethod
    def to_uint8(frame: Frame, where: str = "frame") -> torch.Tensor:
        """One frame of any accepted type -> uint8 tensor (H, W, 3) on the CPU."""
        if isinstance(frame, Image.Image):
            return torch.from_numpy(np.array(rgb8(frame)))  # a writable copy
        if isinstance(frame, torch.Tensor):
            if frame.ndim == 3 and frame.shape[0] == 3 and frame.shape[-1] != 3:
                frame = frame.permute(1, 2, 0)
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"{where}: tensors must be (3, H, W) or (H, W, 3) RGB; got shape {tuple(frame.shape)}")
            frame = frame.detach().cpu()
            if frame.is_floating_point():
                if not torch.isfinite(frame).all():  # NaN compares false below and would become 0, a black frame
                    raise ValueError(f"{where}: float tensors must be finite; this one holds NaN or infinity")
                if frame.min() < 0 or frame.max() > 1:
                    raise ValueError(f"{where}: float tensors must hold values in [0, 1]")
                return frame.float().mul(255).round_().to(torch.uint8)
            if frame.dtype != torch.uint8:
                raise ValueError(f"{where}: integer tensors must be uint8; got {frame.dtype}")
            return frame.contiguous()
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"{where}: unsupported frame type {type(frame).__name__} (use PIL, numpy or torch)")
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"{where}: arrays must be (H, W, 3) RGB; got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"{where}: arrays must be uint8; got {frame.dtype}")
        return _writable_tensor(frame)


# Every save writes `auto_map` and this file, also when the class came from `lary` rather than remote code.
LapaDinov3Processor.register_for_auto_class("AutoProcessor")


def _is_frame(item: Any) -> bool:
    return isinstance(item, (Image.Image, str)) or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 3)


class LapaDinov3LatentActionPipeline(Pipeline):
    """`pipeline(model=...)` for latent actions: a list of frames in, per-pair codes and action vectors out.

    Two frames give one pair; more frames are a clip whose pairs are `(t, t + stride)`, `stride` the call's or else
    the saved processor's. Frames may be PIL images, numpy arrays, tensors or image file paths. Returns a dict of numpy arrays with a leading pair axis. A list of
    frame lists (or tuples) is a batch, one result each.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the processor saved with the model (its size, stride and resample), else the defaults at the backbone's size
        try:
            self.frame_processor = LapaDinov3Processor.from_pretrained(self.model.name_or_path)
        except OSError:
            self.frame_processor = LapaDinov3Processor(size=self.model.config.backbone_config.image_size)

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, list) and inputs and _is_frame(inputs[0]):
            return super().__call__(tuple(inputs), **kwargs)  # one list of frames is one sample, not a batch
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, stride: int | None = None, return_predicted_features: bool | None = None):
        forward = {} if return_predicted_features is None else {"return_predicted_features": return_predicted_features}
        return ({} if stride is None else {"stride": stride}), forward, {}

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """The model and its code, then the processor beside it: the folder loads with the same settings in
        `pipeline` and `AutoProcessor`."""
        super().save_pretrained(save_directory, **kwargs)
        self.frame_processor.save_pretrained(save_directory, **kwargs)

    def preprocess(self, frames: Sequence[Frame], stride: int | None = None) -> dict[str, Any]:
        """A pair, or a clip's pairs `(t, t + stride)` (the processor's stride unless given)."""
        frames = [Image.open(frame) if isinstance(frame, str) else frame for frame in frames]
        if len(frames) == 2:
            return dict(self.frame_processor(images=[frames]))
        return dict(self.frame_processor(videos=[frames], stride=stride))

    def _forward(self, inputs: dict[str, Any], return_predicted_features: bool = False):
        return self.model(**inputs, return_predicted_features=return_predicted_features)

    def postprocess(self, outputs) -> dict[str, np.ndarray]:
        is_clip = outputs.action_indices.ndim == 3  # (1, pairs, n) for a clip, (1, n) for one pair
        result = {}
        for key in ("action_indices", "latent_actions", "continuous_latent_actions", "predicted_features"):
            value = outputs.get(key)
            if value is not None:
                value = value[0] if is_clip else value
                result[key] = value.float().numpy() if value.is_floating_point() else value.numpy()
        return result


__all__ = ["LapaDinov3LatentActionPipeline", "LapaDinov3Processor", "normalize_pixels", "resize_frames", "rgb8"]
