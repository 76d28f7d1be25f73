"""Inference Endpoints handler of LAPA-DINOv3: a video, or a list of images, in; each frame pair's latent actions out.

Hugging Face Inference Endpoints (task "Custom") imports this file from the model repository and calls
`EndpointHandler(path)(data)` for every request. It needs the repository's code files (loaded with
`trust_remote_code`), transformers (4.51.3, the stock container's, and later), torch, numpy, PIL and PyAV
(`requirements.txt`), nothing else.

Request (`data`, the JSON body as the container parsed it):

    {"inputs": VIDEO, "parameters": {"stride": 1, "return_vectors": false}}
    {"inputs": VIDEO, "parameters": {"stride_seconds": 0.5}}
    {"inputs": [IMAGE, IMAGE, ...], "parameters": {...}}

VIDEO is a video file as base64 (or raw bytes, from Python); IMAGE is an image file as base64 or bytes (or a PIL
image); the images are the frames of one clip, in order. One image alone (an `image/*` body, which the container
hands over as one PIL image) is one frame, not a clip: it is refused. The answer is one object per frame pair
`(t, t + k)`: `frame_index`, `next_frame_index`, `timestamp`, `next_timestamp` (seconds; null for images) and
`action_indices` (one code per action token), with `return_vectors` also `latent_actions` and
`continuous_latent_actions`. Frames are decoded and resized as `lary extract` does (PyAV's RGB frames in presentation
order turned upright by the video's display matrix, images by their EXIF orientation, as OpenCV reads them; the saved
processor's resize), so the codes are those `lary extract` writes.

The handler parses the request, checks its limits, decodes the frames and words the answer; the model's code files
do the rest, as for `lary`: the processor's resize, and the model's windowed video forward
(`LapaDinov3Model.latent_actions_of_video`: `PAIRS_PER_CALL` pairs a pass, every frame through DINOv3 once, float32
without TF32 on a GPU), with torch's threads by the model's rule (`compute_threads`, `lary extract`'s).

Bad input raises `ValueError` with a one-line message (the container answers it with status 400 and
`{"error": message}`). Each request has limits, each raised by an environment variable (`Limits`), and memory stays
bounded by `PAIRS_PER_CALL` whatever the stride (a stride above it reads the frames twice, t and t + k).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel, AutoProcessor

PARAMETERS = {"stride": "a positive integer (pairs (t, t + stride); default 1)",
              "stride_seconds": "seconds, a video's alternative to stride (k = round(S x fps) of its header's rate)",
              "return_vectors": "true or false (also return latent_actions and continuous_latent_actions)"}
PAIRS_PER_CALL = 32  # pairs per forward pass: bounds memory on long videos and long strides
MAX_KEYS_NAMED = 10  # weights named per kind when a model's weights do not fit
MEGABYTE = 2**20
# An answer's size, per pair: a float32 value as JSON takes at most ~20 characters and its separator; the rest of the
# object (indices, times, keys) under 200 bytes. An upper bound, so an answer under the limit never exceeds it.
BYTES_PER_FLOAT = 24
BYTES_PER_PAIR = 200


class InputError(ValueError):
    """A request the caller can fix: the container answers it with status 400 and `{"error": message}`."""


class Limits(NamedTuple):
    """What one request may ask for (the defaults are `lary app`'s); each is set by the environment variable
    `LARY_ENDPOINT_<NAME>` (e.g. `LARY_ENDPOINT_MAX_FRAMES=1000`), which a refusal names."""

    max_frames: int = 64  # frames decoded per request (a video's, or a list's images); strides stay below it
    max_pixels: int = 3840 * 2160  # per frame (4K UHD), checked from the file's header before decoding
    max_input_mb: float = 200.0  # the video file, or the list's image files together
    max_answer_mb: float = 64.0  # the answer's JSON (`return_vectors` makes it ~0.57 MB a pair at the released size)

    @classmethod
    def from_environment(cls) -> "Limits":
        values = {}
        for name, default in cls._field_defaults.items():
            text = os.environ.get(cls.variable(name))
            if text is None:
                continue
            try:
                value = type(default)(text)
            except ValueError:
                value = 0
            if not 0 < value < math.inf:
                raise ValueError(f"{cls.variable(name)}={text!r} must be a positive {'integer' if isinstance(default, int) else 'number'}")
            values[name] = value
        return cls(**values)

    @staticmethod
    def variable(name: str) -> str:
        return f"LARY_ENDPOINT_{name.upper()}"

    def refuse(self, what: str, name: str, unit: str = "") -> InputError:
        """`what` is past the limit `name`: the refusal names it and how to raise it."""
        limit = getattr(self, name)
        return InputError(f"{what}, above the limit of {f'{limit:,}' if isinstance(limit, int) else f'{limit:g}'}{unit} (the endpoint's environment "
                          f"variable {self.variable(name)} raises it)")


def _bytes(item: Any, where: str, limits: Limits) -> bytes:
    """Raw bytes, or the bytes of a base64 string (a `data:...;base64,` prefix is allowed), within the size limit."""
    if isinstance(item, str):
        text = item.split("base64,", 1)[1] if item.startswith("data:") else item
        if len(text) * 3 // 4 > limits.max_input_mb * MEGABYTE:  # checked before decoding
            raise limits.refuse(f"{where} is {len(text) * 3 / 4 / MEGABYTE:.3g} MB", "max_input_mb", " MB")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{where} is a string but not base64 (send the file's bytes as base64)") from None
    if isinstance(item, (bytes, bytearray)):
        if len(item) > limits.max_input_mb * MEGABYTE:
            raise limits.refuse(f"{where} is {len(item) / MEGABYTE:.3g} MB", "max_input_mb", " MB")
        return bytes(item)
    raise InputError(f"{where} must be a file's bytes or base64; got {type(item).__name__}")


def _upright(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """A decoded frame stood upright by its display matrix (`degrees` counterclockwise, PyAV's `frame.rotation`; a
    phone's portrait video has -90) as OpenCV's `VideoCapture` does by default: exact quarter turns only, flips and
    other angles ignored."""
    clockwise = -round(degrees) % 360
    return np.ascontiguousarray(np.rot90(rgb, -(clockwise // 90))) if clockwise in (90, 180, 270) else rgb


class Frame(NamedTuple):
    """A frame of the request: its time (seconds, None for images) and how to get its upright RGB pixels."""

    time: float | None
    rgb: Callable[[], torch.Tensor]  # (H, W, 3) uint8; called only for the frames that are run


class Video:
    """A video file's bytes, its header checked when it is opened; each `frames()` decodes it from the start."""

    def __init__(self, data: bytes, limits: Limits):
        self.data, self.limits = data, limits
        with self._open() as container:
            stream = container.streams.video[0]
            self._check_size(stream.codec_context.width, stream.codec_context.height)
            if stream.frames > limits.max_frames:  # the header's count (0: unknown); decoding counts again
                raise limits.refuse(f"inputs has {stream.frames:,} frames", "max_frames")
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0

    def _open(self) -> av.container.InputContainer:
        try:
            container = av.open(io.BytesIO(self.data))
        except av.error.FFmpegError as error:
            raise InputError(f"inputs is not a video file PyAV can read ({error.strerror})") from None
        if not container.streams.video:
            container.close()
            raise InputError("inputs has no video stream")
        kind = container.format.name  # FFmpeg reads a still image as a one-frame video: `png_pipe`, `image2`, ...
        if kind.endswith("_pipe") or kind == "image2":
            container.close()
            raise InputError(f"inputs is a {kind.removesuffix('_pipe').upper()} image, not a video: send a clip's "
                             "frames as a list of images")
        return container

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.limits.max_pixels:
            raise self.limits.refuse(f"inputs has {width}x{height} frames ({width * height:,} pixels)", "max_pixels",
                                     " pixels")

    def frames(self) -> Iterator[Frame]:
        """Every frame in presentation order; the pixels of one are converted only when asked for."""
        with self._open() as container:
            try:
                for index, frame in enumerate(container.decode(video=0)):
                    if index >= self.limits.max_frames:
                        raise self.limits.refuse(f"inputs has more than {self.limits.max_frames:,} frames", "max_frames")
                    self._check_size(frame.width, frame.height)
                    yield Frame(None if frame.time is None else float(frame.time),
                                lambda frame=frame: torch.from_numpy(_upright(frame.to_ndarray(format="rgb24"),
                                                                              frame.rotation)))
            except av.error.FFmpegError as error:
                raise InputError(f"inputs: the video breaks off ({error.strerror})") from None


class Images:
    """A list of image files (bytes, base64) or PIL images: the frames of one clip, opened when asked for."""

    fps = 0.0  # no rate

    def __init__(self, items: list, limits: Limits, to_uint8: Callable[[Image.Image], torch.Tensor]):
        if len(items) < 2:
            raise InputError(f"inputs: a list of images is one clip and needs at least 2; got {len(items)}")
        if len(items) > limits.max_frames:
            raise limits.refuse(f"inputs has {len(items):,} images", "max_frames")
        size = sum(len(item) * 3 // 4 if isinstance(item, str) else len(item) for item in items
                   if isinstance(item, (str, bytes, bytearray)))
        if size > limits.max_input_mb * MEGABYTE:
            raise limits.refuse(f"inputs' images are {size / MEGABYTE:.3g} MB together", "max_input_mb", " MB")
        self.items, self.limits, self.to_uint8 = items, limits, to_uint8

    def frames(self) -> Iterator[Frame]:
        for index, item in enumerate(self.items):
            yield Frame(None, lambda index=index, item=item: self.to_uint8(self.open(item, f"inputs[{index}]")))

    def open(self, item: Any, where: str) -> Image.Image:
        """An image file (bytes, base64) or a PIL image, its size checked from the header before it is decoded (the
        processor's `to_uint8` turns it upright by its EXIF orientation, as OpenCV's `imread` does)."""
        if not isinstance(item, Image.Image):
            try:
                with warnings.catch_warnings():  # PIL's warning of a large image: ours is the limit checked below
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    item = Image.open(io.BytesIO(_bytes(item, where, self.limits)))
            except UnidentifiedImageError:
                raise InputError(f"{where} is not an image file PIL can read") from None
            except Image.DecompressionBombError:  # PIL's own refusal, at twice its limit: beyond ours
                raise self.limits.refuse(f"{where} is an image of more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels",
                                         "max_pixels", " pixels") from None
        width, height = item.size
        if width * height > self.limits.max_pixels:
            raise self.limits.refuse(f"{where} is {width}x{height} ({width * height:,} pixels)", "max_pixels", " pixels")
        try:
            item.load()
            return item
        except Exception as error:  # PIL raises many types for corrupt files
            raise InputError(f"{where} is a broken image file ({str(error).splitlines()[0] if str(error) else error!r})") from None


class Reader:
    """A request's frames for the model's video forward: each `iter()` reads them from the first (a stride above
    `PAIRS_PER_CALL` is read by two, frames t and t + k, so memory never holds k frames), through `checked`; the
    frames' times are noted by frame number."""

    def __init__(self, source: Video | Images, checked: Callable[[Iterator[Frame]], Iterator[Frame]]):
        self.source, self.checked = source, checked
        self.times: dict[int, float | None] = {}

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index, frame in enumerate(self.checked(self.source.frames())):
            self.times[index] = frame.time
            yield frame.rgb()


def _weight_problems(info: dict[str, Any]) -> str:
    """transformers' loading report (`output_loading_info=True`: 4.51.3 and 5.x) in one line; empty when it fits."""
    def listed(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:MAX_KEYS_NAMED]) + (f" and {len(keys) - MAX_KEYS_NAMED} more" if len(keys) > MAX_KEYS_NAMED else "")

    mismatched = [entry if isinstance(entry, str) else f"{entry[0]} (checkpoint {tuple(entry[1])}, model {tuple(entry[2])})"
                  for entry in info.get("mismatched_keys") or ()]  # 5.x: (key, checkpoint's shape, model's shape)
    return "; ".join(f"{what} weights {listed(keys)}" for what, keys in (
        ("missing", info.get("missing_keys") or ()), ("unexpected", info.get("unexpected_keys") or ()),
        ("mis-shaped", mismatched)) if keys)


def _non_finite_weights(model: torch.nn.Module) -> str:
    """The weights holding NaN or infinity (a training run that diverged: NaN vectors, the codes of nothing)."""
    bad = sorted(key for key, tensor in model.state_dict().items()
                 if tensor.is_floating_point() and not tensor.isfinite().all())
    more = f" and {len(bad) - MAX_KEYS_NAMED} more" if len(bad) > MAX_KEYS_NAMED else ""
    return f"weights {', '.join(bad[:MAX_KEYS_NAMED])}{more} hold NaN or infinity" if bad else ""


class EndpointHandler:
    """The model and processor of the repository at `path`, loaded once; each call answers one request."""

    def __init__(self, path: str = ""):
        path = path or "."
        self.limits = Limits.from_environment()
        # mis-shaped weights reported rather than raised (a traceback of many lines), and refused below
        self.model, info = AutoModel.from_pretrained(path, trust_remote_code=True, output_loading_info=True,
                                                     ignore_mismatched_sizes=True)
        problems = _weight_problems(info)
        if problems:  # refused as every `lary` command refuses it: its outputs would be wrong
            raise ValueError(f"{path}: {problems}; its weights do not fit its config.json")
        non_finite = _non_finite_weights(self.model)
        if non_finite:
            raise ValueError(f"{path}: {non_finite}; a model whose training diverged gives no latent actions")
        if not hasattr(self.model, "latent_actions_of_video"):
            raise ValueError(f"{path}: its modeling_lapa_dinov3.py is older than this handler.py (it has no "
                             "latent_actions_of_video): copy the current code files in, as a save by lary writes them")
        self.model.eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        if "OMP_NUM_THREADS" not in os.environ:  # an explicit setting is the deployer's choice
            # the model's rule, the one of `lary extract` and `lary.runtime`: the CPU affinity and a container's
            # quota, less the cores decoding keeps
            torch.set_num_threads(sys.modules[type(self.model).__module__].compute_threads())
        config = self.model.config
        self.vector_floats = config.code_seq_len * (config.hidden_size + config.quant_dim)
        if torch.cuda.is_available():
            self.model.to("cuda")  # float32 without TF32 there (the model's video forward): the CPU's codes

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(data, dict) or "inputs" not in data:
            raise InputError('the request must be an object with "inputs" (a video, or a list of images)')
        given = {} if data.get("parameters") is None else data["parameters"]
        if not isinstance(given, dict):
            raise InputError(f"parameters must be an object; got {type(given).__name__}")
        unknown = sorted(set(given) - set(PARAMETERS))
        if unknown:
            raise InputError(f"unknown parameter {unknown[0]!r}; known: " + "; ".join(f"{k}: {v}" for k, v in PARAMETERS.items()))
        vectors = given.get("return_vectors", False)
        if not isinstance(vectors, bool):
            raise InputError(f"parameters.return_vectors must be true or false; got {vectors!r}")
        source = self._source(data["inputs"])
        stride = self._stride(given, source)
        per_pair = BYTES_PER_PAIR + BYTES_PER_FLOAT * (self.vector_floats if vectors else self.model.config.code_seq_len)
        max_pairs = int(self.limits.max_answer_mb * MEGABYTE // per_pair)
        frames = Reader(source, lambda frames: self._counted(frames, stride, max_pairs))
        answers: list[dict[str, Any]] = []
        for output in self.model.latent_actions_of_video(frames, stride, self.processor, PAIRS_PER_CALL):
            answers += self._answers(output, frames.times, len(answers), stride, vectors)
        return answers

    def _source(self, inputs: Any) -> Video | Images:
        if isinstance(inputs, list):
            return Images(inputs, self.limits, self.processor.to_uint8)
        if isinstance(inputs, Image.Image):
            raise InputError("inputs is one image (an image/* body is one frame): a latent action needs two; send "
                             'JSON {"inputs": [IMAGE, IMAGE, ...]} with the clip\'s frames as base64, or its video')
        return Video(_bytes(inputs, "inputs", self.limits), self.limits)

    def _stride(self, given: dict[str, Any], source: Video | Images) -> int:
        """k of the pairs (t, t + k): `stride`, or `stride_seconds` x the video's rate (as `lary extract`), below
        the frame limit (refused before anything is decoded)."""
        if "stride" in given and "stride_seconds" in given:
            raise InputError("parameters: give stride (frames) or stride_seconds, not both")
        if "stride_seconds" in given:
            seconds = given["stride_seconds"]
            try:  # a number, or its text (query parameters arrive as text)
                seconds = float(seconds) if not isinstance(seconds, bool) else math.nan
            except (TypeError, ValueError):
                seconds = math.nan
            if not (math.isfinite(seconds) and seconds > 0):
                raise InputError(f"parameters.stride_seconds must be a positive number of seconds; got {given['stride_seconds']!r}")
            if not source.fps > 0:
                raise InputError(f"parameters.stride_seconds {seconds:g}: {'images have' if isinstance(source, Images) else 'the video has'} "
                                 "no frame rate; give stride in frames")
            stride = math.floor(seconds * source.fps + 0.5)
            if stride < 1:
                raise InputError(f"parameters.stride_seconds {seconds:g} is {seconds * source.fps:.2f} frames of the video "
                                 f"at {source.fps:g} fps, which rounds to 0: give at least {0.5 / source.fps:.3g} s")
            what = f"parameters.stride_seconds {seconds:g} is {stride:,} frames at {source.fps:g} fps"
        else:
            stride = given.get("stride", 1)
            if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
                raise InputError(f"parameters.stride must be a positive integer; got {stride!r}")
            what = f"parameters.stride is {stride:,}"
        if stride >= self.limits.max_frames:
            raise self.limits.refuse(f"{what}: pairs that far need more frames than allowed", "max_frames")
        return stride

    def _counted(self, frames: Iterator[Frame], stride: int, max_pairs: int) -> Iterator[Frame]:
        """`frames`, refused once their pairs would make the answer larger than its limit, and when they end before
        making one pair."""
        count = 0
        for count, frame in enumerate(frames, 1):
            if count - stride > max_pairs:
                raise self.limits.refuse(f"the answer would hold more than {max_pairs:,} pairs", "max_answer_mb", " MB")
            yield frame
        if count <= stride:
            raise InputError(f"inputs has {count} frame(s); stride {stride} needs at least {stride + 1}")

    @staticmethod
    def _answers(output, times: dict[int, float | None], start: int, stride: int, vectors: bool) -> list[dict]:
        """One object per pair of a window, its first pair `(start, start + stride)`; `times` by frame number."""
        names = ("action_indices", "latent_actions", "continuous_latent_actions") if vectors else ("action_indices",)
        values = {name: output[name].cpu().tolist() for name in names}
        return [{"frame_index": t, "next_frame_index": t + stride, "timestamp": times[t],
                 "next_timestamp": times[t + stride], **{name: value[pair] for name, value in values.items()}}
                for pair, t in enumerate(range(start, start + len(values["action_indices"])))]
