"""Models as Hub folders: writing one (`export`), the embedded tiny model, and telling folders from Hub ids."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import lary_hub

from lary.errors import LaryError

if TYPE_CHECKING:
    from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor

# `examples/` sits beside the Hub files, which install as `lary_hub` (a checkout, or package data of the wheel).
EMBEDDED_MODEL = Path(next(iter(lary_hub.__path__))) / "examples" / "tiny-lapa-dinov3"
# The Inference Endpoints handler, a Hub file beside the three code files, and what it imports (with lary's pins)
ENDPOINT_HANDLER = Path(next(iter(lary_hub.__path__))) / "handler.py"
ENDPOINT_REQUIREMENTS = ("torch", "transformers", "numpy", "pillow", "av")
MAX_KEYS_NAMED = 10  # per kind of weight problem, in one error line

logger = logging.getLogger(__name__)


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


def load_pretrained(loader, name: str | Path, flag: str, allow_missing_weights: bool = False,
                    allow_option: str = "--allow-missing-weights", **kwargs):
    """`loader.from_pretrained(name, **kwargs)` (an Auto or model class) as every `lary` command loads a model:
    weights the model lacks (missing), that it does not have (unexpected) or of another shape (mis-shaped) are refused
    with the keys named, unless `allow_missing_weights` (missing ones then start at random, unexpected ones are
    dropped; mis-shaped ones are always refused). A config value out of range or an unreadable weights file is named
    on one line too. `flag` and `allow_option` name the model and the override as the caller gave them (CLI flags, or
    a library function's arguments)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    check_model_name(str(name), flag)
    report = logging.getLogger("transformers.modeling_utils")
    report.addFilter(_drop_load_report)  # its table of keys; ours below is one line
    try:
        model, info = loader.from_pretrained(name, output_loading_info=True, **kwargs)
    except StrictDataclassError as error:
        raise LaryError(f"{flag} {name}: config.json: {error.__cause__ or error}") from None
    except SafetensorError as error:
        raise LaryError(f"{flag} {name}: {_unreadable_weights(name)} is truncated or not a safetensors file ({error})") from None
    except RuntimeError as error:
        info = _loading_info(error)
        if info is None or not info.mismatched_keys:
            raise
        raise LaryError(f"{flag} {name}: {_weight_problems(info)}; its weights do not fit its config.json") from None
    except OSError as error:
        raise LaryError(f"{flag} {name} is not a model folder, nor a model that could be loaded from the Hub: {error}") from None
    finally:
        report.removeFilter(_drop_load_report)
    problems = _weight_problems(SimpleNamespace(**info))
    if problems and not allow_missing_weights:
        raise LaryError(
            f"{flag} {name}: {problems}. Its outputs would be wrong; pass {allow_option} to load it anyway "
            "(missing weights start at random, unexpected ones are dropped)"
        )
    if problems:
        logger.warning("%s %s: %s (%s)", flag, name, problems, allow_option)
    _refuse_non_finite(model, f"{flag} {name}")
    return model


def build_config(where: str | Path, **values) -> LapaDinov3Config:
    """`LapaDinov3Config(**values)`; a value out of range (checked before anything is allocated) is named on one
    line, with `where` the values came from."""
    from huggingface_hub.errors import StrictDataclassError

    from lary import LapaDinov3Config

    try:
        return LapaDinov3Config(**values)
    except StrictDataclassError as error:
        raise LaryError(f"{where}: {error.__cause__ or error}") from None


def _drop_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


def _loading_info(error: BaseException):
    """transformers' record of the keys of a load it refused (it raises after logging the report only, so the record
    is read from the frame that raised)."""
    from transformers.utils.loading_report import LoadStateDictInfo

    traceback = error.__traceback__
    while traceback is not None:
        info = traceback.tb_frame.f_locals.get("loading_info")
        if isinstance(info, LoadStateDictInfo):
            return info
        traceback = traceback.tb_next
    return None


def _weight_problems(info) -> str:
    """'missing a, b; unexpected c; mis-shaped d (checkpoint (3, 4), model (8, 4))', with layer indices merged
    (transformers' `layers.{0, 1}.x`); empty when the weights fit."""
    from transformers.utils.loading_report import update_key_name

    def listed(keys) -> str:
        keys = sorted(update_key_name(sorted(keys)))
        return ", ".join(keys[:MAX_KEYS_NAMED]) + (f" and {len(keys) - MAX_KEYS_NAMED} more" if len(keys) > MAX_KEYS_NAMED else "")

    shapes = {key: f" (checkpoint {tuple(checkpoint)}, model {tuple(model)})" for key, checkpoint, model in info.mismatched_keys}
    parts = [f"{what} weights {listed(keys)}" for what, keys in (("missing", info.missing_keys), ("unexpected", info.unexpected_keys)) if keys]
    if shapes:
        parts.append("mis-shaped weights " + ", ".join(key + shape for key, shape in sorted(shapes.items())[:MAX_KEYS_NAMED]))
    return "; ".join(parts)


def _refuse_non_finite(model, where: str) -> None:
    """Weights holding NaN or infinity (a training run that diverged) give NaN vectors and the codes of nothing:
    refused, with no override, naming them (layer indices merged, as `_weight_problems` names keys)."""
    from transformers.utils.loading_report import update_key_name

    bad = [key for key, tensor in model.state_dict().items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if bad:
        keys = sorted(update_key_name(bad))
        more = f" and {len(keys) - MAX_KEYS_NAMED} more" if len(keys) > MAX_KEYS_NAMED else ""
        raise LaryError(f"{where}: weights {', '.join(keys[:MAX_KEYS_NAMED])}{more} hold NaN or infinity; a model "
                        "whose training diverged gives no latent actions")


def _unreadable_weights(name: str | Path) -> str:
    """The first weights file of a local folder that safetensors cannot open (truncated, or not safetensors)."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(name).glob("*.safetensors")) if Path(name).is_dir() else []:
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError:
            return str(path)
    return "a weights file"


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
    # the classes write `auto_map`, the custom pipeline and the three code files on every save (the Hub files)
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
