"""Models as Hub folders: writing one (`export`), the embedded tiny model, and telling folders from Hub ids."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import lary_hub

from lary.errors import LaryError

if TYPE_CHECKING:
    from lary import LapaDinov3Model, LapaDinov3Processor

PIPELINE_TASK = "latent-action-extraction"
# `examples/` sits beside the Hub files, which install as `lary_hub` (a checkout, or package data of the wheel).
EMBEDDED_MODEL = Path(next(iter(lary_hub.__path__))) / "examples" / "tiny-lapa-dinov3"
# The Inference Endpoints handler, a Hub file beside the three code files, and what it imports (with lary's pins)
ENDPOINT_HANDLER = Path(next(iter(lary_hub.__path__))) / "handler.py"
ENDPOINT_REQUIREMENTS = ("torch", "transformers", "numpy", "pillow", "av")


def default_model() -> Path:
    """The tiny model embedded in the package (`lary demo`, `lary app`)."""
    if not (EMBEDDED_MODEL / "config.json").exists():
        raise LaryError(f"the embedded model is missing from {EMBEDDED_MODEL}: reinstall lary, or pass --model ID_OR_DIR")
    return EMBEDDED_MODEL


# What the embedded model is not: said wherever it runs by default (`lary demo`, `lary app`)
EMBEDDED_MODEL_NOTE = (
    "the embedded tiny model: its backbone is DINOv3-shaped but randomly initialised (not DINOv3's weights), and it was "
    "trained on synthetic clips of moving shapes only. It knows nothing of real video: its codes and predictions for "
    "real footage mean nothing. For real latent actions use a trained model, e.g. --model AGI-Eval/LAPA-DINOv3"
)


def is_embedded_model(name: str | Path) -> bool:
    """Whether `name` is the embedded tiny model's folder."""
    return Path(name).expanduser().resolve() == EMBEDDED_MODEL.resolve()


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a local path: absolute, `./`, `../`, `~`, or more than one `/` (a Hub id is
    `name` or `owner/name`)."""
    return name.startswith((".", "~", "/")) or "\\" in name or name.count("/") > 1


def check_model_name(name: str, flag: str) -> None:
    """A folder that does not exist is named as such (rather than as a malformed Hub id)."""
    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise LaryError(f"{flag} {name}: no such folder")


def export(
    model: LapaDinov3Model,
    out: str | Path,
    processor: LapaDinov3Processor | None = None,
    provenance: str = "Saved by the `lary` package.",
    base_model: str | None = None,
) -> Path:
    """Write a Hub-ready folder: config with auto_map and custom pipeline, safetensors, code files, and a card with
    the model's sizes, `provenance` (where its weights come from) and `base_model` (the DINOv3 weights' Hub id)."""
    from lary import LapaDinov3Processor
    from lary.model_card import render_model_card

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
    write_endpoint_handler(out)
    return out


def write_endpoint_handler(out: Path) -> None:
    """`handler.py` (Inference Endpoints' custom handler) and the `requirements.txt` it needs, never `lary`."""
    from packaging.requirements import Requirement

    shutil.copyfile(ENDPOINT_HANDLER, out / "handler.py")
    requirements = [Requirement(line) for line in importlib.metadata.requires("lary") or []]
    pins = [str(r) for r in requirements if r.name in ENDPOINT_REQUIREMENTS and r.marker is None]
    (out / "requirements.txt").write_text("# what handler.py imports (Inference Endpoints installs it)\n" + "\n".join(pins) + "\n")
