"""Encoder baselines: patch tokens of both frames (one tubelet for V-JEPA2) from tiny random 🤗 vision models
(no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import siglip2_image_processor
from transformers import (
    AutoModel,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    DINOv3ViTConfig,
    Siglip2VisionConfig,
    SiglipVisionConfig,
    VJEPA2Config,
)

from lary.encoders import (
    encode_clip_pairs,
    encode_frame_pairs,
    encode_frames,
    frames_from_patches,
)

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8)


def tiny(config_class, **kwargs):
    torch.manual_seed(0)
    return AutoModel.from_config(config_class(**TINY, **kwargs)).eval()


def tiny_vjepa2():
    """32 x 32 frames in 8 x 8 patches, tubelets of 2 frames: 16 tokens per pair."""
    torch.manual_seed(0)
    config = VJEPA2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, patch_size=8,
                          crop_size=32, frames_per_clip=2, pred_hidden_size=16, pred_num_hidden_layers=1,
                          pred_num_attention_heads=2, num_pooler_layers=1)
    return AutoModel.from_config(config).eval()


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


def test_vjepa2_encodes_a_pair_as_one_tubelet():
    model = tiny_vjepa2()
    pairs = torch.randn(3, 2, 3, 32, 32)
    tokens = encode_frame_pairs(model, pairs)
    assert tokens.shape == (3, 16, 32)  # (2 frames / tubelet 2) x (32 / 8)^2 patches
    with torch.no_grad():
        expected = model(pixel_values_videos=pairs, skip_predictor=True).last_hidden_state
    torch.testing.assert_close(tokens, expected)
    assert not torch.allclose(encode_frame_pairs(model, pairs.flip(1)), tokens, atol=1e-3)  # the order matters


def test_vjepa2_refuses_single_frames_and_other_sizes():
    model = tiny_vjepa2()
    with pytest.raises(ValueError, match="2-frame tubelets"):
        encode_frames(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"32x32 frames \(config.crop_size\); got 48x48"):
        encode_frame_pairs(model, torch.randn(1, 2, 3, 48, 48))


@pytest.mark.parametrize("model", [tiny(Dinov2Config, image_size=32), tiny_vjepa2()], ids=["dinov2", "vjepa2"])
def test_clip_pairs_equal_the_pairs_encoded_alone(model):
    clips = torch.randn(2, 5, 3, 32, 32)
    tokens = encode_clip_pairs(model, clips, stride=2)
    expected = encode_frame_pairs(model, torch.stack((clips[:, :3], clips[:, 2:]), dim=2).flatten(0, 1))
    assert tokens.shape == (2, 3, *expected.shape[1:])
    torch.testing.assert_close(tokens.flatten(0, 1), expected, rtol=1e-4, atol=1e-5)


def test_frames_from_patches_undoes_the_siglip2_processor_patches():
    frames = np.random.default_rng(0).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    processor = siglip2_image_processor(patch_size=8, max_num_patches=16, do_resize=False, do_rescale=False,
                                        do_normalize=False)
    inputs = processor(images=list(frames), return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 16, 8 * 8 * 3) and inputs["spatial_shapes"].tolist() == [[3, 5]] * 2
    restored = frames_from_patches(inputs["pixel_values"], inputs["spatial_shapes"], patch_size=8)
    np.testing.assert_array_equal(restored.numpy(), frames.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="not 16x16 RGB pixels"):
        frames_from_patches(inputs["pixel_values"], inputs["spatial_shapes"], patch_size=16)
