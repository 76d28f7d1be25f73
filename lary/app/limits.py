"""The work one `lary app` request may ask for. Past a limit the request is refused with a message naming it (or, for
an unset frame range, cut to the limit with a note), so one upload cannot hold the server for long; and the memory the
page holds for its visitors' "what if" panels."""

from __future__ import annotations

from dataclasses import dataclass

MAX_FRAMES = 64  # frames decoded and run per request: ~1 min for the released ViT-L on 2 CPU cores
MAX_PIXELS = 3840 * 2160  # per frame (4K UHD); bigger frames cost memory before they are resized
MAX_FILE_MB = 200
MAX_HELD_MB = 1024  # the visitors' last analyses together (about 11 MB each at 64 frames), for the "what if" panel
MEGABYTE = 2**20


@dataclass(frozen=True)
class Limits:
    max_frames: int = MAX_FRAMES
    max_pixels: int = MAX_PIXELS
    max_file_mb: int = MAX_FILE_MB
    max_held_mb: int = MAX_HELD_MB

    def describe(self) -> str:
        """One line for the page."""
        return (
            f"up to {self.max_frames} frames per request, frames up to {self.max_pixels:,} pixels "
            f"({self.max_pixels / 1e6:.3g} megapixels), files up to {self.max_file_mb} MB"
        )
