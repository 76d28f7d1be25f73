"""The Hub card (README.md) of a LAPA-DINOv3 folder: the `model_card.md` template filled in from the model's config."""

from __future__ import annotations

from pathlib import Path
from string import Template

import lary_hub.configuration_lapa_dinov3 as hub_configuration
from lary_hub.configuration_lapa_dinov3 import DINOV3_VITL16, LapaDinov3Config

# The template ships beside the three Hub files (the repository root, installed as `lary_hub`).
MODEL_CARD = Path(hub_configuration.__file__).with_name("model_card.md")
DINOV3_VITL16_ID = "facebook/dinov3-vitl16-pretrain-lvd1689m"


def is_dinov3_vitl16(config: LapaDinov3Config) -> bool:
    """Whether the backbone has the architecture of DINOv3 ViT-L/16 (at any input size)."""
    backbone = config.backbone_config
    return all(getattr(backbone, key) == value for key, value in DINOV3_VITL16.items() if key != "image_size")


def known_base_model(config: LapaDinov3Config, backbone: str | None = None) -> str | None:
    """The Hub id of a model's DINOv3 weights: `--backbone` (of `lary convert` or `lary train`) when it is a Hub id;
    else, for a converted checkpoint, the DINOv3 ViT-L/16 that LARYBench's LAPA-DINOv3 freezes when it holds a
    backbone of that architecture; else unknown."""
    if backbone is not None:
        return None if Path(backbone).exists() else backbone
    return DINOV3_VITL16_ID if is_dinov3_vitl16(config) else None


def _size(value: int | list[int] | tuple[int, int]) -> str:
    height, width = value if isinstance(value, (list, tuple)) else (value, value)
    return f"{height}x{width}"


def render_model_card(config: LapaDinov3Config, model_id: str, provenance: str, base_model: str | None = None) -> str:
    """The card for a model with `config`, loadable as `model_id`; `provenance` says where its weights come from."""
    backbone = config.backbone_config
    height, width = config.patch_grid
    if is_dinov3_vitl16(config):
        name = "DINOv3 ViT-L/16"
    else:
        name = f"DINOv3-architecture ViT with {backbone.patch_size}-pixel patches"
    if base_model is None:
        weights = "Its backbone weights are no DINOv3 release that `lary` knows of: nothing says they were pretrained."
    else:
        link = f"[{base_model}](https://huggingface.co/{base_model})"
        weights = f"The backbone weights, {link}, are under Meta's DINOv3 license."
        if base_model == DINOV3_VITL16_ID:
            weights += " (LARYBench's card for LAPA-DINOv3 names DINOv3-7B as the base; its weights use this ViT-L/16.)"
    values = {
        "base_model": f"base_model: {base_model}" if base_model else "# base_model: unknown (see the backbone below)",
        "backbone": f"{name} ({backbone.num_hidden_layers} layers, width {backbone.hidden_size}, "
        f"{backbone.num_attention_heads} heads, {backbone.num_register_tokens} register tokens)",
        "backbone_weights": weights,
        "backbone_states": backbone.num_hidden_layers + 1,
        "backbone_tokens": 1 + backbone.num_register_tokens + height * width,
        "frame_size": _size(backbone.image_size),
        "grid": f"{height}x{width}",
        "grid_height": height,
        "grid_width": width,
        "tokens": height * width,
        "encoder_states": config.spatial_depth + config.temporal_depth + 1,
        "decoder_states": config.decoder_depth + 1,
        "model_id": model_id,
        "provenance": provenance,
    }
    fields = ("hidden_size", "quant_dim", "codebook_size", "code_seq_len", "spatial_depth", "temporal_depth",
              "decoder_depth", "heads", "dim_head")
    values.update({field: getattr(config, field) for field in fields})
    return Template(MODEL_CARD.read_text()).substitute(values)
