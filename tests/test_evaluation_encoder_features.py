"""Encoder baselines: patch tokens of both frames from tiny random 🤗 vision models (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModel,
    DINOv3ViTConfig,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    Siglip2VisionConfig,
    SiglipVisionConfig,
)

from lary.evaluation.encoder_features import encode_frame_pairs, encode_frames

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8)


def tiny(config_class, **kwargs):
    torch.manual_seed(0)
    return AutoModel.from_config(config_class(**TINY, **kwargs)).eval()


@pytest.mark.parametrize(
    "model",
    [
        tiny(DINOv3ViTConfig, image_size=32, num_register_tokens=4),
        tiny(DINOv3ViTConfig, image_size=32),
        tiny(Dinov2Config, image_size=32),
        tiny(Dinov2WithRegistersConfig, image_size=32, num_register_tokens=2),
        tiny(SiglipVisionConfig, image_size=32),
        tiny(Siglip2VisionConfig, num_patches=16),
    ],
    ids=["dinov3-registers", "dinov3", "dinov2", "dinov2-registers", "siglip", "siglip2"],
)
def test_pairs_give_patch_tokens_of_both_frames(model):
    pixel_values = torch.randn(3, 2, 3, 32, 32)
    tokens = encode_frame_pairs(model, pixel_values)
    assert tokens.shape == (3, 2 * 16, 32)  # (32 / 8)^2 patches per frame
    second_frames = encode_frames(model, pixel_values[:, 1])
    torch.testing.assert_close(tokens[:, 16:], second_frames, rtol=1e-4, atol=1e-5)


def test_dino_drops_cls_and_register_tokens():
    model = tiny(DINOv3ViTConfig, image_size=32, num_register_tokens=4)
    frames = torch.randn(2, 3, 32, 32)
    hidden = model(pixel_values=frames).last_hidden_state
    assert hidden.shape[1] == 1 + 4 + 16
    torch.testing.assert_close(encode_frames(model, frames), hidden[:, 5:])


def test_rejects_non_pairs():
    with pytest.raises(ValueError, match=r"\[batch, 2, 3, H, W\]"):
        encode_frame_pairs(tiny(Dinov2Config, image_size=32), torch.randn(2, 3, 32, 32))
