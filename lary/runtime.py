"""How `lary` runs a LAPA-DINOv3 model, in one place for every way in (`lary extract`, `LatentActionLabeler`, the
app): the dtype, the torch threads, loading (errors worded for the caller), the model's identity, and frames to
latent actions in batches, every frame through the DINOv3 backbone once.

The Hub files own what `handler.py` shares without `lary`: the processor's `resize` of many frames of any sizes, the
model's windowed video forward (`LapaDinov3Model.latent_actions_of_video`, which `label_video` and the app use), the
core count and thread rule (`available_cores`, `decoding_cores`, `compute_threads`) and float32 without TF32 (`exact_float32`),
imported here under lary's names. This module adds what only `lary` needs: the thread policy's context
(`torch_threads`: workers, forked children), dtypes, loading, identity, and batches of pairs of any frames.

    runtime = LatentActionRuntime(load_model(name, "float32", device), name, batch_size=32)
    pixels = runtime.processor.resize(frames, runtime.device)   # (F, 3, S, S) uint8, frames of any sizes
    features = runtime.features(pixels)                          # (F, h, w, D), each frame once
    values = runtime.latent_actions(features, first, second)     # pairs (first[i], second[i]) of those frames
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lary.errors import LaryError
from lary.frames import load_processor
from lary.hub import load_pretrained
from lary_hub.modeling_lapa_dinov3 import (  # noqa: F401 (lary's names)
    available_cores,
    compute_threads,
    decoding_cores,
    exact_float32,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LATENT_ACTION_COLUMNS = ("action_indices", "latent_actions", "continuous_latent_actions")
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")
HASH_BLOCK = 16 * 2**20


# --- dtype ----------------------------------------------------------------------------------------------------------


def native_bfloat16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively: x86's AVX512-BF16 or AMX-BF16, Arm's BF16 (Linux's
    /proc/cpuinfo flags; False where it cannot be read)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    line = re.search(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)
    return line is not None and bool(set(line.group(1).split()) & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(name: str, device: torch.device) -> str:
    """`name`, or for "auto" the dtype this device computes fastest with little change to the codes: bfloat16 on a
    GPU that has it and on a CPU with native bfloat16 (`native_bfloat16`), else float32 (benchmarks/bench_cpu_bf16.py)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device.type == "cpu" and native_bfloat16() else "float32"


def dtype_name(dtype: str | torch.dtype | None, argument: str = "dtype") -> str:
    """A library caller's dtype (None: float32; a name or a `torch.dtype`) as one of `DTYPES` or "auto"."""
    if dtype is None:
        return "float32"
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES and name != "auto":
        raise LaryError(f"{argument}={dtype!r} is not one of {sorted(DTYPES) + ['auto']}")
    return name


# --- threads --------------------------------------------------------------------------------------------------------


_forked_after_threads = False
_fork_hook = threading.Lock()
_fork_hook_registered = False


def _one_thread_after_fork() -> None:
    global _forked_after_threads
    if torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        _forked_after_threads = True


def fork_safe_threads() -> None:
    """Processes forked from this one (🤗 `datasets.map(num_proc=N)`, `multiprocessing`'s fork) compute with one torch
    thread. torch's CPU threads are OpenMP's (GNU libgomp), which is not fork-safe: once the parent has run a parallel
    region, a forked child entering one waits for ever for threads that were not copied. PyTorch's DataLoader sets
    one thread in its workers for this reason; `datasets` does not. Registered once, on the first model loaded."""
    global _fork_hook_registered
    with _fork_hook:
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_one_thread_after_fork)
            _fork_hook_registered = True


@contextmanager
def torch_threads(workers: int | None = None) -> Iterator[None]:
    """Compute with no more torch threads than `compute_threads(workers)` (nor than the caller set; `workers`: the
    cores decoding for it, by default `decoding_cores`), then restore the caller's setting. Left alone where one thread is the only safe choice: a DataLoader worker, a child forked after
    torch's threads ran."""
    from torch.utils.data import get_worker_info

    if _forked_after_threads or get_worker_info() is not None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(min(saved, compute_threads(workers)))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# --- loading --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Naming:
    """How the caller named the model and the override in what it was given: the words of its errors."""

    model: str
    allow_missing_weights: str
    other_models: str = ""  # where a model that is not LAPA-DINOv3 belongs


CLI = Naming("--model", "--allow-missing-weights", "; use --encoder for other models")
CLI_ENCODER = Naming("--encoder", "--allow-missing-weights")
API = Naming("name_or_path", "allow_missing_weights=True", "; the labeler takes LAPA-DINOv3 models only")


def load_model(
    name: str | Path,
    dtype: str,
    device: torch.device,
    device_map: str | None = None,
    encoder: bool = False,
    allow_missing_weights: bool = False,
    naming: Naming = CLI,
):
    """`AutoModel.from_pretrained` in eval mode, in `dtype` (a `DTYPES` name or "auto", `resolve_dtype`), on `device`
    unless `device_map` places it; weights that do not fit are refused (`lary.hub.load_pretrained`), in the caller's
    words (`naming`: `CLI`, `CLI_ENCODER` or `API`)."""
    from lary import LapaDinov3Model
    from transformers import AutoModel

    kwargs = {"dtype": DTYPES[resolve_dtype(dtype, device)]}
    if device_map:
        kwargs["device_map"] = device_map
    model = load_pretrained(AutoModel, str(name), naming.model, allow_missing_weights, naming.allow_missing_weights,
                            **kwargs).eval()
    if not encoder and not isinstance(model, LapaDinov3Model):
        raise LaryError(f"{naming.model} {name} is a {type(model).__name__}, not LAPA-DINOv3{naming.other_models}")
    return model if device_map else model.to(device)


