"""Reading LARY media: image bytes as stored, clip frames decoded once (`lary.frames`), action and state arrays.
`MediaError` (a missing or unreadable file) is what `--skip-missing` leaves out."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from lary.errors import LaryError, MediaError
from lary.frames import decode_video


class ClipIndexError(LaryError):
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
    """PNG bytes of the frames at `indices` (presentation order, from 0), decoding the clip once up to the last one."""
    wanted, last = set(indices), max(indices)
    frames: dict[int, bytes] = {}
    count = 0
    for frame in decode_video(path, 0, last + 1):
        count = frame.index + 1
        if frame.index in wanted:
            frames[frame.index] = encode_png(frame.rgb)
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
