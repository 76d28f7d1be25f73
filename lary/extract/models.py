"""The representations `lary extract` writes: LAPA-DINOv3 latent actions (`--model`) or the patch features of
frame pairs from any 🤗 vision `AutoModel` or V-JEPA2 (`--encoder`).

Both take pixels from their own preprocessing and return numpy arrays with a leading row axis: frame pairs
`(B, 2, 3, H, W)` -> `(B, ...)`, clips `(B, frames, 3, H, W)` -> `(B, pairs, ...)` with each frame encoded once
(V-JEPA2: each pair).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel
from transformers.models.vjepa2.video_processing_vjepa2 import VJEPA2VideoProcessor

from lary import LapaDinov3Model, LapaDinov3Processor
from lary.evaluation.encoder_features import (
    encode_clip_pairs,
    encode_frame_pairs,
    frames_from_patches,
    is_vjepa2,
    vision_config,
)

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


def vjepa2_video_processor(name: str, model) -> VJEPA2VideoProcessor:
    """V-JEPA2's preprocessing settings: its saved video processor config (`video_preprocessor_config.json`, else
    `preprocessor_config.json`), else the V-JEPA2 defaults at the model's `crop_size`."""
    try:
        return VJEPA2VideoProcessor.from_pretrained(name)
    except OSError:
        return VJEPA2VideoProcessor(crop_size=model.config.crop_size)


def vjepa2_pixels(frames: list[np.ndarray], processor: VJEPA2VideoProcessor) -> torch.Tensor:
    """RGB uint8 frames -> `(frames, 3, crop, crop)` as `VJEPA2VideoProcessor` does (it needs torchvision), with PIL:
    resize the shortest edge to `size.shortest_edge` (`int(crop * 256 / 224)`), center crop, rescale, normalize."""
    crop, pixels = processor.crop_size, []
    for frame in frames:
        image = Image.fromarray(frame)
        if processor.do_resize:
            width, height, short = *image.size, processor.size.shortest_edge
            size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
            image = image.resize(size, resample=Image.Resampling(int(processor.resample)))
        array = np.asarray(image, dtype=np.float32)
        if processor.do_center_crop:
            top, left = (array.shape[0] - crop.height) // 2, (array.shape[1] - crop.width) // 2
            array = array[top : top + crop.height, left : left + crop.width]
        if processor.do_rescale:
            array = array * processor.rescale_factor
        if processor.do_normalize:
            array = (array - np.asarray(processor.image_mean)) / np.asarray(processor.image_std)
        pixels.append(torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1))
    return torch.stack(pixels)


class EncoderFeatureExtractor:
    """Encoder `features` of every pair, as `lary.evaluation.encoder_features.encode_frame_pairs` computes them:
    `2 * patches x D` (both frames' patch tokens; each clip frame encoded once) or, for V-JEPA2, `patches x D` (the
    pair as one tubelet).

    Pixels come from the model's image processor; Siglip2's (NaFlex) patchified output is turned back into frames
    (all frames of a run must get one patch grid). V-JEPA2 frames are preprocessed here (`vjepa2_pixels`)."""

    def __init__(self, model, name: str):
        self.model, self.name = model, name
        self.patch_grid: tuple[int, int] | None = None
        if is_vjepa2(model):
            self.video_processor = vjepa2_video_processor(name, model)
            return
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(name)
        except OSError as error:
            raise ValueError(f"--encoder {name} has no image processor (preprocessor_config.json): {error}") from None

    def columns(self, clip: bool) -> dict[str, pa.DataType]:
        return {"features": _list_type(pa.float32(), 2 + int(clip))}

    def to_pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        if is_vjepa2(self.model):
            return vjepa2_pixels(frames, self.video_processor)
        processed = self.image_processor(images=frames, return_tensors="pt")
        if "spatial_shapes" not in processed:
            return processed["pixel_values"]
        grids = {tuple(grid) for grid in processed["spatial_shapes"].tolist()}
        if self.patch_grid:
            grids.add(self.patch_grid)
        if len(grids) > 1:
            raise ValueError(
                f"--encoder {self.name} resizes frames to patch grids that keep their aspect ratio; got "
                f"{sorted(grids)}: features of one run need one grid, so give frames of one size"
            )
        self.patch_grid = grids.pop()
        patch_size = vision_config(self.model).patch_size
        return frames_from_patches(processed["pixel_values"], processed["spatial_shapes"], patch_size)

    @torch.inference_mode()
    def pairs(self, pixels: torch.Tensor) -> dict[str, np.ndarray]:
        return {"features": _numpy(encode_frame_pairs(self.model, pixels))}

    @torch.inference_mode()
    def clips(self, pixels: torch.Tensor, stride: int) -> dict[str, np.ndarray]:
        return {"features": _numpy(encode_clip_pairs(self.model, pixels, stride))}


Extractor = LatentActionExtractor | EncoderFeatureExtractor
