"""The one way in for frames: decode videos (PyAV) and images (PIL) to RGB uint8, and load the processor that turns
them into model pixels.

Every command reads frames through here: `lary extract`, `lary train`, `lary demo`, `lary app` and the LeRobot
reader. Decoding gives `(H, W, 3)` uint8 RGB arrays; resizing and normalising are the processor's
(`LapaDinov3Processor.resize` / `.normalize`, loaded from the model folder by `load_processor`), so a processor
setting saved with a model reaches every command.

Videos are indexed by presentation order: frame `i` is the `i`-th frame a player shows. `probe_video` reads the
container's packets (no decoding) to learn every frame's timestamp, so that `decode_video(path, start, stop)` can seek
straight to frame `start` of a long video and decode only what it needs.

Frames come out upright, as OpenCV reads them by default (LARYBench's reader): a video's display matrix (a phone's
portrait recording is stored sideways with a -90 degree matrix) is applied as `cv2.VideoCapture` applies it
(`CAP_PROP_ORIENTATION_AUTO`), and an image's EXIF orientation as `cv2.imread` applies it (`rgb8`).
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from lary.errors import LaryError, MediaError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# images that are not read as frames: one among the frames is refused rather than skipped (see `image_files`)
OTHER_IMAGE_SUFFIXES = (".gif", ".apng", ".avif", ".heic", ".heif", ".jfif", ".jpe", ".jp2", ".pgm", ".ppm", ".pnm", ".qoi",
                        ".tga")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")


def natural_key(path: Path) -> list:
    """Sort key that puts `frame_2.png` before `frame_10.png`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder in natural order. Refused (`MediaError`), without opening anything: a file named
    as an image that is not a regular file (a named pipe or a device, whose reading can block for ever), and an image
    of a format not read as a frame (a `.gif` among PNG frames: skipping it would renumber the frames after it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LaryError(f"{folder} is not a folder")
    files = []
    for path in folder.iterdir():
        suffix = path.suffix.lower()
        if suffix in OTHER_IMAGE_SUFFIXES:
            raise MediaError(path, f"a {suffix} image among the frames, which are read from {', '.join(IMAGE_SUFFIXES)} "
                                   "files only: convert it or move it out (skipped, it would renumber the frames after it)")
        if suffix in IMAGE_SUFFIXES:
            if not path.is_file():  # symlinks followed: what a link names must be a regular file too
                raise MediaError(path, "not a regular file (a named pipe, a device or a folder): not read")
            files.append(path)
    return sorted(files, key=natural_key)


def read_image(source: str | Path | bytes | dict[str, Any] | Image.Image, where: str | None = None) -> np.ndarray:
    """An image file, its bytes, a 🤗 `datasets` Image value (`{"bytes", "path"}`) or a PIL image -> (H, W, 3) uint8 RGB
    (the processor's `rgb8`: as OpenCV's `imread` reads it).

    Raises `MediaError` naming `where` (default: the path) for a missing or unreadable image.
    """
    # the processor's conversion (the Hub file, so remote code reads images alike); imported here, as in
    # `load_processor`, because it loads torch and transformers, which `lary prepare` does not need
    from lary_hub.processing_lapa_dinov3 import rgb8

    if isinstance(source, Image.Image):
        return rgb8(source)
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        source = data if data is not None else path
    where = where or (str(source) if isinstance(source, (str, Path)) else "image bytes")
    if source is None:
        raise MediaError(where, "no image stored")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return rgb8(image)
    except FileNotFoundError:
        raise MediaError(where, "missing") from None
    except Exception as error:  # PIL raises many types for corrupt files
        raise MediaError(where, f"unreadable image ({error})") from None


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns (decoding only the first frame): frame count, size, rate, rotation and every frame's
    time. `width` and `height` are the upright frame's, as `decode_video` gives it."""

    path: str
    width: int
    height: int
    fps: float
    pts: np.ndarray  # int64 presentation timestamps in `time_base` units, in presentation order
    time_base: Fraction
    seekable: bool  # the container's packets carry timestamps (raw streams do not: then frames are counted)
    rotation: int = 0  # clockwise degrees (0, 90, 180, 270) the stored frames are turned to stand upright

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def times(self) -> np.ndarray:
        """Each frame's presentation time in seconds (float64)."""
        return self.pts * float(self.time_base)


# FFmpeg's decoder threads: by default (0) FFmpeg's choice, faster on free cores (one H.264 video on 2 cores: 1.16x
# at 480x640, 1.51x at 1080x1920). `lary extract`'s workers decode on their own thread (1), one core each: beside a
# busy model FFmpeg's threads wait for cores (decode+resize: 240 -> 420 frames/s). The YUV -> RGB conversion always
# runs on the calling thread: PyAV's default starts conversion threads for every frame, slower at every size measured
# (benchmarks/bench_decode_threads.py). The pixels are the same either way.
AUTO_THREADS = 0
# `to_ndarray(threads=1)` exists from PyAV 17 (its threaded YUV -> RGB conversion); older PyAV (LeRobot pins av 15)
# has no such option and converts on the calling thread anyway.
_RGB_THREADS = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


def _open(path: str | Path) -> av.container.InputContainer:
    if not Path(path).is_file():
        raise MediaError(path, "missing")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise MediaError(path, f"unreadable video ({error})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream")
    image_format = container.format.name  # FFmpeg reads a still image as a one-frame video: `png_pipe`, `image2`, ...
    if image_format.endswith("_pipe") or image_format == "image2":
        if image_format == "image2":
            image_format = container.streams.video[0].codec_context.name
        container.close()
        raise MediaError(path, f"a {image_format.removesuffix('_pipe').upper()} image, not a video")
    return container


def _rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    return stream.average_rate or stream.guessed_rate


def video_rate(path: str | Path) -> float:
    """The video's frame rate from its stream's header (nothing is demuxed); 0.0 when it has none."""
    with _open(path) as container:
        rate = _rate(container.streams.video[0])
        return float(rate) if rate else 0.0


def stride_frames(seconds: float, fps: float, where: str) -> int:
    """The frames in `seconds` at `fps` (k = round(seconds x fps), halves up): the stride of `--stride-seconds`.
    Refused, naming `where` and its rate, when it is 0 frames or the rate is unknown."""
    if not fps > 0:
        raise LaryError(f"--stride-seconds {seconds:g}: {where} has no frame rate; give --stride in frames")
    frames = math.floor(seconds * fps + 0.5)
    if frames < 1:
        raise LaryError(f"--stride-seconds {seconds:g} is {seconds * fps:.2f} frames of {where} at {fps:g} fps, which "
                        f"rounds to 0: give at least {0.5 / fps:.3g} s")
    return frames


def display_rotation(frame: av.VideoFrame) -> int:
    """The clockwise degrees (0, 90, 180 or 270) that stand `frame` upright, from its display matrix, as OpenCV's
    `CAP_PROP_ORIENTATION_META`: the matrix's angle as FFmpeg's `av_display_rotation_get` reads it, rounded; OpenCV
    turns only by quarter turns and ignores a flip, and so do we. Read from the frame's side data, which every PyAV
    from 12 carries (`VideoFrame.rotation` exists only from 14)."""
    for data in frame.side_data:
        if getattr(data.type, "name", str(data.type)) == "DISPLAYMATRIX":
            a, b, _, c, d = struct.unpack("=5i", bytes(data)[:20])  # 16.16 fixed point, row-major
            if math.hypot(a, c) and math.hypot(b, d):
                degrees = round(math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))) % 360
                return degrees if degrees in (90, 180, 270) else 0
    return 0


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded (H, W, 3) frame turned `rotation` degrees clockwise (`display_rotation`), contiguous."""
    return np.ascontiguousarray(np.rot90(rgb, -(rotation // 90))) if rotation else rgb


def video_rotation(path: str | Path) -> int:
    """The video's `display_rotation`, from its first frame (0 for a video with no frame)."""
    with _open(path) as container:
        first = next(_frames(container, path), None)
        return display_rotation(first) if first is not None else 0


