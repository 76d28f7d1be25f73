"""`lary endpoint FOLDER`: `handler.py` and its `requirements.txt` added to a model folder saved without them (every
folder `lary` writes has them), so that Inference Endpoints can serve it (docs/serving.md)."""

from __future__ import annotations

import logging
from pathlib import Path

from lary.configs.endpoint import EndpointConfig
from lary.errors import LaryError
from lary.hub import write_endpoint_handler
from lary.jsonfile import read_json_object

logger = logging.getLogger(__name__)


def endpoint(config: EndpointConfig) -> Path:
    """`lary endpoint`: the handler files written into `config.folder`, a LAPA-DINOv3 model folder; returns it."""
    folder = Path(config.folder)
    if not (folder / "config.json").is_file():
        raise LaryError(f"{folder}: no config.json; give a LAPA-DINOv3 model folder")
    model_type = read_json_object(folder / "config.json", "model config").get("model_type")
    if model_type != "lapa_dinov3":
        raise LaryError(f"{folder / 'config.json'}: model_type is {model_type!r}, not 'lapa_dinov3'; the handler serves LAPA-DINOv3 models")
    write_endpoint_handler(folder)
    logger.info("wrote %s and %s: deploy the folder as docs/serving.md says", folder / "handler.py", folder / "requirements.txt")
    return folder
