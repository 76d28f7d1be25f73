"""`lary export`: latent actions written back into a copy of a LeRobot dataset, as per-frame features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lary.configs.parser import option


@dataclass(kw_only=True)
class ExportConfig:
    lerobot: str = option("The LeRobot dataset (v3.0 or v2.1) that `lary extract --lerobot` read: a folder or a Hub id.", metavar="PATH_OR_ID")
    latent_actions: Path = option("The `lary extract --lerobot` output folder (its Parquet shards).")
    out: Path = option("Where the copy with the new features is written (must not exist).", short="-o")
    revision: str | None = option("Hub revision of --lerobot.", default=None)
    vectors: bool = option("Also write `latent_action.vectors` (n x D floats per frame; large for D = 1024).", default=True)
    copy_videos: bool = option("Copy the videos instead of hard-linking them (where the file system allows links).", default=False)
