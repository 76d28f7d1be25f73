"""LeRobot datasets (format v3.0 and v2.1): read episodes, frame pairs and their action targets for latent-action
extraction, and write latent actions back as per-frame features. Needs no `lerobot` package."""

from .dataset import Episode, EpisodeInfo, LeRobotFolder, open_lerobot
from .export import INDICES, VALID, VECTORS, export_latent_actions
from .pairs import FramePairs, frame_pairs

__all__ = [
    "INDICES",
    "VALID",
    "VECTORS",
    "Episode",
    "EpisodeInfo",
    "FramePairs",
    "LeRobotFolder",
    "export_latent_actions",
    "frame_pairs",
    "open_lerobot",
]
