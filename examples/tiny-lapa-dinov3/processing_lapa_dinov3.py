"""Processor of LAPA-DINOv3: frame pairs and clips to 224x224 pixels in [-1, 1] (PIL, numpy and torch only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Pipeline
from transformers.image_processing_base import BatchFeature, ImageProcessingMixin

Frame = Any  # PIL.Image.Image | np.ndarray (H, W, 3) uint8 | torch.Tensor (3, H, W) or (H, W, 3)


class LapaDinov3ProcessorKwargs(TypedDict, total=False):
    size: int
    stride: int
    return_tensors: str


class LapaDinov3Processor(ImageProcessingMixin):
    r"""
    Turns frame pairs (`images=[[f0, f1], ...]`) into `pixel_values` (batch, 2, 3, size, size) and equal-length clips
    (`videos=[frames, ...]`) into `pixel_values_videos` (batch, frames, 3, size, size) plus the pair `stride`.

    Frames are PIL images (any mode; converted to RGB), (H, W, 3) uint8 numpy arrays, or (3, H, W) / (H, W, 3) torch
    tensors (uint8, or float in [0, 1]). They are resized to `size` x `size` with bicubic filtering (PIL for 8-bit
    frames, antialiased torch interpolation for float tensors; frames already at that size are not resampled),
    scaled to [0, 1] and mapped to `2x - 1`, the input range the DINOv3 backbone of LAPA-DINOv3 was trained with.
    """

    model_input_names = ["pixel_values", "pixel_values_videos"]
    valid_kwargs = LapaDinov3ProcessorKwargs

    def __init__(self, size: int = 224, stride: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.stride = stride

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
        return torch.stack(
            [
                torch.stack([self._frame(frame, f"{name}[{i}][{j}]") for j, frame in enumerate(group)])
                for i, group in enumerate(groups)
            ]
        )

    def _frame(self, frame: Frame, where: str) -> torch.Tensor:
        """One frame -> (3, size, size) float32 in [-1, 1]."""
        if isinstance(frame, Image.Image):
            frame = np.asarray(frame.convert("RGB"))
        elif isinstance(frame, torch.Tensor):
            frame = self._tensor_to_hwc(frame, where)
            if frame.is_floating_point():
                return self._float_frame(frame, where)
            frame = frame.numpy()
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"{where}: unsupported frame type {type(frame).__name__} (use PIL, numpy or torch)")
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"{where}: arrays must be (H, W, 3) RGB; got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"{where}: arrays must be uint8; got {frame.dtype}")
        if frame.shape[:2] != (self.size, self.size):
            frame = np.asarray(Image.fromarray(frame).resize((self.size, self.size), Image.Resampling.BICUBIC))
        pixels = torch.from_numpy(np.require(frame, requirements=["C", "W"])).permute(2, 0, 1).float() / 255
        return pixels * 2 - 1

    @staticmethod
    def _tensor_to_hwc(frame: torch.Tensor, where: str) -> torch.Tensor:
        if frame.ndim == 3 and frame.shape[0] == 3 and frame.shape[-1] != 3:
            return frame.detach().cpu().permute(1, 2, 0)
        if frame.ndim == 3 and frame.shape[-1] == 3:
            return frame.detach().cpu()
        raise ValueError(f"{where}: tensors must be (3, H, W) or (H, W, 3) RGB; got shape {tuple(frame.shape)}")

    def _float_frame(self, frame: torch.Tensor, where: str) -> torch.Tensor:
        frame = frame.float()
        if frame.min() < 0 or frame.max() > 1:
            raise ValueError(f"{where}: float tensors must hold values in [0, 1]")
        pixels = frame.permute(2, 0, 1)
        if tuple(pixels.shape[1:]) != (self.size, self.size):
            pixels = F.interpolate(pixels[None], size=(self.size, self.size), mode="bicubic", antialias=True)[0]
            pixels = pixels.clamp(0, 1)
        return pixels * 2 - 1


def _is_frame(item: Any) -> bool:
    return isinstance(item, (Image.Image, str)) or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 3)


class LapaDinov3LatentActionPipeline(Pipeline):
    """`pipeline(model=...)` for latent actions: a list of frames in, per-pair codes and action vectors out.

    Two frames give one pair; more frames are a clip whose pairs are `(t, t + stride)`. Frames may be PIL images,
    numpy arrays, tensors or image file paths. Returns a dict of numpy arrays with a leading pair axis. A list of
    frame lists (or tuples) is a batch, one result each.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frame_processor = LapaDinov3Processor(size=self.model.config.backbone_config.image_size)

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, list) and inputs and _is_frame(inputs[0]):
            return super().__call__(tuple(inputs), **kwargs)  # one list of frames is one sample, not a batch
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, stride: int | None = None, return_predicted_features: bool | None = None):
        forward = {} if return_predicted_features is None else {"return_predicted_features": return_predicted_features}
        return ({} if stride is None else {"stride": stride}), forward, {}

    def preprocess(self, frames: Sequence[Frame], stride: int = 1) -> dict[str, Any]:
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


__all__ = ["LapaDinov3LatentActionPipeline", "LapaDinov3Processor"]