def _cache_dir() -> Path:
    return Path(os.environ.get("LARY_CACHE") or Path.home() / ".cache" / "lary") / "weights-sha256"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, cached by its resolved path, size and mtime (`$LARY_CACHE/weights-sha256`, else
    `~/.cache/lary/weights-sha256`): a 1 GB model is read once, not by every process that loads it."""
    path = path.resolve()
    stat = path.stat()
    key = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = _cache_dir() / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {name: cached.get(name) for name in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass  # no entry, or one that cannot be read: hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    try:  # written whole or not at all: concurrent processes each write the same entry
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({**key, "sha256": digest.hexdigest()}))
        os.replace(temporary, entry)
    except OSError:
        pass  # a cache that cannot be written costs time, not correctness
    return digest.hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    """Every file that holds a folder's weights: the single file, or a shard index and every shard it names."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise LaryError(f"{path}: not a readable shard index (a JSON object with a weight_map)") from None
            return [path, *(folder / shard for shard in shards)]
    return []


def model_identity(name: str | Path, model=None) -> str | None:
    """What identifies a model's weights. A local folder: `sha256:` over every weights file's name and sha256 (all the
    weights, not the DINOv3 backbone that every LAPA-DINOv3 model shares; `file_sha256` caches them). A Hub id: the
    commit transformers resolved (`model.config._commit_hash`), or None."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        files = _weight_files(folder)
        if not files:
            return None
        digest = hashlib.sha256()
        for path in files:
            if not path.is_file():
                raise LaryError(f"{folder}: {path.name}, named by its shard index, is missing")
            digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
        return f"sha256:{digest.hexdigest()}"
    return getattr(getattr(model, "config", None), "_commit_hash", None)


# --- frames to latent actions ---------------------------------------------------------------------------------------


def to_numpy(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """CPU numpy arrays: floats as float32 (bfloat16 has no numpy type), indices as int64."""
    arrays = {}
    for name, value in values.items():
        value = value.detach().cpu()
        arrays[name] = (value.float() if value.is_floating_point() else value).numpy()
    return arrays


class LatentActionRuntime:
    """A LAPA-DINOv3 model with its saved processor (size, resample; `processor.resize(frames, device)` resizes on
    the model's device): every frame through the backbone once (`features`), then the latent actions of pairs of those
    frames (`latent_actions`), `batch_size` pairs (twice as many frames) at a time, float32 on a GPU without TF32
    (`exact_float32`): the model methods its windowed video forward uses, for pairs of any frames and for extract's
    batches of several videos. With `compiled`, both calls are `torch.compile`d (compiled at the first batch, and
    again when shapes change)."""

    def __init__(self, model, name_or_path: str | Path, batch_size: int, compiled: bool = False):
        self.model, self.batch_size = model, batch_size
        self._features = torch.compile(model.extract_features) if compiled else model.extract_features
        self._latent_actions = torch.compile(model) if compiled else model
        self.processor = load_processor(str(name_or_path), model.config.backbone_config.image_size)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        fork_safe_threads()

    @torch.inference_mode()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """DINOv3 patch features (F, h, w, D) of uint8 model pixels (F, 3, S, S), each frame once, in chunks of two
        batches (a long clip does not hold all its activations at once)."""
        with exact_float32(self.device, self.dtype):
            chunks = [self._features(self.processor.normalize(chunk.to(self.device, non_blocking=True)).to(self.dtype))
                      for chunk in pixels.split(2 * self.batch_size)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    @torch.inference_mode()
    def latent_actions(
        self, features: torch.Tensor, first: torch.Tensor, second: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """`action_indices`, `latent_actions`, `continuous_latent_actions` of the pairs `(features[first[i]],
        features[second[i]])`, `batch_size` pairs at a time."""
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in LATENT_ACTION_COLUMNS}
        with exact_float32(self.device, self.dtype):
            for a, b in zip(first.split(self.batch_size), second.split(self.batch_size)):
                output = self._latent_actions(backbone_features=torch.stack((features[a], features[b]), dim=1))
                for name in LATENT_ACTION_COLUMNS:
                    outputs[name].append(output[name])
        return {name: torch.cat(values) for name, values in outputs.items()}


class CarriedFeatures:
    """The features a window of a video hands to the next: consecutive windows of pairs `(t, t + stride)` share
    `stride` frames, whose features are kept rather than computed again, so every frame goes through the backbone
    once. Held for at most `samples` videos at once (windows of several videos interleave); a stride above `max_stride`
    frames is not carried (its features would take more memory than a batch's: those frames are computed twice)."""

    def __init__(self, max_stride: int, samples: int = 16):
        self.max_stride, self.samples = max_stride, samples
        self._held: dict[tuple, torch.Tensor] = {}

    def take(self, key: tuple, count: int) -> torch.Tensor | None:
        """The features kept under `key` (a video and its first carried frame) if they are `count` frames."""
        features = self._held.pop(key, None)
        return features if features is not None and len(features) == count else None

    def keep(self, key: tuple, features: torch.Tensor) -> None:
        if len(features) > self.max_stride:
            return
        self._held[key] = features.clone()  # not a view: the rest of the batch's features are freed
        while len(self._held) > self.samples:
            del self._held[next(iter(self._held))]  # the oldest: a video whose windows ended
