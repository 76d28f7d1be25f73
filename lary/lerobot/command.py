"""`lary export`: the latent actions of `lary extract --lerobot` as per-frame features of a copy of the dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from lary.configs.export import ExportConfig
from lary.extract.shards import read_manifest
from lary.lerobot import INDICES, VALID, VECTORS, export_latent_actions, open_lerobot

logger = logging.getLogger(__name__)


def export(config: ExportConfig) -> Path:
    """Write the copy; returns its folder."""
    if Path(config.lerobot).expanduser().is_dir():
        dataset = Path(config.lerobot).expanduser()
    else:  # a Hub id: its files, with the camera that was extracted
        camera = read_manifest(config.latent_actions)["arguments"].get("camera")
        dataset = open_lerobot(config.lerobot, config.revision, camera).root
    out = export_latent_actions(dataset, config.latent_actions, config.out, with_vectors=config.vectors,
                                copy_videos=config.copy_videos)
    features = [INDICES, *([VECTORS] if config.vectors else []), VALID]
    logger.info("wrote %s: %s with %s", out, dataset, ", ".join(features))
    return out
