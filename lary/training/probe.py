"""Does a model's latent action carry the motion? Scores on synthetic clips whose direction is known: a linear probe
of the direction from each representation, codebook use, and how much the decoder relies on the action.

`examples/tiny_lapa_dinov3_numbers.py` computes the embedded model's card with these; the tests score the embedded
model and a fresh `lary train` run with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lary import LapaDinov3Model
from lary.frames import load_processor
from lary.synthetic import DIRECTIONS, SyntheticClip

# What the decoder is conditioned on, from the raw code difference to the projected codebook vector.
REPRESENTATIONS = ("continuous_latent_actions", "action_indices", "latent_actions")


def _clip_outputs(
    model: LapaDinov3Model, clips: list[SyntheticClip], stride: int, batch_size: int, **options: bool
) -> Iterator[tuple[list[SyntheticClip], Any]]:
    """`(clips, model output)` for batches of `clips` in video mode (every frame encoded once), in eval mode; frames
    are prepared by the processor saved with the model (`model.name_or_path`), else the default one."""
    model.eval()
    processor = load_processor(model.name_or_path, model.config.backbone_config.image_size)
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        yield batch, model(**processor(videos=[list(clip.frames) for clip in batch], stride=stride), **options)


@torch.no_grad()
def latent_actions(
    model: LapaDinov3Model, clips: list[SyntheticClip], stride: int = 1, batch_size: int = 32
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """For every (t, t + stride) pair of every clip: each of `REPRESENTATIONS` flattened to (pairs, features)
    (`action_indices` one-hot), the pairs' direction labels, and their codebook indices (pairs, code_seq_len)."""
    codebook_size = model.config.codebook_size
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in REPRESENTATIONS}
    labels, indices = [], []
    for batch, output in _clip_outputs(model, clips, stride, batch_size):
        codes = output.action_indices.flatten(0, 1)
        parts["continuous_latent_actions"].append(output.continuous_latent_actions.flatten(0, 1).flatten(1))
        parts["action_indices"].append(F.one_hot(codes, codebook_size).flatten(1).float())
        parts["latent_actions"].append(output.latent_actions.flatten(0, 1).flatten(1))
        indices.append(codes)
        labels.append(torch.tensor([clip.direction for clip in batch]).repeat_interleave(output.action_indices.shape[1]))
    return {name: torch.cat(values) for name, values in parts.items()}, torch.cat(labels), torch.cat(indices)


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


def direction_probe(
    model: LapaDinov3Model, fit_clips: list[SyntheticClip], test_clips: list[SyntheticClip], stride: int = 1
) -> tuple[dict[str, float], torch.Tensor]:
    """Accuracy of a linear probe of the direction from each representation (fit on `fit_clips`, scored on
    `test_clips`; chance 1/8), and the test pairs' codebook indices."""
    fit, fit_labels, _ = latent_actions(model, fit_clips, stride)
    test, test_labels, indices = latent_actions(model, test_clips, stride)
    return {name: linear_probe_accuracy(fit[name], fit_labels, test[name], test_labels) for name in REPRESENTATIONS}, indices


def codebook_use(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of the codebook's entries that occur in `indices`, and the perplexity of their frequencies."""
    usage = torch.bincount(indices.flatten(), minlength=codebook_size).double() / indices.numel()
    return {
        "codebook_usage": (usage > 0).double().mean().item(),
        "perplexity": math.exp(-(usage * torch.log(usage + 1e-12)).sum().item()),
    }


@torch.no_grad()
def decoder_errors(model: LapaDinov3Model, clips: list[SyntheticClip], batch_size: int = 32) -> dict[str, float]:
    """Feature MSE of the second frame of every consecutive pair: the decoder's prediction, copying the first frame's
    features, and decoding with another pair's latent actions (the same pair of the previous clip, which moves in
    another direction). The decoder relies on the action when the first is well below the other two."""
    firsts, seconds, predictions, actions = [], [], [], []
    outputs = _clip_outputs(model, clips, 1, batch_size, return_predicted_features=True, output_backbone_features=True)
    for _, output in outputs:
        first, second = output.backbone_features.flatten(0, 1).unbind(1)
        firsts.append(first)
        seconds.append(second)
        predictions.append(output.predicted_features.flatten(0, 1))
        actions.append(output.latent_actions.flatten(0, 1))
    first, second, actions = torch.cat(firsts), torch.cat(seconds), torch.cat(actions)
    other = actions.roll(len(actions) // len(clips), dims=0)  # pairs per clip: each pair gets the previous clip's
    chunk = batch_size * 8
    candidates = {
        "prediction": torch.cat(predictions),
        "copy_first_frame": first,
        "other_pair_actions": torch.cat(
            [model.decode(f, a).last_hidden_state for f, a in zip(first.split(chunk), other.split(chunk))]
        ),
    }
    return {name: F.mse_loss(predicted, second).item() for name, predicted in candidates.items()}
