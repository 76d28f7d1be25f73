"""LAPA-DINOv3 equals the reference: on the golden checkpoint, on other shapes, and over the released key layout."""

from __future__ import annotations

import json

import pytest
import torch
from reference_oracle import (
    random_reference_checkpoint,
    reference_keys,
    reference_outputs,
)
from safetensors.torch import load_file
from transformers import DINOv3ViTConfig

from lary import LapaDinov3Config, LapaDinov3Model
from lary.checkpoint import (
    CheckpointMismatchError,
    config_from_reference,
    convert_checkpoint,
    convert_state_dict,
    load_reference_state_dict,
)

ATOL = 1e-4


def _golden(golden_dir):
    laq = json.loads((golden_dir / "laq_config.json").read_text())
    backbone = json.loads((golden_dir / "backbone_config.json").read_text())
    backbone.pop("transformers_version")
    return laq, DINOv3ViTConfig(**backbone), load_file(golden_dir / "cases.safetensors")


def _assert_matches(outputs, expected):
    assert torch.equal(outputs.action_indices, expected["indices"])
    torch.testing.assert_close(outputs.latent_actions, expected["tokens"], atol=ATOL, rtol=0)
    torch.testing.assert_close(outputs.continuous_latent_actions, expected["continuous"], atol=ATOL, rtol=0)
    torch.testing.assert_close(outputs.predicted_features, expected["predicted_features"], atol=ATOL, rtol=0)


def _pixels(frames: torch.Tensor) -> torch.Tensor:
    return (frames.permute(0, 1, 4, 2, 3).float() / 255) * 2 - 1


def test_oracle_reproduces_the_golden_outputs(golden_dir):
    laq, backbone, cases = _golden(golden_dir)
    weights = load_reference_state_dict(golden_dir / "laq_dinov3.pt")
    expected = reference_outputs(weights, laq, backbone, cases["frames"])
    assert torch.equal(expected["indices"], cases["indices"])
    for key in ("tokens", "continuous", "predicted_features"):
        torch.testing.assert_close(expected[key], cases[key], atol=ATOL, rtol=0)


def test_oracle_layout_is_the_released_layout(vitl_manifest):
    manifest = json.loads(vitl_manifest.read_text())
    laq_keys = {k: tuple(v[0]) for k, v in manifest.items() if not k.startswith("dino_tokenizer.")}
    released = dict(dim=1024, quant_dim=32, codebook_size=8, image_size=224, patch_size=16, spatial_depth=4,
                    temporal_depth=4, dim_head=64, heads=16, code_seq_len=16)
    assert reference_keys(released, LapaDinov3Config().backbone_config) == laq_keys


def test_converted_golden_checkpoint_matches_reference(golden_dir):
    laq, backbone, cases = _golden(golden_dir)
    model = convert_checkpoint(golden_dir / "laq_dinov3.pt", laq, backbone)
    with torch.no_grad():
        outputs = model(pixel_values=_pixels(cases["frames"]), return_predicted_features=True, output_backbone_features=True)
    _assert_matches(outputs, cases)
    torch.testing.assert_close(outputs.backbone_features[:, 0], cases["features_first"], atol=ATOL, rtol=0)
    torch.testing.assert_close(outputs.backbone_features[:, 1], cases["features_second"], atol=ATOL, rtol=0)
    forced = model.latent_actions_from_indices(torch.ones_like(cases["indices"]))
    torch.testing.assert_close(forced, cases["tokens_forced_code1"], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "laq",
    [
        dict(dim=48, quant_dim=12, codebook_size=64, code_seq_len=49, spatial_depth=1, temporal_depth=2, dim_head=8, heads=3),
        dict(dim=32, quant_dim=16, codebook_size=16, code_seq_len=64, spatial_depth=2, temporal_depth=1, dim_head=16, heads=2),
        dict(dim=40, quant_dim=8, codebook_size=8, code_seq_len=16, spatial_depth=1, temporal_depth=1, dim_head=10, heads=5),
    ],
    ids=["codebook64-seq49", "codebook16-seq64", "codebook8-seq16-width40"],
)
def test_other_shapes_match_the_reference(laq, tmp_path):
    laq = {**laq, "image_size": 224, "patch_size": 16}
    backbone = DINOv3ViTConfig(hidden_size=laq["dim"], intermediate_size=2 * laq["dim"], num_hidden_layers=1,
                               num_attention_heads=2, num_register_tokens=4)
    weights = random_reference_checkpoint(laq, backbone, seed=1)
    torch.save({"model": weights, "steps": 0}, tmp_path / "laq.pt")
    frames = torch.randint(0, 256, (2, 2, 224, 224, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    expected = reference_outputs(weights, laq, backbone, frames)
    model = convert_checkpoint(tmp_path / "laq.pt", laq, backbone)
    with torch.no_grad():
        outputs = model(pixel_values=_pixels(frames), return_predicted_features=True)
    _assert_matches(outputs, expected)


def test_released_layout_maps_every_key_with_matching_shapes(vitl_manifest):
    manifest = json.loads(vitl_manifest.read_text())
    assert len(manifest) == 668
    reference = {
        key: torch.zeros(shape) if key.endswith(".beta") else torch.empty(shape, device="meta")
        for key, (shape, _) in manifest.items()
    }
    with torch.device("meta"):
        model = LapaDinov3Model(LapaDinov3Config())
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    converted = convert_state_dict(reference, expected)
    assert set(converted) == set(expected)
    assert all(tuple(converted[k].shape) == expected[k] for k in expected)


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(golden_dir):
    laq, backbone, _ = _golden(golden_dir)
    reference = load_reference_state_dict(golden_dir / "laq_dinov3.pt")
    del reference["vq.codebooks"]
    reference["vq.extra_weight"] = torch.zeros(3)
    reference["dec_spatial_transformer.norm_out.beta"] = torch.ones(64)  # a bias the model cannot express
    model = LapaDinov3Model(config_from_reference(laq, backbone))
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as error:
        convert_state_dict(reference, expected, source="laq_dinov3.pt")
    message = str(error.value)
    assert "quantizer.codebook" in message and "vq.extra_weight" in message
    assert "dec_spatial_transformer.norm_out.beta" in message and "laq_dinov3.pt" in message


def test_unknown_laq_config_key_is_named(golden_dir):
    laq, backbone, _ = _golden(golden_dir)
    with pytest.raises(ValueError, match="depth_typo"):
        config_from_reference({**laq, "depth_typo": 3}, backbone)
