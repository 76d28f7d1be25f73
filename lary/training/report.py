"""What a training run leaves besides weights: a plot of its curves, and what its model card says of the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lary.configs.train import TrainConfig

CURVES = (("loss", "feature MSE"), ("perplexity", "codebook perplexity"), ("codebook_usage", "codebook usage"))


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(log_path: str | Path, png: str | Path) -> Path:
    """Loss, perplexity and codebook usage against the step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    steps = [r["step"] for r in records]
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3))
    for axis, (key, title) in zip(axes, CURVES):
        axis.plot(steps, [r[key] for r in records])
        axis.set_title(title)
        axis.set_xlabel("step")
    axes[0].set_yscale("log")
    figure.tight_layout()
    figure.savefig(png, dpi=80)
    plt.close(figure)
    return Path(png)


def training_provenance(log_path: str | Path, args: TrainConfig) -> str:
    """How the model was trained (its data, backbone, losses and command): the provenance paragraph of the card that
    `lary.hub.export` writes with `lary.model_card` (license and `base_model` as every LAPA-DINOv3 card has them)."""
    records = read_log(log_path)
    first, last = records[0], records[-1]
    if args.backbone.endswith(".json"):
        backbone = "randomly initialised from a config: not pretrained DINOv3 weights"
    else:
        backbone = "pretrained weights, frozen"
    return f"""Its quantizer was trained for {last['step']} steps on `{' '.join(args.data)}` with `lary train` (the LAPA recipe,
frozen backbone).

- Backbone: `{args.backbone}` ({backbone}).
- Feature MSE: {first['loss']:.4f} at step {first['step']}, {last['loss']:.4f} at step {last['step']}; codebook usage
  {last['codebook_usage']:.2f}, perplexity {last['perplexity']:.2f} at the last logged step.
- Curves: `training_curves.png`, `log.jsonl`.

```bash
{args.command or 'lary train ...'}
```"""
