"""`lary endpoint`: the Inference Endpoints handler added to a model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lary.configs.parser import option


@dataclass(kw_only=True)
class EndpointConfig:
    folder: Path = option("A LAPA-DINOv3 model folder (config.json, weights, code files).", positional=True)