def video_rotations(paths: list[Path]) -> list[int]:
    """Each video's `video_rotation`; 0 for one that cannot be read (it fails, and is reported, where it is decoded)."""
    rotations = []
    for path in paths:
        try:
            rotations.append(video_rotation(path))
        except MediaError:
            rotations.append(0)
    return rotations


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, size, rate and the timestamp of every frame, from the container's packets, and the rotation, from
    the first frame (the only one decoded)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            pts = [packet.pts for packet in container.demux(stream) if packet.size]
        except av.error.FFmpegError as error:
            raise MediaError(path, f"unreadable video ({error})") from None
        rate = _rate(stream)
        seekable = all(value is not None for value in pts)
        if seekable:
            time_base = stream.time_base
        else:  # raw streams without timestamps: count the frames by decoding, time them by the rate
            with _open(path) as again:
                pts = list(range(sum(1 for _ in _frames(again, path))))
            time_base = 1 / Fraction(rate or 1)
        rotation = video_rotation(path)
        width, height = stream.codec_context.width, stream.codec_context.height
        return VideoInfo(
            path=str(path),
            width=height if rotation in (90, 270) else width,
            height=width if rotation in (90, 270) else height,
            fps=float(rate) if rate else 0.0,
            pts=np.sort(np.asarray(pts, dtype=np.int64)),
            time_base=time_base,
            seekable=seekable,
            rotation=rotation,
        )


