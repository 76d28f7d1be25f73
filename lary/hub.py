"""Models as Hub folders: writing one (`export`), the embedded tiny model, and telling folders from Hub ids."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import lary_hub

from lary.errors import LaryError
from lary.jsonfile import read_json_object
from lary.paths import inside

if TYPE_CHECKING:
    from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor

# `examples/` sits beside the Hub files, which install as `lary_hub` (a checkout, or package data of the wheel).
EMBEDDED_MODEL = Path(next(iter(lary_hub.__path__))) / "examples" / "tiny-lapa-dinov3"
# The Inference Endpoints handler, a Hub file beside the three code files, and what it needs that the stock container
# (huggingface-inference-toolkit 0.5.6: transformers 4.51.3, torch 2.5.1, numpy, Pillow) lacks: PyAV with
# `VideoFrame.rotation` (14.1). Never transformers or torch: the container's toolkit cannot start on transformers 5.
ENDPOINT_HANDLER = Path(next(iter(lary_hub.__path__))) / "handler.py"
ENDPOINT_REQUIREMENTS = "# what handler.py needs beyond the Inference Endpoints container (it installs this file)\nav>=14.1\n"
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
    dropped; mis-shaped ones are always refused). A local folder's weights are checked from their headers against the
    model its config makes, built on the meta device, before anything is allocated (`_header_report`); then
    transformers' own loading report is checked again. A config value out of range, a config.json that is not an
    object or an unreadable weights file is named on one line too. `flag` and `allow_option` name the model and the
    override as the caller gave them (CLI flags, or a library function's arguments)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    check_model_name(str(name), flag)
    where = f"{flag} {name}"
    report = logging.getLogger("transformers.modeling_utils")
    report.addFilter(_drop_load_report)  # its table of keys; ours below is one line
    try:
        _check_config_file(name, where)
        early = _header_report(loader, name, kwargs)
        if early is not None and (early.mismatched_keys or not allow_missing_weights):
            _check_weights(early, where, allow_missing_weights, allow_option)
        # mis-shaped weights reported, not raised, so that the report names them (`_check_weights` refuses them)
        model, info = loader.from_pretrained(name, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except StrictDataclassError as error:
        raise LaryError(f"{where}: config.json: {error.__cause__ or error}") from None
    except SafetensorError as error:
        raise LaryError(f"{where}: {_unreadable_weights(name)} is truncated or not a safetensors file ({error})") from None
    except OSError as error:
        raise LaryError(f"{where} is not a model folder, nor a model that could be loaded from the Hub: {error}") from None
    finally:
        report.removeFilter(_drop_load_report)
    _check_weights(SimpleNamespace(**info), where, allow_missing_weights, allow_option)
    _refuse_non_finite(model, where)
    return model


def _check_weights(info, where: str, allow_missing_weights: bool, allow_option: str) -> None:
    """Refuse the weights a loading report (`missing_keys`, `unexpected_keys`, `mismatched_keys`) finds wrong, or,
    with `allow_missing_weights`, warn of the missing and unexpected ones (mis-shaped ones are always refused)."""
    problems = _weight_problems(info)
    if info.mismatched_keys:
        raise LaryError(f"{where}: {problems}; its weights do not fit its config.json")
    if problems and not allow_missing_weights:
        raise LaryError(
            f"{where}: {problems}. Its outputs would be wrong; pass {allow_option} to load it anyway "
            "(missing weights start at random, unexpected ones are dropped)"
        )
    if problems:
        logger.warning("%s: %s (%s)", where, problems, allow_option)


def _check_config_file(name: str | Path, where: str) -> None:
    """A local folder's config.json must be a JSON object (transformers fails on a list with a traceback)."""
    path = Path(name).expanduser() / "config.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, ValueError) as error:
            raise LaryError(f"{where}: config.json is not JSON ({error})") from None
        if not isinstance(data, dict):
            raise LaryError(f"{where}: config.json holds a JSON {type(data).__name__}, not an object")


