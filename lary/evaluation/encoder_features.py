"""Encoder baselines ("origin" features in the LARY paper): per-frame patch tokens of any 🤗 vision `AutoModel`.

Which tokens are taken:
- ViT-like models called with `pixel_values` `[B, 3, H, W]` (DINOv2, DINOv2 with registers, DINOv3, SigLIP, CLIP):
  the last `num_patches = (H // patch_size) * (W // patch_size)` tokens of `last_hidden_state`, i.e. without the
  CLS and register tokens (`1 + config.num_register_tokens` for DINO models, none for SigLIP).
- Models with a `vision_model` (SigLIP/SigLIP2/CLIP dual encoders): their vision tower, as above.
- SigLIP2 (NaFlex) vision towers, which take pre-patchified pixels: the frames are cut into patches here
  (row-major, `patch_size x patch_size x 3` per patch, as Siglip2's image processor does) and every patch token is
  kept (SigLIP2 has no CLS token).
"""

from __future__ import annotations

import torch
from torch import nn


def _vision_config(model: nn.Module):
    config = model.config
    return getattr(config, "vision_config", None) or config


def _patchify(frames: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[N, C, H, W]` -> `[N, (H/p) * (W/p), p * p * C]`, patches row-major, pixels as (row, column, channel)."""
    n, c, h, w = frames.shape
    patches = frames.reshape(n, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch_size) * (w // patch_size), -1)


def _is_siglip2(model: nn.Module) -> bool:
    return getattr(_vision_config(model), "model_type", "") in ("siglip2_vision_model", "siglip2")


@torch.no_grad()
def encode_frames(model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Patch tokens `[N, num_patches, D]` of frames `[N, 3, H, W]` (preprocessed as the model's image processor does)."""
    patch_size = _vision_config(model).patch_size
    num_patches = (frames.shape[-2] // patch_size) * (frames.shape[-1] // patch_size)
    tower = getattr(model, "vision_model", model)
    parameter = next(model.parameters())
    frames = frames.to(device=parameter.device, dtype=parameter.dtype)
    if _is_siglip2(model):
        h, w = frames.shape[-2] // patch_size, frames.shape[-1] // patch_size
        pixels = _patchify(frames, patch_size)
        mask = torch.ones(pixels.shape[:2], dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[h, w]] * len(frames), device=pixels.device)
        hidden = tower(pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes).last_hidden_state
    else:
        hidden = tower(pixel_values=frames).last_hidden_state
    if hidden.shape[1] < num_patches:
        raise ValueError(f"{type(model).__name__} returned {hidden.shape[1]} tokens for {num_patches} patches")
    return hidden[:, -num_patches:]


@torch.no_grad()
def encode_frame_pairs(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Patch tokens of both frames of each pair: `[B, 2, 3, H, W]` -> `[B, 2 * num_patches, D]`, the first frame's
    tokens then the second's."""
    if pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
        raise ValueError(f"expected pixel_values of shape [batch, 2, 3, H, W], got {tuple(pixel_values.shape)}")
    model.eval()
    tokens = encode_frames(model, pixel_values.flatten(0, 1))
    return tokens.reshape(pixel_values.shape[0], 2 * tokens.shape[1], tokens.shape[2])
