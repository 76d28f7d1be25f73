"""The representations `lary extract` writes: LAPA-DINOv3 latent actions (`--model`) or the patch features of frame
pairs from any 🤗 vision `AutoModel` or V-JEPA2 (`--encoder`).

An extractor has two halves. `prepare` runs in the DataLoader workers on decoded frames: the LAPA-DINOv3 processor's
resize to model size (on CPU), or nothing when the model is on a GPU, which then resizes the uint8 frames itself
(`resize_on_device`); encoders apply their processor config there. `compute` runs in the main process on a batch of
`Piece`s (consecutive frames of one sample): every frame goes through the backbone once, then each piece's pairs
`(i, i + stride)` are formed from the frame features. It returns, per piece, numpy arrays with a leading pair axis.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from lary import LapaDinov3Model, runtime
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
from lary.runtime import CLI, CLI_ENCODER, LATENT_ACTION_COLUMNS, CarriedFeatures, LatentActionRuntime, to_numpy

def load_model(name: str, dtype: str, device_map: str | None, device: torch.device, encoder: bool = False,
               allow_missing_weights: bool = False):
    """`--model` or `--encoder` as `lary.runtime.load_model` loads it, its errors naming those flags."""
    naming = CLI_ENCODER if encoder else CLI
    return runtime.load_model(name, dtype, device, device_map, encoder, allow_missing_weights, naming)


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
    arrays = to_numpy(values)
    bounds = np.cumsum([0] + [piece.pairs for piece in pieces])
    return [{name: array[a:b] for name, array in arrays.items()} for a, b in zip(bounds[:-1], bounds[1:])]


class LatentActionExtractor:
    """LAPA-DINOv3 `action_indices`, `latent_actions` and `continuous_latent_actions` (`lary.runtime`'s
    `LatentActionRuntime`), with the processor saved in the model folder (its size and resample). A window of a video
    starts with the `stride` frames the previous window ended with (`Piece.carried`): their features are kept from
    that window (`CarriedFeatures`), so every frame goes through the backbone once."""

    def __init__(self, model: LapaDinov3Model, name: str, batch_size: int, compiled: bool = False):
        self.batch_size = batch_size
        self.runtime = LatentActionRuntime(model, name, batch_size, compiled)
        self.processor, self.device, self.dtype = self.runtime.processor, self.runtime.device, self.runtime.dtype
        self.resize_on_device = self.device.type == "cuda"
        self._carried = CarriedFeatures(max_stride=batch_size)

    def columns(self, per_row_pairs: bool) -> dict[str, pa.DataType]:
        return latent_action_types(per_row_pairs)

    def resize(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        return list(self.processor.resize(frames))

    def prepare(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        """Each frame as it is, for the GPU to resize (not copied: the loader stacks it into shared memory), or resized
        here."""
        if self.resize_on_device:
            return [torch.from_numpy(frame) for frame in frames]
        return self.resize(frames)

    def _new_pixels(self, piece: Piece, carried: int) -> torch.Tensor:
        """The piece's frames after its first `carried`, as the model's uint8 pixels on its device."""
        if piece.resized:
            return piece.pixels[carried:].to(self.device, non_blocking=True)
        return self.processor.resize(piece.pixels[carried:], self.device)

    def compute(self, pieces: list[Piece]) -> list[dict[str, np.ndarray]]:
        carried = [self._carried.take((piece.sample, int(piece.frame_indices[0])), piece.carried) if piece.carried else None
                   for piece in pieces]
        counts = [0 if kept is None else len(kept) for kept in carried]
        new = [self._new_pixels(piece, count) for piece, count in zip(pieces, counts)]
        # the new frames of the whole batch through the backbone together, uint8 until then (one float buffer)
        computed = self.runtime.features(new[0] if len(new) == 1 else torch.cat(new)).split([len(n) for n in new])
        features = [part if kept is None else torch.cat((kept, part)) for kept, part in zip(carried, computed)]
        for piece, frames in zip(pieces, features):
            self._carried.keep((piece.sample, int(piece.frame_indices[-piece.stride])), frames[-piece.stride :])
        first, second = _pair_indices(pieces)
        values = self.runtime.latent_actions(features[0] if len(features) == 1 else torch.cat(features), first, second)
        return _split(values, pieces)


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

    def resize(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        return self.transform.each(frames)

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
