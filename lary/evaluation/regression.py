"""The LARY regression probe: an MLPResNet from the flattened representation to the z-scored action chunk."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from lary.errors import LaryError

from .training import (
    Rows,
    StepEstimate,
    selection_record,
    split_for_selection,
    steps_per_epoch,
    train_probe,
    warmup_constant,
)

ALL_ROBOTS = "all"


@dataclass
class RegressionConfig:
    hidden_dim: int = 4096
    residual_blocks: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 256
    warmup_fraction: float = 0.1
    huber_delta: float = 1.0
    seed: int = 0
    selection: str = "validation"  # the epoch is chosen on the validation split (LARYBench), or "held-out"
    held_out_fraction: float = 0.1  # with "held-out": the share of train rows set aside to choose the epoch on


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm, Linear(in -> hidden), ReLU, residual blocks, LayerNorm, Linear(hidden -> out) on the input
    flattened to `[batch, in]`."""

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = 4096, num_blocks: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(input_dim),
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            *(ResidualBlock(hidden_dim) for _ in range(num_blocks)),
            nn.LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


@dataclass
class ActionNormalizer:
    """Per-dof mean and std of the train actions (over rows and chunk steps), one pair per robot type."""

    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def fit(cls, actions: list[np.ndarray], robot_types: list[str] | None) -> ActionNormalizer:
        stats = {}
        for robot, rows in _group(actions, robot_types).items():
            values = np.concatenate([actions[i] for i in rows]).astype(np.float64)
            std = values.std(0)
            stats[robot] = (values.mean(0), np.where(std < 1e-6, 1.0, std))
        return cls(stats)

    def normalize(self, actions: list[np.ndarray], robot_types: list[str] | None) -> list[np.ndarray]:
        out = []
        for i, action in enumerate(actions):
            robot = robot_types[i] if robot_types else ALL_ROBOTS
            if robot not in self.stats:
                raise LaryError(f"robot_type {robot!r} has no rows in the train split (train has {sorted(self.stats)})")
            mean, std = self.stats[robot]
            if action.shape[-1] != len(mean):
                raise LaryError(f"{robot!r} actions have dof {action.shape[-1]} here but {len(mean)} in train")
            out.append(((action - mean) / std).astype(np.float32))
        return out

    def to_json(self) -> dict:
        return {robot: {"mean": mean.tolist(), "std": std.tolist()} for robot, (mean, std) in self.stats.items()}


def _group(actions: list[np.ndarray], robot_types: list[str] | None) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i in range(len(actions)):
        groups.setdefault(robot_types[i] if robot_types else ALL_ROBOTS, []).append(i)
    return groups