def _weights_files(name: str | Path) -> list[Path]:
    """The safetensors files of a local model folder (one, or the shards its index names, kept inside the folder)."""
    folder = Path(name).expanduser()
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return []
    weight_map = read_json_object(index, "weights index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise LaryError(f"{index} has no weight_map object")
    return [inside(folder, file, f"{index}: weight_map") for file in sorted(set(weight_map.values()))]


def _header_report(loader, name: str | Path, kwargs: dict):
    """transformers' loading report as it would be, from the weights files' headers (names and shapes, no tensor
    read) and the model built on the meta device (nothing allocated), with transformers' own key renaming (its
    conversion mapping and base-model prefix), tied weights and ignore rules; None for a model that is not a local
    folder of safetensors, or whose model cannot be built on the meta device (transformers then checks it after
    loading). A 1-billion-parameter config beside a weights file of a few kB is refused in a fraction of a second."""
    import torch
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    from transformers.utils.loading_report import LoadStateDictInfo

    files = _weights_files(name) if Path(name).expanduser().is_dir() else []
    if not files:
        return None
    auto = hasattr(loader, "from_config")  # an Auto class, else a model class
    remote = {key: kwargs[key] for key in ("trust_remote_code",) if key in kwargs}
    try:
        config = (AutoConfig if auto else loader.config_class).from_pretrained(name, **remote)
        with torch.device("meta"):
            model = loader.from_config(config, **remote) if auto else loader._from_config(config)
    except StrictDataclassError:
        raise
    except Exception:  # noqa: BLE001  what cannot be built on the meta device is checked by transformers after loading
        return None
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    transforms = get_model_conversion_mapping(model)
    renamings = [transform for transform in transforms if isinstance(transform, WeightRenaming)]
    converters = [transform for transform in transforms if isinstance(transform, WeightConverter)]
    fields = {"missing_keys": set(expected), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": [],
              "conversion_errors": {}, "skipped_pp_keys": set()}  # skipped_pp_keys: not in transformers 5.4
    known = LoadStateDictInfo.__dataclass_fields__
    info = LoadStateDictInfo(**{key: value for key, value in fields.items() if key in known})
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for key in weights.keys():
                target, converted = rename_source_key(key, renamings, converters, model.base_model_prefix, expected)
                if target not in expected and key in expected:  # as transformers: a key of the model is not renamed
                    target, converted = key, None
                if target not in expected:
                    info.unexpected_keys.add(key)
                    continue
                info.missing_keys.discard(target)
                shape = tuple(weights.get_slice(key).get_shape())
                if converted is None and shape != expected[target]:  # a converter may merge or split tensors
                    info.mismatched_keys.add((target, shape, expected[target]))
    info.missing_keys -= set(getattr(model, "all_tied_weights_keys", {}))  # tied weights are filled from their source
    model._adjust_missing_and_unexpected_keys(info)  # transformers' ignore rules (legacy buffers, model exceptions)
    return info


def load_config(config_class, name: str | Path, flag: str):
    """`config_class.from_pretrained(name)` (a folder or Hub id), its errors on one line naming `flag`: to check a
    model's sizes before its weights load."""
    from huggingface_hub.errors import StrictDataclassError

    check_model_name(str(name), flag)
    _check_config_file(name, f"{flag} {name}")
    try:
        return config_class.from_pretrained(name)
    except StrictDataclassError as error:
        raise LaryError(f"{flag} {name}: config.json: {error.__cause__ or error}") from None
    except OSError as error:
        raise LaryError(f"{flag} {name} is not a model folder, nor a model that could be loaded from the Hub: {error}") from None


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
    _as_umask_allows(out.glob("model*.safetensors*"))  # transformers writes them 0600, unreadable to the user's group
    processor.save_pretrained(out)
    (out / "README.md").write_text(render_model_card(model.config, str(out), provenance, base_model))
    write_endpoint_handler(out)
    return out


def _as_umask_allows(paths) -> None:
    """Give files the mode the user's umask gives new files (0644 under the usual 022), as `open` would."""
    mask = os.umask(0)
    os.umask(mask)
    for path in paths:
        os.chmod(path, 0o666 & ~mask)


def write_endpoint_handler(out: Path) -> None:
    """`handler.py` (Inference Endpoints' custom handler) and the `requirements.txt` it needs, never `lary`, into a
    model folder; files of those names that `lary` did not write (an older `lary`'s are replaced) are refused."""
    files = {"handler.py": (ENDPOINT_HANDLER.read_text(), '"""Inference Endpoints handler of LAPA-DINOv3'),
             "requirements.txt": (ENDPOINT_REQUIREMENTS, "# what handler.py ")}
    for name, (text, ours) in files.items():
        path = out / name
        if (path.is_symlink() or path.exists()) and not path.read_text(errors="replace").startswith(ours):
            raise LaryError(f"{path} exists and was not written by lary: move it away to add the endpoint's {name}")
    for name, (text, _) in files.items():
        if not (out / name).exists() or (out / name).read_text() != text:  # the embedded model's links stay links
            (out / name).write_text(text)
