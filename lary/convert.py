"""`lary convert`: a LARYBench LAPA-DINOv3 checkpoint -> a Hub-ready folder (config, safetensors, code, card)."""

from __future__ import annotations

import logging
from pathlib import Path

from lary.checkpoint import backbone_config_from, convert_checkpoint
from lary.configs.model import ConvertConfig
from lary.errors import LaryError
from lary.hub import export
from lary.jsonfile import read_json_object
from lary.model_card import known_base_model

logger = logging.getLogger(__name__)


def convert(config: ConvertConfig) -> Path:
    """`lary convert`: the checkpoint as a Hub-ready folder; returns it."""
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise LaryError(f"--out {config.out} is a file, not a folder: choose a folder to write the model into")
    laq = read_json_object(config.laq_config, "LAQ config") if config.laq_config else {}
    backbone_config = backbone_config_from(config.backbone_config, config.backbone)
    model = convert_checkpoint(config.checkpoint, laq, backbone_config, config.backbone, config.allow_missing_weights)
    provenance = (
        f"Converted from the LARYBench checkpoint `{Path(config.checkpoint).name}` by `lary convert`: its outputs match "
        "the LARYBench reference implementation (codes exactly, vectors within 1e-4 in float32)."
    )
    out = export(model, config.out, provenance=provenance, base_model=known_base_model(model.config, config.backbone))
    parameters = sum(p.numel() for p in model.parameters())
    logger.info("converted %s (%.1fM parameters) -> %s", config.checkpoint, parameters / 1e6, out)
    return out
