"""`--cache-features`: the backbone is frozen, so each frame's DINOv3 features are computed once and reused."""

from __future__ import annotations

import torch

from lary import LapaDinov3Model


@torch.no_grad()
def compute_features(model: LapaDinov3Model, clips: list[torch.Tensor], batch_size: int = 64) -> list[torch.Tensor]:
    """(frames, h, w, D) float32 CPU features of every clip's frames (uint8 (frames, 3, H, W))."""
    device = next(model.parameters()).device
    features = []
    for clip in clips:
        chunks = [
            model.extract_features(chunk.to(device).float() / 127.5 - 1).float().cpu()
            for chunk in clip.split(batch_size)
        ]
        features.append(torch.cat(chunks))
    return features
