"""Inference Endpoints handler of LAPA-DINOv3: a video, or a list of images, in; each frame pair's latent actions out.

Hugging Face Inference Endpoints (task "Custom") imports this file from the model repository and calls
`EndpointHandler(path)(data)` for every request. It needs the repository's code files (loaded with
`trust_remote_code`), transformers, torch, numpy, PIL and PyAV (`requirements.txt`), nothing else.

Request (a JSON body):

    {"inputs": VIDEO, "parameters": {"stride": 1, "return_vectors": false}}
    {"inputs": [IMAGE, IMAGE, ...], "parameters": {...}}

VIDEO is a video file as base64 (or raw bytes, from Python); IMAGE is an image file as base64 or bytes (or a PIL
image); the images are the frames of one clip, in order. The answer is one object per frame pair `(t, t + stride)`:
`frame_index`, `next_frame_index`, `timestamp`, `next_timestamp` (seconds; null for images) and `action_indices`
(one code per action token), with `return_vectors` also `latent_actions` and `continuous_latent_actions`. Frames
are decoded and resized as `lary extract` does (PyAV's RGB frames in presentation order, the saved processor's
resize), so the codes are those `lary extract` writes. Bad input is answered with `{"error": "..."}`, one line.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel, AutoProcessor

PARAMETERS = {"stride": "a positive integer (pairs (t, t + stride); default 1)",
              "return_vectors": "true or false (also return latent_actions and continuous_latent_actions)"}
PAIRS_PER_CALL = 32  # pairs per forward pass: bounds memory on long videos


class InputError(ValueError):
    """A request the caller can fix; answered as `{"error": message}`."""


def _bytes(item: Any, where: str) -> bytes:
    """Raw bytes, or the bytes of a base64 string (a `data:...;base64,` prefix is allowed)."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):
        text = item.split("base64,", 1)[1] if item.startswith("data:") else item
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{where} is a string but not base64 (send the file's bytes as base64)") from None
    raise InputError(f"{where} must be a file's bytes or base64; got {type(item).__name__}")


def open_image(item: Any, where: str) -> Image.Image:
    """An image file (bytes, base64) or a PIL image, opened."""
    if isinstance(item, Image.Image):
        return item
    try:
        image = Image.open(io.BytesIO(_bytes(item, where)))
        image.load()
        return image
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{where} is not an image file PIL can read") from None
    except Exception as error:  # PIL raises many types for corrupt files
        raise InputError(f"{where} is a broken image file ({error})") from None


def decode_video(data: bytes) -> Iterator[tuple[np.ndarray, float | None]]:
    """Every frame of a video file's bytes in presentation order, as (H, W, 3) uint8 RGB and its time in seconds."""
    try:
        container = av.open(io.BytesIO(data))
    except av.error.FFmpegError as error:
        raise InputError(f"inputs is not a video file PyAV can read ({error.strerror})") from None
    with container:
        if not container.streams.video:
            raise InputError("inputs has no video stream")
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24"), (None if frame.time is None else float(frame.time))
        except av.error.FFmpegError as error:
            raise InputError(f"inputs: the video breaks off ({error.strerror})") from None


def parameters(given: Any) -> tuple[int, bool]:
    """(stride, return_vectors) from `data["parameters"]`, checked."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise InputError(f"parameters must be an object; got {type(given).__name__}")
    unknown = sorted(set(given) - set(PARAMETERS))
    if unknown:
        raise InputError(f"unknown parameter {unknown[0]!r}; known: " + "; ".join(f"{k}: {v}" for k, v in PARAMETERS.items()))
    stride, vectors = given.get("stride", 1), given.get("return_vectors", False)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"parameters.stride must be a positive integer; got {stride!r}")
    if not isinstance(vectors, bool):
        raise InputError(f"parameters.return_vectors must be true or false; got {vectors!r}")
    return stride, vectors


class EndpointHandler:
    """The model and processor of the repository at `path`, loaded once; each call answers one request."""

    def __init__(self, path: str = ""):
        self.model = AutoModel.from_pretrained(path or ".", trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(path or ".", trust_remote_code=True)
        if torch.cuda.is_available():
            # float32 without TF32, as `lary extract` computes on a GPU: the CPU's codes
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            self.model.to("cuda")
        self.device = next(self.model.parameters()).device

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]] | dict[str, str]:
        try:
            if not isinstance(data, dict) or "inputs" not in data:
                raise InputError('the request must be an object with "inputs" (a video, or a list of images)')
            stride, vectors = parameters(data.get("parameters"))
            return list(self._pairs(self._frames(data["inputs"]), stride, vectors))
        except InputError as error:
            return {"error": str(error)}

    def _frames(self, inputs: Any) -> Iterator[tuple[torch.Tensor, float | None]]:
        """The clip's frames, each resized by the processor as soon as it is read (uint8 (3, S, S)), with its time."""
        if isinstance(inputs, list):
            if len(inputs) < 2:
                raise InputError(f"inputs: a list of images is one clip and needs at least 2; got {len(inputs)}")
            # images of any mode to 8-bit RGB by the processor, as `lary extract` reads image files (16-bit keeps its
            # high byte, as OpenCV's imread)
            frames = ((self.processor.to_uint8(open_image(item, f"inputs[{index}]")), None)
                      for index, item in enumerate(inputs))
        else:
            frames = ((torch.from_numpy(rgb), time) for rgb, time in decode_video(_bytes(inputs, "inputs")))
        for rgb, time in frames:
            yield self.processor.resize(rgb[None].to(self.device))[0], time  # on a GPU, there

    @torch.inference_mode()
    def _pairs(self, frames: Iterator[tuple[torch.Tensor, float | None]], stride: int, vectors: bool) -> Iterator[dict]:
        """Pairs `(t, t + stride)` in video mode, `PAIRS_PER_CALL` at a time; each call repeats the `stride` frames
        that the next call's pairs start from."""
        window: list[tuple[torch.Tensor, float | None]] = []
        start = count = 0  # frame number of window[0]; frames read
        for frame in frames:
            window.append(frame)
            count += 1
            if len(window) == PAIRS_PER_CALL + stride:
                yield from self._run(window, start, stride, vectors)
                window, start = window[PAIRS_PER_CALL:], start + PAIRS_PER_CALL
        if count <= stride:
            raise InputError(f"inputs has {count} frame(s); stride {stride} needs at least {stride + 1}")
        if len(window) > stride:
            yield from self._run(window, start, stride, vectors)

    def _run(self, window: list, start: int, stride: int, vectors: bool) -> Iterator[dict]:
        pixels = self.processor.normalize(torch.stack([frame for frame, _ in window]))  # the processor's second half
        output = self.model(pixel_values_videos=pixels[None], stride=stride)
        names = ("action_indices", "latent_actions", "continuous_latent_actions") if vectors else ("action_indices",)
        values = {name: output[name][0].cpu().tolist() for name in names}
        for pair in range(len(window) - stride):
            yield {
                "frame_index": start + pair,
                "next_frame_index": start + pair + stride,
                "timestamp": window[pair][1],
                "next_timestamp": window[pair + stride][1],
                **{name: value[pair] for name, value in values.items()},
            }
