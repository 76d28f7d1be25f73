"""What a training run leaves besides weights: a plot of its curves and a model card with its command."""

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


def write_model_card(out: Path, args: TrainConfig) -> Path:
    """README.md stating how the model was trained (replaces the released model's card that `export` copies)."""
    records = read_log(out / "log.jsonl")
    first, last = records[0], records[-1]
    random_backbone = args.backbone.endswith(".json")
    card = f"""---
library_name: transformers
pipeline_tag: robotics
tags: [latent-actions, lapa, dinov3, image-feature-extraction]
---

# LAPA-DINOv3-style latent action model trained with `lary train`

A latent action quantizer (LAPA recipe) on a frozen DINOv3 backbone, trained for {last['step']} steps on
`{' '.join(args.data)}`.

- Backbone: `{args.backbone}` ({'randomly initialised from a config: not pretrained DINOv3 weights' if random_backbone else 'pretrained weights, frozen'}).
- Feature MSE: {first['loss']:.4f} at step {first['step']}, {last['loss']:.4f} at step {last['step']}; codebook usage
  {last['codebook_usage']:.2f}, perplexity {last['perplexity']:.2f} at the last logged step.
- Curves: `training_curves.png`, `log.jsonl`.

```bash
{args.command or 'lary train ...'}
```

```python
from transformers import AutoModel
model = AutoModel.from_pretrained("PATH", trust_remote_code=True)
```
"""
    path = out / "README.md"
    path.write_text(card)
    return path
