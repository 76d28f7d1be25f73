"""`lary train`: a LAPA-DINOv3-style latent action model, trained with the LAPA recipe (one process, or under
`accelerate launch` for DDP)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lary.configs.model import allow_missing_weights_option
from lary.configs.parser import option, positive, require


def stride_range(value: str) -> tuple[int, int]:
    """`a,b` -> (a, b)."""
    try:
        low, high = (int(part) for part in value.split(","))
    except ValueError:
        raise ValueError(f"expected a,b (two integers), got {value!r}") from None
    return low, high


@dataclass(kw_only=True)
class TrainConfig:
    backbone: str = option("DINOv3 model id or folder (pretrained), or a DINOv3 config JSON (random init).")
    allow_missing_weights: bool = allow_missing_weights_option()
    data: list[str] = option(
        "Videos, image folders, folders of clips, saved `datasets` folders (a `frames` column), "
        "dataset:PATH_OR_ID:CONFIG[:SPLIT] (a LARY/`datasets` config: `frames` clips or `source_image`/`target_image` "
        "pairs; split train by default), or synthetic:COUNT[:SEED]."
    )
    out: Path = option("Output folder: final model, checkpoints/, log.jsonl, training_curves.png.", short="-o", same_run=False)
    model_config: Path | None = option("JSON of LapaDinov3Config fields other than backbone_config.", default=None)
    image_size: int | None = option("Backbone input size (default: the backbone config's image_size).", default=None)
    steps: int = option("Optimizer steps.", default=1000)
    batch_size: int = option("Frame pairs per step and process.", default=32)
    lr: float = option("Learning rate.", default=3e-4)
    weight_decay: float = option("AdamW weight decay.", default=0.0)
    lr_scheduler: str = option("A transformers scheduler name (constant, cosine, linear, ...).", default="constant")
    warmup_steps: int = option("Warmup steps of the scheduler.", default=0)
    max_grad_norm: float = option("Gradient norm clipping.", default=0.5)
    stride_range: tuple[int, int] = option("a,b: the frame stride drawn per sample.", default=(1, 1), parse=stride_range, metavar="A,B")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("Mixed precision of the forward pass.", default="no")
    gradient_checkpointing: bool = option("Recompute the latent action transformers' activations in backward.", default=False, same_run=False)
    cache_features: bool = option("Compute the frozen backbone's features once, before training.", default=False)
    save_every: int = option("Checkpoint every N steps (and at the end).", default=500, same_run=False)
    log_every: int = option("Log every N steps.", default=10, same_run=False)
    seed: int = option("Seed of the data order, NSVQ noise and initialisation.", default=0)
    resume: bool = option("Continue from the latest checkpoint in --out.", default=False, same_run=False)
    cpu: bool = option("Train on CPU even if an accelerator is present.", default=False, same_run=False)
    num_workers: int = option("DataLoader workers.", default=0, same_run=False)
    command: str = ""  # the command line, for the model card (set by the CLI)

    def validate(self) -> None:
        positive(self, "steps", "batch_size", "save_every", "log_every", "image_size")
        low, high = self.stride_range
        require(1 <= low <= high, f"--stride-range must be 1 <= a <= b; got {low},{high}")
