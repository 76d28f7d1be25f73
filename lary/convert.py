"""`lary convert`: a LARYBench LAPA-DINOv3 checkpoint -> a Hub-ready folder (config, safetensors, code, card)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, DINOv3ViTConfig, DINOv3ViTModel
from transformers.initialization import no_init_weights

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor
from lary.checkpoint import (
    REFERENCE_LAQ_DEFAULTS,
    convert_state_dict,
    load_reference_state_dict,
)
from lary.configs.model import ConvertConfig
from lary.errors import LaryError
from lary.jsonfile import read_json_object
from lary.model_card import known_base_model, render_model_card

logger = logging.getLogger(__name__)

PIPELINE_TASK = "latent-action-extraction"



def config_from_reference(laq: dict, backbone_config: DINOv3ViTConfig) -> LapaDinov3Config:
    """Our config from the reference constructor's keyword arguments and a DINOv3 config."""
    unknown = sorted(set(laq) - set(REFERENCE_LAQ_DEFAULTS))
    if unknown:
        raise LaryError(f"unknown LAQ config keys {unknown}; expected a subset of {sorted(REFERENCE_LAQ_DEFAULTS)}")
    laq = {**REFERENCE_LAQ_DEFAULTS, **laq}
    if laq["dim"] != backbone_config.hidden_size:
        raise LaryError(f"LAQ dim={laq['dim']} must equal the backbone's hidden_size={backbone_config.hidden_size}")
    if laq["patch_size"] != backbone_config.patch_size:
        raise LaryError(f"LAQ patch_size={laq['patch_size']} differs from the backbone's {backbone_config.patch_size}")
    backbone_config.image_size = laq["image_size"]
    return LapaDinov3Config(
        backbone_config=backbone_config,
        quant_dim=laq["quant_dim"],
        codebook_size=laq["codebook_size"],
        code_seq_len=laq["code_seq_len"],
        spatial_depth=laq["spatial_depth"],
        temporal_depth=laq["temporal_depth"],
        decoder_depth=laq["spatial_depth"],  # the reference's decoder has the spatial encoder's depth
        dim_head=laq["dim_head"],
        heads=laq["heads"],
    )


def _backbone_config(path: str | None, backbone: str | None) -> DINOv3ViTConfig:
    if path is not None:
        data = read_json_object(path, "backbone config")
        data.pop("transformers_version", None)
        return DINOv3ViTConfig(**data)
    if backbone is not None:
        config = AutoConfig.from_pretrained(backbone)
        if not isinstance(config, DINOv3ViTConfig):
            raise LaryError(f"--backbone {backbone} is a {type(config).__name__}, not a DINOv3 ViT")
        return config
    return LapaDinov3Config().backbone_config


def convert_checkpoint(
    checkpoint: str | Path,
    laq_config: dict | None = None,
    backbone_config: DINOv3ViTConfig | None = None,
    backbone: str | None = None,
) -> LapaDinov3Model:
    """Load a reference checkpoint into `LapaDinov3Model`; DINOv3 weights from `backbone` if it has none."""
    reference = load_reference_state_dict(checkpoint)
    if backbone_config is None:
        backbone_config = _backbone_config(None, backbone)
    config = config_from_reference(laq_config or {}, backbone_config)
    if not any(key.startswith("dino_tokenizer.") for key in reference):
        if backbone is None:
            raise LaryError(f"{checkpoint} holds no DINOv3 weights (dino_tokenizer.*): pass --backbone ID_OR_DIR")
        dinov3 = DINOv3ViTModel.from_pretrained(backbone, dtype=torch.float32)
        reference.update({f"dino_tokenizer.{key}": value for key, value in dinov3.state_dict().items()})
    with no_init_weights():
        model = LapaDinov3Model(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    model.load_state_dict(convert_state_dict(reference, expected, source=str(checkpoint)), strict=True)
    return model.eval()


def export(
    model: LapaDinov3Model,
    out: str | Path,
    processor: LapaDinov3Processor | None = None,
    provenance: str = "Saved by the `lary` package.",
    base_model: str | None = None,
) -> Path:
    """Write a Hub-ready folder: config with auto_map and custom pipeline, safetensors, code files, and a card with
    the model's sizes, `provenance` (where its weights come from) and `base_model` (the DINOv3 weights' Hub id)."""
    out = Path(out)
    processor = processor or LapaDinov3Processor(size=model.config.backbone_config.image_size)
    model.config.custom_pipelines = {
        PIPELINE_TASK: {
            "impl": "processing_lapa_dinov3.LapaDinov3LatentActionPipeline",
            "pt": ["AutoModel"],
            "type": "image",
        }
    }
    # the model's and config's classes are registered for the Auto classes where they are defined, so their save
    # writes `auto_map` and the three code files (the pipeline's processing file is a relative import of the model's)
    processor.register_for_auto_class("AutoProcessor")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "README.md").write_text(render_model_card(model.config, str(out), provenance, base_model))
    return out


def convert(config: ConvertConfig) -> Path:
    """`lary convert`: the checkpoint as a Hub-ready folder; returns it."""
    laq = read_json_object(config.laq_config, "LAQ config") if config.laq_config else {}
    backbone_config = _backbone_config(config.backbone_config, config.backbone)
    model = convert_checkpoint(config.checkpoint, laq, backbone_config, backbone=config.backbone)
    provenance = (
        f"Converted from the LARYBench checkpoint `{Path(config.checkpoint).name}` by `lary convert`: its outputs match "
        "the LARYBench reference implementation (codes exactly, vectors within 1e-4 in float32)."
    )
    out = export(model, config.out, provenance=provenance, base_model=known_base_model(model.config, config.backbone))
    parameters = sum(p.numel() for p in model.parameters())
    logger.info("converted %s (%.1fM parameters) -> %s", config.checkpoint, parameters / 1e6, out)
    return out
