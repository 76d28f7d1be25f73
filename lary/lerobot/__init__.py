"""LeRobot datasets (format v3.0 and v2.1): read episodes, frame pairs and their action targets for latent-action
extraction, and write latent actions back as per-frame features. Needs no `lerobot` package."""

from .dataset import Episode, EpisodeInfo, LeRobotFolder, open_lerobot
from .pairs import FramePairs, frame_pairs

__all__ = [
    "Episode",
    "EpisodeInfo",
    "FramePairs",
    "LeRobotFolder",
    "frame_pairs",
    "open_lerobot",
]
