"""`--cache-features`: the backbone is frozen, so each frame's DINOv3 features are computed once and reused.

Under several processes each computes every N-th clip and the parts are exchanged, so the cache costs 1/N of the
backbone passes per process instead of all of them.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from lary import LapaDinov3Model, LapaDinov3Processor
from lary.logs import progress_hidden


@torch.no_grad()
def _clip_features(model: LapaDinov3Model, processor: LapaDinov3Processor, clip: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    chunks = [model.extract_features(processor.normalize(chunk.to(device))).float().cpu() for chunk in clip.split(batch_size)]
    return torch.cat(chunks)


def compute_features(
    model: LapaDinov3Model,
    processor: LapaDinov3Processor,
    clips: list[torch.Tensor],
    accelerator: Accelerator | None = None,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """(frames, h, w, D) float32 CPU features of every clip's frames (uint8 (frames, 3, H, W)), in clip order."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = range(rank, len(clips), world)
    show = accelerator is None or accelerator.is_local_main_process
    parts = [(index, _clip_features(model, processor, clips[index], batch_size)) for index in tqdm(mine, desc="cache features", disable=not show or progress_hidden())]
    if world > 1:
        parts = gather_object(parts)
    by_index = dict(parts)
    return [by_index[index] for index in range(len(clips))]
