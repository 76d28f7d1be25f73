"""The representations `lary extract` writes: LAPA-DINOv3 latent actions (`--model`) or the patch features of frame
pairs from any 🤗 vision `AutoModel` or V-JEPA2 (`--encoder`).

An extractor has two halves. `prepare` runs in the DataLoader workers on decoded frames: the LAPA-DINOv3 processor's
resize to model size (on CPU), or nothing when the model is on a GPU, which then resizes the uint8 frames itself
(`resize_on_device`); encoders apply their processor config there. `compute` runs in the main process on a batch of
`Piece`s (consecutive frames of one sample): every frame goes through the backbone once, then each piece's pairs
`(i, i + stride)` are formed from the frame features. It returns, per piece, numpy arrays with a leading pair axis.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from lary import LapaDinov3Model
from lary.encoders import (
    EncoderTransform,
    encode_frames,
    is_vjepa2,
    processor_config,
    tubelets,
)
from lary.errors import LaryError
from lary.extract.loader import Piece
from lary.extract.rows import latent_action_types, list_type
from lary.frames import load_processor
from lary.hub import load_pretrained

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HASHED_BYTES = 16 * 2**20
LATENT_ACTION_COLUMNS = ("action_indices", "latent_actions", "continuous_latent_actions")


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


@contextmanager
def exact_float32(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """float32 on a GPU computed in float32: PyTorch lets cuDNN's convolutions (the patch embedding, the position
    generators) use TF32 by default, which the CPU's numbers do not. Other dtypes and devices are left alone."""
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def load_model(
    name: str, dtype: str, device_map: str | None, device: torch.device, encoder: bool = False, allow_missing_weights: bool = False
):
    """`AutoModel.from_pretrained` in eval mode, on `device` unless `device_map` places it; weights that do not fit
    are refused (`lary.hub.load_pretrained`)."""
    from transformers import AutoModel

    flag = "--encoder" if encoder else "--model"
    kwargs = {"dtype": DTYPES[resolve_dtype(dtype, device)]}
    if device_map:
        kwargs["device_map"] = device_map
    model = load_pretrained(AutoModel, name, flag, allow_missing_weights, **kwargs).eval()
    if not encoder and not isinstance(model, LapaDinov3Model):
        raise LaryError(f"--model {name} is a {type(model).__name__}, not LAPA-DINOv3; use --encoder for other models")
    return model if device_map else model.to(device)


def model_revision(name: str, model) -> str | None:
    """Local folder: `sha256:` of the weights' size and first 16 MiB (`model.safetensors`, or the shard index);
    Hub id: the commit hash transformers resolved, or None."""
    folder = Path(name)
    if folder.is_dir():
        for weights in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            path = folder / weights
            if path.is_file():
                digest = hashlib.sha256(str(path.stat().st_size).encode())
                with open(path, "rb") as file:
                    digest.update(file.read(HASHED_BYTES))
                return f"sha256:{digest.hexdigest()}"
        return None
    return getattr(model.config, "_commit_hash", None)


