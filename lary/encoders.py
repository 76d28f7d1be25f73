"""Encoder baselines ("origin" features in the LARY paper): patch tokens of any 🤗 vision `AutoModel` for frame pairs,
and the preprocessing their processor configs describe (done here with PIL and numpy: no torchvision).

Which tokens are taken:
- ViT-like models called with `pixel_values` `[B, 3, H, W]` (DINOv2, DINOv2 with registers, DINOv3, SigLIP, CLIP):
  the last `num_patches = (H // patch_size) * (W // patch_size)` tokens of `last_hidden_state`, i.e. without the
  CLS and register tokens (`1 + config.num_register_tokens` for DINO models, none for SigLIP).
- Models with a `vision_model` (SigLIP/SigLIP2/CLIP dual encoders): their vision tower, as above.
- SigLIP2 (NaFlex) vision towers, which take pre-patchified pixels: the frames are cut into patches here
  (row-major, `patch_size x patch_size x 3` per patch, as Siglip2's image processor does) and every patch token is
  kept (SigLIP2 has no CLS token). `frames_from_patches` turns the processor's output back into such frames.
- V-JEPA2 (`model_type` "vjepa2"), a video model with tubelets of 2 frames: as in LARYBench, a pair is one 2-frame
  clip `pixel_values_videos` `[B, 2, 3, H, W]`, i.e. a single tubelet, encoded with `skip_predictor=True`; its
  `(H // patch_size) * (W // patch_size)` tokens are the pair's features (not two frames' worth). H and W must be
  the model's `crop_size`, which its 3D RoPE assumes.

Per-frame models give `2 * num_patches` tokens per pair (the first frame's, then the second's); V-JEPA2 gives
`num_patches`.

Preprocessing (`EncoderTransform`) follows the values of the model's saved processor config
(`preprocessor_config.json`, or `video_preprocessor_config.json` for V-JEPA2) as the transformers processors apply
them: resize (to `height` x `width`, the shortest edge to `shortest_edge`, or SigLIP2's NaFlex grid of at most
`max_num_patches`), center crop, rescale, normalize. Some Hub processors (DINOv3's `DINOv3ViTImageProcessorFast`) only
exist in a torchvision version; this needs none.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from lary.errors import LaryError

VJEPA2_DEFAULTS = {  # VJEPA2VideoProcessor's defaults, for a V-JEPA2 folder without a processor config
    "do_resize": True, "resample": 2, "do_center_crop": True, "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}


@dataclass(frozen=True)
class EncoderTransform:
    """An encoder's preprocessing, from its processor config: (frames, H, W, 3) uint8 -> (frames, 3, h, w) float32."""

    size: dict[str, int] | None  # {"height", "width"} or {"shortest_edge"}; None: no resize
    resample: int  # PIL resampling filter
    crop: tuple[int, int] | None  # (height, width) of the center crop
    rescale: float | None
    mean: np.ndarray | None
    std: np.ndarray | None
    naflex: tuple[int, int] | None = None  # (patch_size, max_num_patches): SigLIP2's aspect-preserving grid

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderTransform:
        def pair(value: Any) -> tuple[int, int]:
            return (value["height"], value["width"]) if isinstance(value, dict) else (int(value), int(value))

        size = config.get("size") if config.get("do_resize", True) else None
        if isinstance(size, int):
            size = {"height": size, "width": size}
        naflex = (config["patch_size"], config["max_num_patches"]) if "max_num_patches" in config else None
        normalize = config.get("do_normalize", True) and config.get("image_mean") is not None
        return cls(
            size=None if naflex else size,
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            crop=pair(config["crop_size"]) if config.get("do_center_crop") and config.get("crop_size") else None,
            rescale=config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else None,
            mean=np.asarray(config["image_mean"], np.float32) if normalize else None,
            std=np.asarray(config["image_std"], np.float32) if normalize else None,
            naflex=naflex,
        )

    def _target(self, height: int, width: int) -> tuple[int, int] | None:
        if self.naflex is not None:
            from transformers.models.siglip2.image_processing_pil_siglip2 import (
                get_image_size_for_max_num_patches,
            )

            return get_image_size_for_max_num_patches(height, width, *self.naflex)
        if self.size is None:
            return None
        if "shortest_edge" in self.size:  # transformers' `get_resize_output_image_size(default_to_square=False)`
            short, long = sorted((height, width))
            edge = self.size["shortest_edge"]
            other = int(edge * long / short)
            return (edge, other) if height <= width else (other, edge)
        return self.size["height"], self.size["width"]

    def __call__(self, frames: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """(H, W, 3) uint8 frames -> (frames, 3, height, width) float32."""
        return torch.stack(self.each(frames))

    def each(self, frames: np.ndarray | list[np.ndarray]) -> list[torch.Tensor]:
        """Each (H, W, 3) uint8 frame -> (3, height, width) float32, not stacked."""
        out = []
        for frame in frames:
            image = Image.fromarray(frame)
            target = self._target(frame.shape[0], frame.shape[1])
            if target is not None and target != frame.shape[:2]:
                image = image.resize((target[1], target[0]), resample=Image.Resampling(self.resample))
            array = np.asarray(image, dtype=np.float32)
            if self.crop is not None:
                top, left = (array.shape[0] - self.crop[0]) // 2, (array.shape[1] - self.crop[1]) // 2
                array = array[top : top + self.crop[0], left : left + self.crop[1]]
            if self.rescale is not None:
                array = array * np.float32(self.rescale)
            if self.mean is not None:
                array = (array - self.mean) / self.std
            out.append(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1))
        return out


