"""`lary evaluate` and `lary leaderboard`: LARY's probes on `lary extract` outputs, and their results as a table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lary.configs.parser import option, positive, require


@dataclass(kw_only=True)
class EvaluateConfig:
    task: Literal["classification", "regression"] = option("The probe: class labels, or action chunks.")
    out: Path = option("Folder for results.json and the plots.", short="-o", same_run=False)
    train: Path | None = option("`lary extract` output folder of the train split.", default=None, group="data")
    validation: Path | None = option("`lary extract` output folder of the validation split.", default=None, group="data")
    data: Path | None = option(
        "One `lary extract` output folder, split into train and validation by --split-by (instead of --train and "
        "--validation).", default=None, group="data",
    )
    split_by: Literal["episode", "clip"] = option(
        "With --data: keep each episode (`episode_index`) or clip (`id`) whole in one split; classification draws "
        "each class's groups on its own (stratified).", default="clip", group="data",
    )
    validation_fraction: float = option("With --data: the share of episodes or clips held out.", default=0.2, group="data")
    target: str = option("Regression target column (e.g. `action`, or `observation.state` of LeRobot rows).", default="action")
    feature: Literal["latent_actions", "continuous_latent_actions", "action_indices", "features"] | None = option("Representation column (default: latent_actions, else features).", default=None)
    cache_dir: Path | None = option(
        "Where the features are copied once for per-batch reads (default: $LARY_CACHE/features or ~/.cache/lary/features).",
        default=None, same_run=False,
    )
    selection: Literal["validation", "held-out"] = option(
        "How the reported head/epoch is chosen: on the validation split, as LARYBench does (the paper's numbers), or "
        "on a held-out slice of the training split, so the validation numbers are untuned.", default="validation",
    )
    epochs: int = option("Training epochs.", default=20)
    batch_size: int = option("Global batch size, split over processes.", default=256)
    hidden_dim: int | None = option("Probe width (default: 768 classification, 4096 regression).", default=None)
    lr: list[float] | None = option("Learning rate(s): one per classification head; one for regression.", default=None)
    weight_decay: list[float] | None = option("Weight decay(s), matching --lr.", default=None)
    seed: int = option("Seed of the probe, the batch order, the --data split and the shuffled-target control.", default=0)
    shuffled_control: bool = option(
        "Also train the same probe on the train targets shuffled over the rows (seeded), reported in results.json's "
        "`controls` beside the majority class / mean predictor: what the probe scores when the features carry nothing. "
        "Doubles the training time.", default=True,
    )
    cpu: bool = option("Run on CPU, also under `accelerate launch`.", default=False, same_run=False)
    pooler_depth: int = option("Attentive pooler blocks (last one cross-attends).", default=4, group="classification probe")
    attention_heads: int = option("Attention heads of the pooler.", default=16, group="classification probe")
    mlp_ratio: float = option("MLP width ratio of the pooler.", default=4.0, group="classification probe")
    warmup_epochs: float = option("Epochs of linear LR warmup.", default=0.0, group="classification probe")
    label_smoothing: float = option("Label smoothing of the cross-entropy.", default=0.1, group="classification probe")
    class_balanced: bool = option("Draw every class equally often.", default=True, group="classification probe")
    action_chunk: Literal["exact", "resample"] = option(
        "Action chunks of different lengths (--stride-seconds on videos at different frame rates): refuse them, before "
        "any work, naming the ids (exact), or resample each to the train rows' most common length over its span "
        "(resample; docs/evaluation.md).", default="exact", group="regression probe",
    )
    residual_blocks: int = option("Residual blocks of the MLPResNet.", default=2, group="regression probe")
    warmup_fraction: float = option("Share of steps with linear LR warmup.", default=0.1, group="regression probe")

    def validate(self) -> None:
        positive(self, "epochs", "batch_size", "hidden_dim")
        separate = self.train is not None or self.validation is not None
        require(
            (self.data is not None) != separate and (self.data is not None or (self.train and self.validation)),
            "give --train and --validation (two `lary extract` folders), or --data (one folder to split)",
        )
        require(0 < self.validation_fraction < 1, f"--validation-fraction must be in (0, 1); got {self.validation_fraction}")


@dataclass(kw_only=True)
class LeaderboardConfig:
    results: list[Path] = option("results.json files or folders searched for them.", positional=True)
    out: Path = option("Markdown file to write.", default=Path("leaderboard.md"), short="-o")
