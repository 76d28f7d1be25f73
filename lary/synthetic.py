"""Procedural clips with known motion: a large textured shape moving in one of 8 directions over a low-contrast
textured background, with a small distractor moving its own way and, optionally, a jittering camera. Used by tests,
the demo and the embedded model's training; the direction index is the ground truth."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# Direction k moves at angle k * 45 degrees, counter-clockwise from "right" (image y points down).
DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")


@dataclass
class SyntheticClip:
    frames: np.ndarray  # (frames, size, size, 3) uint8
    direction: int  # index into DIRECTIONS
    velocity: tuple[float, float]  # (dx, dy) pixels per frame of the main shape, image coordinates


def direction_vector(direction: int) -> tuple[float, float]:
    """Unit (dx, dy) in image coordinates (y down) of a direction index."""
    angle = direction * math.pi / 4
    return math.cos(angle), -math.sin(angle)


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size, 3) uint8 blocky colour texture: `cells` x `cells` random colours, upsampled."""
    coarse = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    repeat = math.ceil(size / cells)
    return np.kron(coarse, np.ones((repeat, repeat, 1), dtype=np.uint8))[:size, :size]


def _blend(base: np.ndarray, texture: np.ndarray, contrast: float) -> np.ndarray:
    """`base` colour plus `contrast` times the texture's deviation from mid-grey, as uint8."""
    return np.clip(base + contrast * (texture.astype(np.float32) - 128), 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, radius: int) -> np.ndarray:
    """(2r+1, 2r+1) bool mask of a disc, square or diamond."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    kind = rng.integers(3)
    if kind == 0:
        return x**2 + y**2 <= radius**2
    if kind == 1:
        return np.maximum(abs(x), abs(y)) <= radius
    return abs(x) + abs(y) <= radius


def _paste(canvas: np.ndarray, sprite: np.ndarray, mask: np.ndarray, center: tuple[float, float]) -> None:
    """Draw `sprite` where `mask` is set, centred at (x, y), clipped to the canvas."""
    size = canvas.shape[0]
    radius = mask.shape[0] // 2
    x0, y0 = round(center[0]) - radius, round(center[1]) - radius
    sx, sy = max(0, -x0), max(0, -y0)
    ex, ey = min(mask.shape[1], size - x0), min(mask.shape[0], size - y0)
    if sx >= ex or sy >= ey:
        return
    region = canvas[y0 + sy : y0 + ey, x0 + sx : x0 + ex]
    m = mask[sy:ey, sx:ex]
    region[m] = sprite[sy:ey, sx:ex][m]


def make_clip(
    direction: int | None = None,
    *,
    num_frames: int = 8,
    size: int = 64,
    speed: tuple[float, float] = (6.0, 10.0),
    jitter: int = 0,
    distractor: bool = True,
    background_contrast: float = 0.0,
    shape_contrast: float = 1.0,
    seed: int | np.random.Generator | None = None,
) -> SyntheticClip:
    """One clip. `direction` is random if None.

    `speed`: the main shape's range in pixels per frame (about one 8-pixel patch at 64x64); `jitter`: camera shake
    in pixels per frame (0: still camera); `distractor`: draw the small shape with its own random motion;
    `background_contrast`: 0 is flat grey, 1 the full-contrast texture.
    """
    rng = np.random.default_rng(seed)
    direction = int(rng.integers(len(DIRECTIONS))) if direction is None else direction
    if not 0 <= direction < len(DIRECTIONS):
        raise ValueError(f"direction must be in [0, {len(DIRECTIONS) - 1}]; got {direction}")
    margin = 2 * jitter
    # a lower-contrast background, so the shapes stand out from it
    background = _blend(np.full(3, 128), _texture(rng, size + 2 * margin, int(rng.integers(4, 9))), background_contrast)

    radius = size // 5
    sprite = _blend(rng.integers(0, 256, size=3), _texture(rng, 2 * radius + 1, 4), shape_contrast)
    mask = _shape_mask(rng, radius)
    unit = direction_vector(direction)
    step = float(rng.uniform(*speed))
    velocity = (unit[0] * step, unit[1] * step)
    travel = (num_frames - 1) * np.array(velocity)
    # start so that the centre stays inside the frame for the whole clip
    low = np.maximum(radius // 2, radius // 2 - travel)
    high = np.maximum(low, np.minimum(size - radius // 2, size - radius // 2 - travel))
    start = rng.uniform(low, high)

    d_radius = max(2, size // 14)
    d_sprite = _texture(rng, 2 * d_radius + 1, 2)
    d_mask = _shape_mask(rng, d_radius)
    d_start = rng.uniform(0, size, size=2)
    d_velocity = rng.uniform(-2, 2, size=2)

    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        ox, oy = rng.integers(-jitter, jitter + 1, size=2) if jitter else (0, 0)
        canvas = background[margin + oy : margin + oy + size, margin + ox : margin + ox + size].copy()
        if distractor:
            _paste(canvas, d_sprite, d_mask, tuple(d_start + t * d_velocity - (ox, oy)))
        _paste(canvas, sprite, mask, tuple(start + t * np.array(velocity) - (ox, oy)))
        frames[t] = canvas
    return SyntheticClip(frames=frames, direction=direction, velocity=velocity)


def make_clips(count: int, seed: int = 0, **kwargs) -> list[SyntheticClip]:
    """`count` clips with directions balanced (clip i moves in direction i % 8), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [make_clip(i % len(DIRECTIONS), seed=rng, **kwargs) for i in range(count)]


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: int = 8, pix_fmt: str | None = None) -> Path:
    """Write RGB uint8 frames ((frames, H, W, 3), or any iterable of (H, W, 3), streamed) as a lossless FFV1 .mkv or
    an H.264 .mp4 (by suffix).

    `pix_fmt`: the stored pixel format; by default full-resolution colour (`bgr0`, `yuv444p`). Browsers play H.264
    only as `yuv420p` (half-resolution colour, even width and height).
    """
    path = Path(path)
    codec = "ffv1" if path.suffix == ".mkv" else "libx264"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.pix_fmt = pix_fmt or ("bgr0" if codec == "ffv1" else "yuv444p")
        for index, frame in enumerate(frames):
            if index == 0:
                stream.height, stream.width = frame.shape[:2]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