def processor_config(name: str | Path, model: nn.Module) -> dict[str, Any]:
    """The saved processor config of an encoder: `video_preprocessor_config.json` (V-JEPA2) or
    `preprocessor_config.json`; V-JEPA2 without one gets its defaults at the model's `crop_size`."""
    from transformers.image_processing_base import ImageProcessingMixin
    from transformers.video_processing_utils import BaseVideoProcessor

    if is_vjepa2(model):
        try:
            config = BaseVideoProcessor.get_video_processor_dict(str(name))[0]
        except OSError:
            config = {}
        if not config:
            crop = model.config.crop_size
            config = {**VJEPA2_DEFAULTS, "crop_size": crop, "size": {"shortest_edge": int(crop * 256 / 224)}}
        return config
    try:
        return ImageProcessingMixin.get_image_processor_dict(str(name))[0]
    except OSError as error:
        raise LaryError(f"--encoder {name} has no image processor config (preprocessor_config.json): {error}") from None


def vision_config(model: nn.Module):
    config = model.config
    return getattr(config, "vision_config", None) or config


def _patchify(frames: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[N, C, H, W]` -> `[N, (H/p) * (W/p), p * p * C]`, patches row-major, pixels as (row, column, channel)."""
    n, c, h, w = frames.shape
    patches = frames.reshape(n, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch_size) * (w // patch_size), -1)


def frames_from_patches(pixel_values: torch.Tensor, spatial_shapes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of `_patchify` for Siglip2 image processor outputs: `pixel_values` `[N, max_patches, p * p * 3]`
    (padded) with `spatial_shapes` `[N, 2]` (patch rows, columns; equal for all N) -> frames `[N, 3, H, W]`."""
    if not (spatial_shapes == spatial_shapes[0]).all():
        raise LaryError(f"frames resized to different patch grids {spatial_shapes.tolist()}; give frames of one size")
    n, _, width = pixel_values.shape
    if width != 3 * patch_size * patch_size:
        raise LaryError(f"patches of {width} values are not {patch_size}x{patch_size} RGB pixels (model patch size)")
    h, w = (int(size) for size in spatial_shapes[0])
    patches = pixel_values[:, : h * w].reshape(n, h, w, patch_size, patch_size, 3)
    return patches.permute(0, 5, 1, 3, 2, 4).reshape(n, 3, h * patch_size, w * patch_size)


def _is_siglip2(model: nn.Module) -> bool:
    return getattr(vision_config(model), "model_type", "") in ("siglip2_vision_model", "siglip2")


def is_vjepa2(model: nn.Module) -> bool:
    return getattr(model.config, "model_type", "") == "vjepa2"


def _on_model(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    parameter = next(model.parameters())
    return pixels.to(device=parameter.device, dtype=parameter.dtype)


@torch.no_grad()
def encode_frames(model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Patch tokens `[N, num_patches, D]` of frames `[N, 3, H, W]` (preprocessed as the model's image processor does)."""
    if is_vjepa2(model):
        raise LaryError(f"{type(model).__name__} encodes 2-frame tubelets, not single frames: use encode_frame_pairs")
    patch_size = vision_config(model).patch_size
    num_patches = (frames.shape[-2] // patch_size) * (frames.shape[-1] // patch_size)
    tower = getattr(model, "vision_model", model)
    frames = _on_model(model, frames)
    if _is_siglip2(model):
        h, w = frames.shape[-2] // patch_size, frames.shape[-1] // patch_size
        pixels = _patchify(frames, patch_size)
        mask = torch.ones(pixels.shape[:2], dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[h, w]] * len(frames), device=pixels.device)
        # the vision model takes `pixel_attention_mask`; in transformers 5.4 `vision_model` is its inner transformer,
        # which takes `attention_mask`
        masked = "pixel_attention_mask" if "pixel_attention_mask" in inspect.signature(tower.forward).parameters \
            else "attention_mask"
        hidden = tower(pixel_values=pixels, spatial_shapes=shapes, **{masked: mask}).last_hidden_state
    else:
        hidden = tower(pixel_values=frames).last_hidden_state
    if hidden.shape[1] < num_patches:
        raise LaryError(f"{type(model).__name__} returned {hidden.shape[1]} tokens for {num_patches} patches")
    return hidden[:, -num_patches:]


@torch.no_grad()
def tubelets(model: nn.Module, pairs: torch.Tensor) -> torch.Tensor:
    """V-JEPA2: each pair `[B, 2, 3, H, W]` as one 2-frame clip -> `[B, num_patches, D]`."""
    config = model.config
    if config.tubelet_size != 2:
        raise LaryError(f"{type(model).__name__} has tubelet_size {config.tubelet_size}; a frame pair needs 2")
    if pairs.shape[-2:] != (config.crop_size, config.crop_size):
        raise LaryError(
            f"{type(model).__name__} takes {config.crop_size}x{config.crop_size} frames (config.crop_size); "
            f"got {pairs.shape[-2]}x{pairs.shape[-1]}"
        )
    return model(pixel_values_videos=_on_model(model, pairs), skip_predictor=True).last_hidden_state


@torch.no_grad()
def encode_frame_pairs(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Features of each pair `[B, 2, 3, H, W]`: `[B, 2 * num_patches, D]` (the first frame's tokens, then the
    second's) for per-frame models, `[B, num_patches, D]` (one tubelet) for V-JEPA2."""
    if pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
        raise LaryError(f"expected pixel_values of shape [batch, 2, 3, H, W], got {tuple(pixel_values.shape)}")
    model.eval()
    if is_vjepa2(model):
        return tubelets(model, pixel_values)
    tokens = encode_frames(model, pixel_values.flatten(0, 1))
    return tokens.reshape(pixel_values.shape[0], 2 * tokens.shape[1], tokens.shape[2])


@torch.no_grad()
def encode_clip_pairs(model: nn.Module, clips: torch.Tensor, stride: int) -> torch.Tensor:
    """Features of the pairs `(t, t + stride)` of clips `[B, F, 3, H, W]` -> `[B, F - stride, tokens, D]`, equal to
    `encode_frame_pairs` of each pair. Per-frame models encode every frame once; V-JEPA2 encodes every pair."""
    model.eval()
    if is_vjepa2(model):
        pairs = torch.stack((clips[:, :-stride], clips[:, stride:]), dim=2)  # (B, P, 2, 3, H, W)
        return tubelets(model, pairs.flatten(0, 1)).unflatten(0, pairs.shape[:2])
    tokens = encode_frames(model, clips.flatten(0, 1)).unflatten(0, clips.shape[:2])  # (B, F, patches, D)
    return torch.cat((tokens[:, :-stride], tokens[:, stride:]), dim=2)