def pad_targets(actions: list[np.ndarray], stride: int, dof: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack `[stride, dof_i]` chunks into `[rows, stride * dof]` targets and a mask of the real (unpadded) entries."""
    targets = torch.zeros(len(actions), stride, dof)
    mask = torch.zeros(len(actions), stride, dof, dtype=torch.bool)
    for i, action in enumerate(actions):
        if action.shape[0] != stride:
            raise LaryError(f"row {i} has an action chunk of {action.shape[0]} steps, expected {stride}")
        targets[i, :, : action.shape[1]] = torch.from_numpy(action)
        mask[i, :, : action.shape[1]] = True
    return targets.flatten(1), mask.flatten(1)


@dataclass
class RegressionResult:
    mse: float
    best_epoch: int
    per_dimension_mse: list[float]
    per_robot_mse: dict[str, float]
    mean_predictor_mse: float
    history: list[dict] = field(default_factory=list)
    normalization: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)


def masked_mse(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    return ((predictions - targets)[mask] ** 2).mean().item()


def train_regression(
    train_features: Rows,
    train_actions: list[np.ndarray],
    val_features: Rows,
    val_actions: list[np.ndarray],
    config: RegressionConfig,
    accelerator: Accelerator,
    train_robot_types: list[str] | None = None,
    val_robot_types: list[str] | None = None,
    on_estimate: StepEstimate | None = None,
) -> RegressionResult:
    """Train one MLPResNet on z-scored targets (padded to the largest dof when robot types differ, padding masked out
    of loss and metrics); report the validation MSE at the chosen epoch. Each step reads only its process's rows.

    The epoch is the one with the lowest MSE on the validation rows (`config.selection` "validation", as LARYBench),
    or on `config.held_out_fraction` of the train rows, which it then does not train on ("held-out": the reported MSE
    was not tuned on). The normalization statistics come from all train rows either way, so both report in the same
    units. `mean_predictor_mse` is the control: the train mean of every dof (per robot type), which is 0 once
    z-scored, scored like the probe. `on_estimate`: see `training.train_epochs`."""
    normalizer = ActionNormalizer.fit(train_actions, train_robot_types)
    stride = train_actions[0].shape[0]
    dof = max(action.shape[1] for action in train_actions + val_actions)
    train_targets, train_mask = pad_targets(normalizer.normalize(train_actions, train_robot_types), stride, dof)
    val_targets, val_mask = pad_targets(normalizer.normalize(val_actions, val_robot_types), stride, dof)
    (train_features, train_targets, train_mask), held_out = split_for_selection(
        config.selection, config.held_out_fraction, config.seed, train_features, train_targets, train_mask
    )
    torch.manual_seed(config.seed)
    model = MLPResNet(math.prod(train_features.shape[1:]), stride * dof, config.hidden_dim, config.residual_blocks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch(len(train_features), config.batch_size)

    def batch_loss(predictions: torch.Tensor, rows: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        mask = train_mask[rows].to(accelerator.device)
        loss = F.huber_loss(
            predictions[mask], train_targets[rows].to(accelerator.device)[mask], delta=config.huber_delta, reduction="sum"
        )
        # the objective: the mean over the real entries of the global batch, once gradients are averaged over processes
        return loss * accelerator.num_processes / train_mask[batch].sum(), [loss.item(), mask.sum().item()]

    history, best = [], None
    scored = (val_features, None if held_out is None else held_out[0])
    epochs = train_probe(
        model, optimizer, warmup_constant(int(config.warmup_fraction * total_steps)), train_features, batch_loss,
        scored, lambda rows: (rows, stride * dof), accelerator, epochs=config.epochs, batch_size=config.batch_size,
        seed=config.seed, desc="regression probe", on_estimate=on_estimate,
    )
    for epoch, (loss_sum, entries), (predictions, held_predictions) in epochs:
        mse = masked_mse(predictions, val_targets, val_mask)
        entry = {"epoch": epoch, "train_loss": loss_sum / entries, "validation_mse": mse}
        if held_out is not None:
            _, held_targets, held_mask = held_out
            entry["held_out_mse"] = masked_mse(held_predictions, held_targets, held_mask)
        history.append(entry)
        score = entry["held_out_mse" if held_out is not None else "validation_mse"]
        score = score if math.isfinite(score) else math.inf  # a NaN epoch is never the best (nor hides a later one)
        if best is None or score < best[0]:
            best = (score, epoch, predictions)
    score, best_epoch, predictions = best
    selection = selection_record(config.selection, config.held_out_fraction, held_out, len(train_features),
                                 epoch=best_epoch, score=score)
    squared = ((predictions - val_targets) ** 2 * val_mask).reshape(-1, stride, dof)
    counts = val_mask.reshape(-1, stride, dof).sum((0, 1)).clamp(min=1)
    groups = _group(val_actions, val_robot_types)
    return RegressionResult(
        mse=history[best_epoch - 1]["validation_mse"],
        best_epoch=best_epoch,
        per_dimension_mse=(squared.sum((0, 1)) / counts).tolist(),
        per_robot_mse={robot: masked_mse(predictions[rows], val_targets[rows], val_mask[rows]) for robot, rows in groups.items()},
        mean_predictor_mse=masked_mse(torch.zeros_like(val_targets), val_targets, val_mask),
        history=history,
        normalization=normalizer.to_json(),
        config=asdict(config),
        selection=selection,
    )