def _frames(container: av.container.InputContainer, path: str | Path) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(video=0)
    except av.error.FFmpegError as error:
        raise MediaError(path, f"unreadable video ({error})") from None


@dataclass
class VideoFrame:
    index: int  # presentation order, from 0
    time: float  # seconds
    rgb: np.ndarray  # (H, W, 3) uint8, upright


def decode_video(
    path: str | Path, start: int = 0, stop: int | None = None, start_pts: int | None = None, threads: int = AUTO_THREADS
) -> Iterator[VideoFrame]:
    """Frames `start .. stop - 1` (presentation order) of a video, each with its index and time, upright (its display
    matrix applied: `display_rotation`).

    With `start_pts` (frame `start`'s timestamp, `VideoInfo.pts[start]`) the decoder seeks to the keyframe before it
    and decodes from there; without it, the video is decoded from its first frame. Stops early, without error, where
    the video ends: callers compare the count with what they expected. `threads`: FFmpeg's decoder threads (0: its
    choice; 1: the calling thread only, for a worker that has one core).
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        seek = start_pts is not None and start > 0
        if seek:
            container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
        index = start if seek else 0
        for frame in _frames(container, path):
            if seek and frame.pts is not None and frame.pts < start_pts:
                continue  # between the keyframe we landed on and frame `start`
            if stop is not None and index >= stop:
                return
            if index >= start:
                time = float(frame.time) if frame.time is not None else float("nan")
                rgb = frame.to_ndarray(format="rgb24", **_RGB_THREADS)
                yield VideoFrame(index, time, upright(rgb, display_rotation(frame)))
            index += 1


def read_video(path: str | Path, indices: list[int] | None = None) -> np.ndarray:
    """All frames of a video, or those at `indices` (presentation order), as (frames, H, W, 3) uint8."""
    wanted = None if indices is None else set(indices)
    stop = None if indices is None else max(indices) + 1
    frames = {frame.index: frame.rgb for frame in decode_video(path, 0, stop) if wanted is None or frame.index in wanted}
    if indices is None:
        return np.stack(list(frames.values())) if frames else np.empty((0, 0, 0, 3), np.uint8)
    missing = [index for index in indices if index not in frames]
    if missing:
        raise MediaError(path, f"has {len(frames) and max(frames) + 1} frames; frame {missing[0]} was asked for")
    return np.stack([frames[index] for index in indices])


def load_processor(model_name_or_path: str | Path, image_size: int):
    """The processor saved with a LAPA-DINOv3 model (its `preprocessor_config.json`, in a folder or on the Hub), else
    the default one at the backbone's `image_size`."""
    from lary_hub.processing_lapa_dinov3 import LapaDinov3Processor

    try:
        return LapaDinov3Processor.from_pretrained(str(model_name_or_path))
    except OSError:  # no preprocessor_config.json
        return LapaDinov3Processor(size=image_size)
