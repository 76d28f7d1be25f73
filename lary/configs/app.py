"""`lary app`: the Gradio page of the Hub Space, served locally."""

from __future__ import annotations

from dataclasses import dataclass

from lary.app.limits import MAX_FILE_MB, MAX_FRAMES, MAX_PIXELS
from lary.configs.model import allow_missing_weights_option
from lary.configs.parser import option, positive, require


@dataclass(kw_only=True)
class AppConfig:
    model: str | None = option("Model id or folder (default: the embedded examples/tiny-lapa-dinov3).", default=None)
    allow_missing_weights: bool = allow_missing_weights_option()
    host: str = option("Address to listen on; 0.0.0.0 serves other machines too.", default="127.0.0.1")
    port: int | None = option("Port (default: 7860, or the next free one).", default=None)
    share: bool = option("Also serve through a temporary public gradio.live link.", default=False)
    max_frames: int = option("Frames decoded and run per request.", default=MAX_FRAMES, group="limits per request")
    max_pixels: int = option("Pixels per frame (width x height).", default=MAX_PIXELS, group="limits per request")
    max_file_mb: int = option("Size of an uploaded file, in MB.", default=MAX_FILE_MB, group="limits per request")

    def validate(self) -> None:
        positive(self, "max_frames", "max_pixels", "max_file_mb")
        require(self.max_frames >= 2, "--max-frames must be at least 2 (a pair of frames)")
        require(self.port is None or 1 <= self.port <= 65535, f"--port must be in [1, 65535]; got {self.port}")
