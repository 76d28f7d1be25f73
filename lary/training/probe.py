"""Does a trained model's latent action carry the motion? A linear probe on synthetic clips' directions."""

from __future__ import annotations

import torch
from torch import nn

from lary import LapaDinov3Model, LapaDinov3Processor
from lary.synthetic import DIRECTIONS, SyntheticClip


@torch.no_grad()
def latent_actions(model: LapaDinov3Model, clips: list[SyntheticClip], stride: int = 1, batch_size: int = 32):
    """Flattened continuous latent actions (pairs, code_seq_len * quant_dim), the pairs' direction labels, and
    their codebook indices (pairs, code_seq_len), for every (t, t + stride) pair of every clip."""
    model.eval()
    processor = LapaDinov3Processor(size=model.config.backbone_config.image_size)
    features, labels, indices = [], [], []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        output = model(**processor(videos=[list(clip.frames) for clip in batch], stride=stride))
        features.append(output.continuous_latent_actions.flatten(2).flatten(0, 1))
        indices.append(output.action_indices.flatten(0, 1))
        pairs = output.action_indices.shape[1]
        labels.append(torch.tensor([clip.direction for clip in batch]).repeat_interleave(pairs))
    return torch.cat(features), torch.cat(labels), torch.cat(indices)


def linear_probe_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, steps: int = 500
) -> float:
    """Test accuracy of a softmax regression (standardised inputs, full-batch Adam) trained on the train split."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    probe = nn.Linear(train_x.shape[1], len(DIRECTIONS))
    torch.random.set_rng_state(generator_state)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    x = (train_x - mean) / std
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(probe(x), train_y).backward()
        optimizer.step()
    with torch.no_grad():
        return (probe((test_x - mean) / std).argmax(1) == test_y).float().mean().item()


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the codebook's entries that occur in `indices`."""
    return indices.unique().numel() / codebook_size