def _pair_indices(pieces: list[Piece]) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of each piece's pairs `(i, i + stride)` in the batch's concatenated frames."""
    first, offset = [], 0
    for piece in pieces:
        first.append(offset + torch.arange(piece.pairs))
        offset += len(piece.frame_indices)
    first_index = torch.cat(first)
    strides = torch.cat([torch.full((piece.pairs,), piece.stride) for piece in pieces])
    return first_index, first_index + strides


def _split(values: dict[str, torch.Tensor], pieces: list[Piece]) -> list[dict[str, np.ndarray]]:
    arrays = {name: _numpy(value) for name, value in values.items()}
    bounds = np.cumsum([0] + [piece.pairs for piece in pieces])
    return [{name: array[a:b] for name, array in arrays.items()} for a, b in zip(bounds[:-1], bounds[1:])]


class LatentActionExtractor:
    """LAPA-DINOv3 `action_indices`, `latent_actions` and `continuous_latent_actions`, with the processor saved in
    the model folder (its size and resample). With `compiled`, the backbone's features and the latent actions are
    computed by `torch.compile`d calls (compiled at the first batch, and once more when batch shapes change)."""

    def __init__(self, model: LapaDinov3Model, name: str, batch_size: int, compiled: bool = False):
        self.batch_size = batch_size
        self._features = torch.compile(model.extract_features) if compiled else model.extract_features
        self._latent_actions = torch.compile(model) if compiled else model
        self.processor = load_processor(name, model.config.backbone_config.image_size)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.resize_on_device = self.device.type == "cuda"

    def columns(self, per_row_pairs: bool) -> dict[str, pa.DataType]:
        return latent_action_types(per_row_pairs)

    def resize(self, frames: np.ndarray) -> torch.Tensor:
        return self.processor.resize(torch.from_numpy(frames))

    def prepare(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        """Each frame as it is, for the GPU to resize (not copied: the loader stacks it into shared memory), or resized
        here."""
        if self.resize_on_device:
            return [torch.from_numpy(frame) for frame in frames]
        return list(self.resize(np.stack(frames)))

    def _resized(self, piece: Piece) -> torch.Tensor:
        pixels = piece.pixels.to(self.device, non_blocking=True)
        return pixels if piece.resized else self.processor.resize(pixels)

    def _pixels(self, pieces: list[Piece]) -> torch.Tensor:
        """The batch's frames as the model's input. They are joined while still uint8 and normalised once, so a batch
        allocates one float buffer, not one per piece plus their concatenation."""
        frames = [self._resized(piece) for piece in pieces]
        return self.processor.normalize(frames[0] if len(frames) == 1 else torch.cat(frames)).to(self.dtype)

    @torch.inference_mode()
    def compute(self, pieces: list[Piece]) -> list[dict[str, np.ndarray]]:
        pixels = self._pixels(pieces)
        # frames in chunks of at most two batches: a long clip row does not hold all its activations at once
        features = torch.cat([self._features(chunk) for chunk in pixels.split(2 * self.batch_size)])
        first, second = _pair_indices(pieces)
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in LATENT_ACTION_COLUMNS}
        for a, b in zip(first.split(self.batch_size), second.split(self.batch_size)):
            output = self._latent_actions(backbone_features=torch.stack((features[a], features[b]), dim=1))
            for name in LATENT_ACTION_COLUMNS:
                outputs[name].append(output[name])
        return _split({name: torch.cat(values) for name, values in outputs.items()}, pieces)


class EncoderFeatureExtractor:
    """Encoder `features` of every pair, as `lary.encoders.encode_frame_pairs` computes them: `2 * patches x D` (both
    frames' patch tokens; every frame encoded once) or, for V-JEPA2, `patches x D` (the pair as one tubelet).
    Frames are preprocessed from the model's processor config (`lary.encoders.EncoderTransform`); all frames of a run
    must come out at one size (SigLIP2 NaFlex keeps the aspect ratio, so frames of other shapes get other grids)."""

    resize_on_device = False

    def __init__(self, model, name: str, batch_size: int):
        self.model, self.name, self.batch_size = model, name, batch_size
        self.transform = EncoderTransform.from_config(processor_config(name, model))
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.frame_size: tuple[int, int] | None = None

    def columns(self, per_row_pairs: bool) -> dict[str, pa.DataType]:
        return {"features": list_type(pa.float32(), 2 + int(per_row_pairs))}

    def resize(self, frames: np.ndarray) -> torch.Tensor:
        return self.transform(frames)

    def prepare(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        return self.transform.each(frames)  # not stacked: the loader stacks them into shared memory

    def _check_size(self, pixels: torch.Tensor) -> None:
        size = tuple(pixels.shape[-2:])
        self.frame_size = self.frame_size or size
        if size != self.frame_size:
            raise LaryError(
                f"--encoder {self.name} preprocesses frames of different shapes to {self.frame_size[1]}x{self.frame_size[0]} "
                f"and {size[1]}x{size[0]} pixels: the features of one run need one size, so give frames of one shape"
            )

    @torch.inference_mode()
    def compute(self, pieces: list[Piece]) -> list[dict[str, np.ndarray]]:
        for piece in pieces:
            self._check_size(piece.pixels)
        pixels = torch.cat([piece.pixels for piece in pieces]).to(self.device, self.dtype, non_blocking=True)
        first, second = _pair_indices(pieces)
        if is_vjepa2(self.model):
            chunks = [tubelets(self.model, torch.stack((pixels[a], pixels[b]), dim=1))
                      for a, b in zip(first.split(self.batch_size), second.split(self.batch_size))]
            return _split({"features": torch.cat(chunks)}, pieces)
        tokens = torch.cat([encode_frames(self.model, chunk) for chunk in pixels.split(2 * self.batch_size)])
        return _split({"features": torch.cat((tokens[first], tokens[second]), dim=1)}, pieces)


Extractor = LatentActionExtractor | EncoderFeatureExtractor
