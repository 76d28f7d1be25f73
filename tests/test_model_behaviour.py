"""Model behaviour beyond parity: clips, "what if" decoding, training mode, processor input (attention backends:
test_model_conventions.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor

TINY = dict(
    backbone_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_register_tokens": 4, "image_size": 112, "patch_size": 16},
    quant_dim=8, codebook_size=8, code_seq_len=4, spatial_depth=1, temporal_depth=1, decoder_depth=1,
    dim_head=16, heads=2,
)


@pytest.fixture(scope="module")
def model() -> LapaDinov3Model:
    torch.manual_seed(0)
    return LapaDinov3Model(LapaDinov3Config(**TINY)).eval()


def _clip(frames: int, size: int = 112, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, frames, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_config_rejects_a_code_length_that_does_not_fit_the_grid():
    with pytest.raises(Exception, match="code_seq_len=16 does not fit a 7x7 patch grid: its conv stack makes 2x2"):
        LapaDinov3Config(**{**TINY, "code_seq_len": 16})
    with pytest.raises(Exception, match=r"code_seq_len=5 is not supported; choose one of \[1, 2, 4, 16, 49, 64, 256\]"):
        LapaDinov3Config(**{**TINY, "code_seq_len": 5})


@torch.no_grad()
def test_video_mode_equals_pairwise(model):
    clip = _clip(6)
    stride = 2
    video = model(pixel_values_videos=clip, stride=stride, return_predicted_features=True)
    pairs = torch.stack([torch.stack((clip[0, t], clip[0, t + stride])) for t in range(6 - stride)])
    pairwise = model(pixel_values=pairs, return_predicted_features=True)
    assert video.action_indices.shape == (1, 4, 4)
    assert torch.equal(video.action_indices[0], pairwise.action_indices)
    torch.testing.assert_close(video.latent_actions[0], pairwise.latent_actions, atol=1e-5, rtol=0)
    torch.testing.assert_close(video.predicted_features[0], pairwise.predicted_features, atol=1e-5, rtol=0)


def test_the_windowed_video_forward_is_video_mode_each_frame_through_the_backbone_once(model):
    """`latent_actions_of_video` gives video mode's pairs window by window, from resized pixels or from frames of
    mixed sizes with the processor; a window carries its stride's features, and a longer stride reads the frames twice
    (each frame once per pair), which an iterator cannot be."""
    processor = LapaDinov3Processor(size=112)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (60 + 8 * (t % 2), 80, 3), dtype=np.uint8) for t in range(11)]  # two sizes
    pixels = processor.resize(frames)
    assert pixels.shape == (11, 3, 112, 112)
    assert torch.equal(pixels[1], processor.resize(torch.from_numpy(frames[1])[None])[0])  # grouped by size, same numbers
    seen = []
    hook = model.backbone.register_forward_hook(
        lambda module, args, kwargs, output: seen.append(len(kwargs["pixel_values"])), with_kwargs=True)
    try:
        for stride, pairs_per_window, backbone_frames in ((1, 4, 11), (3, 4, 11), (3, 3, 11), (5, 2, 12)):
            with torch.no_grad():
                video = model(pixel_values_videos=processor.normalize(pixels)[None], stride=stride)
            for given, by in ((frames, processor), (pixels, None)):
                seen.clear()
                windows = list(model.latent_actions_of_video(given, stride, by, pairs_per_window))
                assert [len(window.action_indices) for window in windows[:-1]] == [pairs_per_window] * (len(windows) - 1)
                assert torch.equal(torch.cat([window.action_indices for window in windows]), video.action_indices[0])
                torch.testing.assert_close(torch.cat([window.latent_actions for window in windows]),
                                           video.latent_actions[0], atol=1e-5, rtol=0)
                assert sum(seen) == backbone_frames, (stride, pairs_per_window)  # 6 pairs of stride 5: 12 frames
    finally:
        hook.remove()
    assert list(model.latent_actions_of_video(pixels[:3], stride=3)) == []  # no pair
    with pytest.raises(ValueError, match="stride 5 is above pairs_per_window 2: the frames are read twice"):
        model.latent_actions_of_video(iter(pixels), stride=5, pairs_per_window=2)
    with pytest.raises(ValueError, match="stride must be a positive integer; got 0"):
        model.latent_actions_of_video(pixels, stride=0)


@torch.no_grad()
def test_decode_actions_reproduces_the_forward_prediction(model):
    pairs = _clip(2)
    out = model(pixel_values=pairs, return_predicted_features=True)
    what_if = model.decode_actions(out.action_indices, pixel_values=pairs[:, 0])
    torch.testing.assert_close(what_if, out.predicted_features, atol=1e-5, rtol=0)
    other = model.decode_actions((out.action_indices + 1) % 8, pixel_values=pairs[:, 0])
    assert not torch.allclose(other, out.predicted_features)
    with pytest.raises(ValueError, match=r"action_indices must have shape \(batch, 4\)"):
        model.decode_actions(out.action_indices[:, :3], pixel_values=pairs[:, 0])


def test_training_trains_the_quantizer_not_the_backbone():
    torch.manual_seed(0)
    model = LapaDinov3Model(LapaDinov3Config(**TINY)).train()
    assert not model.backbone.training  # DINOv3 would jitter its RoPE in training mode
    pairs = _clip(2)
    out = model(pixel_values=pairs)
    assert out.loss is not None and out.loss.ndim == 0
    out.loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.quantizer.codebook.grad is not None and model.spatial_encoder.layers[0].self_attention.q_proj.weight.grad.abs().sum() > 0
    assert model.quantizer.code_usage.sum() == 4
    model.eval()
    first, second = model(pixel_values=pairs), model(pixel_values=pairs)
    assert first.loss is None and torch.equal(first.latent_actions, second.latent_actions)  # no noise in eval


def test_a_freshly_built_model_extracts_deterministic_features():
    # Before `.train()`/`.eval()` is ever called (as when a trainer caches features right after building the
    # model), the backbone must already be in eval mode: DINOv3 in training mode jitters its RoPE coordinates.
    torch.manual_seed(0)
    model = LapaDinov3Model(LapaDinov3Config(**TINY))
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())
    frames = _clip(2)[0]
    torch.testing.assert_close(model.extract_features(frames), model.extract_features(frames), rtol=0, atol=0)


def test_replace_unused_codes_copies_used_entries():
    torch.manual_seed(0)
    model = LapaDinov3Model(LapaDinov3Config(**TINY))
    quantizer = model.quantizer
    quantizer.code_usage.copy_(torch.tensor([10.0, 0, 0, 0, 0, 0, 0, 3]))
    replaced = quantizer.replace_unused_codes(num_batches=10, generator=torch.Generator().manual_seed(0))
    assert replaced == 6  # entries 1..6 are below 0.1 uses per batch; 0 (1.0) and 7 (0.3) are kept
    donors = quantizer.codebook[[0, 7]]
    for row in quantizer.codebook[1:7]:
        assert torch.cdist(row[None], donors).min() < 1e-6
    assert quantizer.code_usage.sum() == 0


def test_processor_accepts_pil_numpy_and_tensors():
    processor = LapaDinov3Processor(size=112)
    rgb = np.random.default_rng(0).integers(0, 256, (120, 130, 3), dtype=np.uint8)
    out = processor(images=[[Image.fromarray(rgb).convert("L"), Image.fromarray(rgb).convert("RGBA")],
                            [rgb, torch.from_numpy(rgb).permute(2, 0, 1)],
                            [torch.from_numpy(rgb), torch.from_numpy(rgb).float() / 255]])
    pixels = out["pixel_values"]
    assert pixels.shape == (3, 2, 3, 112, 112) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    torch.testing.assert_close(pixels[1, 0], pixels[1, 1])  # numpy HWC == tensor CHW
    torch.testing.assert_close(pixels[2, 0], pixels[1, 0])  # tensor HWC == numpy
    assert (pixels[2, 1] - pixels[2, 0]).abs().mean() < 0.02  # the float path resamples (almost) alike
    exact = processor(images=[[rgb[:112, :112], rgb[:112, :112]]])["pixel_values"][0, 0]
    torch.testing.assert_close(exact, torch.from_numpy(rgb[:112, :112]).permute(2, 0, 1).float() / 255 * 2 - 1)
    clips = processor(videos=[[rgb] * 5], stride=2)
    assert clips["pixel_values_videos"].shape == (1, 5, 3, 112, 112) and clips["stride"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(images=[[np.zeros((8, 8, 3), np.uint8)] * 3]), r"images\[0\] must be a pair of exactly two frames; got 3"),
        (dict(images=[]), "non-empty list of pairs"),
        (dict(images=[["frame.png", "frame.png"]]), r"images\[0\]\[0\]: unsupported frame type str"),
        (dict(images=[[np.zeros((8, 8), np.uint8)] * 2]), r"images\[0\]\[0\]: arrays must be \(H, W, 3\) RGB; got shape \(8, 8\)"),
        (dict(images=[[np.zeros((8, 8, 4), np.uint8)] * 2]), r"got shape \(8, 8, 4\)"),
        (dict(images=[[np.zeros((8, 8, 3), np.float64)] * 2]), "must be uint8"),
        (dict(videos=[[np.zeros((8, 8, 3), np.uint8)] * 3, [np.zeros((8, 8, 3), np.uint8)] * 4]), r"videos\[1\] has 4 frames"),
        (dict(videos=[[np.zeros((8, 8, 3), np.uint8)] * 2], stride=2), "stride 2 needs at least 3"),
        (dict(images=[[torch.full((3, 8, 8), 2.0)] * 2]), r"images\[0\]\[0\]: float tensors must hold values in \[0, 1\]"),
    ],
)
def test_processor_errors_name_the_item(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LapaDinov3Processor()(**kwargs)


def test_model_input_errors(model):
    with pytest.raises(ValueError, match="exactly one of"):
        model()
    with pytest.raises(ValueError, match=r"pixel_values are \(64, 64\) pixels"):
        model(pixel_values=torch.zeros(1, 2, 3, 64, 64))
    with pytest.raises(ValueError, match="stride must be in"):
        model(pixel_values_videos=_clip(3), stride=3)
