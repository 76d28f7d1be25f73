"""PNG plots of a probe run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_classification_curves(history: list[dict], heads: list[dict], path: Path) -> None:
    """Train loss and validation top-1 per epoch, one line per head."""
    epochs = [entry["epoch"] for entry in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for i, head in enumerate(heads):
        label = f"lr={head['lr']:g}, wd={head['weight_decay']:g}"
        loss_ax.plot(epochs, [entry["train_loss"][i] for entry in history], label=label)
        acc_ax.plot(epochs, [100 * entry["validation_accuracy"][i] for entry in history], label=label)
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Validation top-1")
    acc_ax.legend(fontsize=8)
    _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, label_names: list[str], path: Path) -> None:
    """Rows: true class, columns: predicted class, normalized per row."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = min(4 + 0.25 * len(label_names), 30)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if len(label_names) <= 60:
        ticks = np.arange(len(label_names))
        ax.set_xticks(ticks, label_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, label_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalized)")
    _save(fig, path)


def plot_regression_curves(history: list[dict], path: Path) -> None:
    """Train Huber loss and validation normalized MSE per epoch."""
    epochs = [entry["epoch"] for entry in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [entry["train_loss"] for entry in history], label="train Huber loss")
    ax.plot(epochs, [entry["validation_mse"] for entry in history], label="validation MSE")
    ax.axhline(1.0, color="gray", linestyle=":", label="predict the mean")
    ax.set(xlabel="epoch", ylabel="normalized units", title="Regression probe")
    ax.legend()
    _save(fig, path)


def plot_per_dimension_error(per_dimension_mse: list[float], path: Path) -> None:
    """Validation MSE of each action dimension (normalized units) at the reported epoch."""
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(per_dimension_mse)), 4))
    ax.bar(range(len(per_dimension_mse)), per_dimension_mse)
    ax.axhline(1.0, color="gray", linestyle=":")
    ax.set(xlabel="action dimension", ylabel="MSE (normalized)", title="Per-dimension error")
    _save(fig, path)
