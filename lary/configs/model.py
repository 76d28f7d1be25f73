"""`lary convert` and `lary demo`: a LARYBench checkpoint as a Hub folder, and the codes of one clip."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lary.configs.parser import option, positive, require

NUM_DIRECTIONS = 8  # lary.synthetic.DIRECTIONS


def allow_missing_weights_option() -> bool:
    """`--allow-missing-weights` of every command that loads a model (`lary.hub.load_pretrained`)."""
    return option(
        "Load a model whose weights file lacks some of its weights (they start at random) or holds others (dropped); "
        "without it such a model is refused, naming the keys. Mis-shaped weights are always refused.",
        default=False, same_run=False,
    )


@dataclass(kw_only=True)
class ConvertConfig:
    checkpoint: Path = option("LARYBench checkpoint (a torch pickle with the state dict under 'model').", positional=True)
    out: Path = option("Output folder (Hub-ready).", short="-o")
    laq_config: Path | None = option("JSON of the reference constructor's keyword arguments (default: released).", default=None)
    backbone_config: Path | None = option("DINOv3 config JSON (default: ViT-L/16, the released backbone).", default=None, one_of="backbone")
    backbone: str | None = option("DINOv3 model id or folder: its config, and its weights if the checkpoint has none.", default=None, one_of="backbone")
    allow_missing_weights: bool = allow_missing_weights_option()


@dataclass(kw_only=True)
class DemoConfig:
    model: str | None = option("Model id or folder (default: the embedded examples/tiny-lapa-dinov3).", default=None)
    video: Path | None = option("A video file (default: a generated synthetic clip).", default=None)
    frames: int = option("Frames taken from the clip, spread evenly over it.", default=8)
    stride: int = option("Frame distance of each pair, in the frames taken.", default=1)
    direction: int | None = option("Motion of the synthetic clip (0 = right, then counter-clockwise in 45° steps).", default=None)
    seed: int = option("Seed of the synthetic clip.", default=0)
    out: Path = option("Folder for demo_timeline.png (made if absent; `outputs/` is ignored by git).",
                       default=Path("outputs/demo"), short="-o")
    allow_missing_weights: bool = allow_missing_weights_option()

    def validate(self) -> None:
        positive(self, "frames", "stride")
        require(self.direction is None or 0 <= self.direction < NUM_DIRECTIONS, f"--direction must be in [0, {NUM_DIRECTIONS - 1}]")
        require(self.stride < self.frames, f"--stride must be below --frames ({self.frames})")
