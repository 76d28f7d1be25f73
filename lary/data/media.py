"""Reading LARY media: image bytes as stored, clip frames decoded once with PyAV, action and state arrays."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image


class MediaError(Exception):
    """A media file that is missing or cannot be read; `--skip-missing` leaves its row out."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ClipIndexError(ValueError):
    """A sample index past the last frame of a clip: a metadata error, never skipped."""


def read_image_bytes(path: str | Path) -> bytes:
    """The file's bytes as they are on disk, after checking that PIL can parse them."""
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except FileNotFoundError:
        raise MediaError(path, "missing") from None
    except Exception as error:  # PIL raises several types for corrupt files
        raise MediaError(path, f"unreadable image ({error})") from None
    return data


def encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def read_clip_frames(path: str | Path, indices: list[int]) -> list[bytes]:
    """PNG bytes of the frames at `indices` (decode order, from 0), decoding the clip once up to the last one."""
    if not Path(path).is_file():
        raise MediaError(path, "missing")
    wanted = set(indices)
    last = max(indices)
    frames: dict[int, bytes] = {}
    count = 0
    try:
        with av.open(str(path)) as container:
            for count, frame in enumerate(container.decode(video=0), start=1):
                if count - 1 in wanted:
                    frames[count - 1] = encode_png(frame.to_ndarray(format="rgb24"))
                if count > last:
                    break
    except av.error.FFmpegError as error:
        raise MediaError(path, f"unreadable video ({error})") from None
    if last not in frames:
        raise ClipIndexError(f"{path}: sample index {last} is past the end of the clip ({count} frames)")
    return [frames[index] for index in indices]


def read_array(path: str | Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MediaError(path, "missing") from None
    except (OSError, ValueError) as error:
        raise MediaError(path, f"unreadable .npy ({error})") from None


def read_action(path: str | Path, stride: int, dof: int | None) -> np.ndarray:
    """A `(stride, dof)` float32 chunk; `dof=None` takes it from the file (it varies by robot)."""
    array = read_array(path).astype(np.float32)
    if array.size % stride or (dof is not None and array.size != stride * dof):
        expected = f"({stride}, {dof})" if dof is not None else f"({stride}, dof)"
        raise MediaError(path, f"action of shape {array.shape} does not fit {expected}")
    return array.reshape(stride, -1)
