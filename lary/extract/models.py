"""The representations `lary extract` writes: LAPA-DINOv3 latent actions (`--model`) or the patch features of
both frames from any 🤗 vision `AutoModel` (`--encoder`).

Both take pixels from their own preprocessing and return numpy arrays with a leading row axis: frame pairs
`(B, 2, 3, H, W)` -> `(B, ...)`, clips `(B, frames, 3, H, W)` -> `(B, pairs, ...)` with each frame encoded once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from transformers import AutoImageProcessor, AutoModel

from lary import LapaDinov3Model, LapaDinov3Processor
from lary.evaluation.encoder_features import encode_frame_pairs, encode_frames

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HASHED_BYTES = 16 * 2**20


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def _list_type(value_type: pa.DataType, depth: int) -> pa.DataType:
    for _ in range(depth):
        value_type = pa.list_(value_type)
    return value_type


def load_model(name: str, dtype: str, device_map: str | None, device: torch.device, encoder: bool = False):
    """`AutoModel.from_pretrained` in eval mode, on `device` unless `device_map` places it."""
    kwargs = {"dtype": DTYPES[dtype]}
    if device_map:
        kwargs["device_map"] = device_map
    model = AutoModel.from_pretrained(name, **kwargs).eval()
    if not encoder and not isinstance(model, LapaDinov3Model):
        raise ValueError(f"--model {name} is a {type(model).__name__}, not LAPA-DINOv3; use --encoder for other models")
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


class LatentActionExtractor:
    """LAPA-DINOv3 `action_indices`, `latent_actions` and `continuous_latent_actions`."""

    def __init__(self, model: LapaDinov3Model):
        self.model = model
        self.processor = LapaDinov3Processor(size=model.config.backbone_config.image_size)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def columns(self, clip: bool) -> dict[str, pa.DataType]:
        extra = int(clip)
        return {
            "action_indices": _list_type(pa.int64(), 1 + extra),
            "latent_actions": _list_type(pa.float32(), 2 + extra),
            "continuous_latent_actions": _list_type(pa.float32(), 2 + extra),
        }

    def to_pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        # The processor takes clips of at least two frames; a lone frame is processed as a still clip.
        clip = frames if len(frames) > 1 else frames * 2
        return self.processor(videos=[clip], stride=1)["pixel_values_videos"][0, : len(frames)]

    def _outputs(self, **inputs) -> dict[str, np.ndarray]:
        outputs = self.model(**inputs)
        return {name: _numpy(outputs[name]) for name in ("action_indices", "latent_actions", "continuous_latent_actions")}

    @torch.inference_mode()
    def pairs(self, pixels: torch.Tensor) -> dict[str, np.ndarray]:
        return self._outputs(pixel_values=pixels.to(self.device, self.dtype))

    @torch.inference_mode()
    def clips(self, pixels: torch.Tensor, stride: int) -> dict[str, np.ndarray]:
        return self._outputs(pixel_values_videos=pixels.to(self.device, self.dtype), stride=stride)


class EncoderFeatureExtractor:
    """Patch tokens of both frames of every pair (`features`: `2 * patches x D`), as
    `lary.evaluation.encoder_features.encode_frame_pairs` computes them, each clip frame encoded once."""

    def __init__(self, model, name: str):
        self.model = model
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(name)
        except OSError as error:
            raise ValueError(f"--encoder {name} has no image processor (preprocessor_config.json): {error}") from None

    def columns(self, clip: bool) -> dict[str, pa.DataType]:
        return {"features": _list_type(pa.float32(), 2 + int(clip))}

    def to_pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        return self.image_processor(images=frames, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def pairs(self, pixels: torch.Tensor) -> dict[str, np.ndarray]:
        return {"features": _numpy(encode_frame_pairs(self.model, pixels))}

    @torch.inference_mode()
    def clips(self, pixels: torch.Tensor, stride: int) -> dict[str, np.ndarray]:
        tokens = encode_frames(self.model, pixels.flatten(0, 1)).unflatten(0, pixels.shape[:2])  # (B, F, p, D)
        return {"features": _numpy(torch.cat((tokens[:, :-stride], tokens[:, stride:]), dim=2))}


Extractor = LatentActionExtractor | EncoderFeatureExtractor
