"""`lary evaluate`: train a LARY probe on `lary extract` outputs and write `results.json` and plots."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from lary import processes
from lary.configs.evaluate import EvaluateConfig
from lary.errors import LaryError

from .chunks import chunk_steps, resample_chunk
from .classification import PAPER_HEADS, ClassificationConfig, train_classification
from .features import (
    ExtractedSplit,
    check_feature_shapes,
    load_split,
    one_hot_indices,
    split_by_groups,
)
from .plots import (
    plot_classification_curves,
    plot_confusion_matrix,
    plot_per_dimension_error,
    plot_regression_curves,
)
from .regression import RegressionConfig, train_regression
from .training import TIMED_STEPS, StepEstimate

logger = logging.getLogger(__name__)


def _heads(args: EvaluateConfig) -> tuple[tuple[float, float], ...]:
    lrs = args.lr or [lr for lr, _ in PAPER_HEADS]
    decays = args.weight_decay or ([wd for _, wd in PAPER_HEADS] if args.lr is None else [0.01] * len(lrs))
    if len(lrs) != len(decays):
        raise LaryError(f"--lr has {len(lrs)} values but --weight-decay has {len(decays)}")
    return tuple(zip(lrs, decays))


def _single(values: list[float] | None, default: float, flag: str) -> float:
    if values is None:
        return default
    if len(values) != 1:
        raise LaryError(f"regression trains one probe: pass one {flag} value, not {len(values)}")
    return values[0]


def _split_info(split: ExtractedSplit) -> dict:
    return {"path": str(split.path), "split": split.manifest.get("split"), "rows": len(split)}


WIDTH = {"classification": 768, "regression": 4096}  # the probes' default --hidden-dim (LARYBench's)
QUICK_EPOCHS, QUICK_WIDTH, QUICK_DEPTH, QUICK_REGRESSION_WIDTH = 5, 256, 2, 1024


def quicker(args: EvaluateConfig) -> list[str]:
    """What would make this run's probe quicker, for the expected-time line: only settings it does not already use."""
    hints = [f"fewer epochs (--epochs {QUICK_EPOCHS})"] if args.epochs > QUICK_EPOCHS else []
    if args.task == "classification":
        if len(_heads(args)) > 1:
            hints.append(f"one head instead of {len(_heads(args))} (--lr 1e-3 --weight-decay 0.4)")
        narrower = [f"--hidden-dim {QUICK_WIDTH}"] if (args.hidden_dim or WIDTH[args.task]) > QUICK_WIDTH else []
        narrower += [f"--pooler-depth {QUICK_DEPTH}"] if args.pooler_depth > QUICK_DEPTH else []
    else:
        narrower = [f"--hidden-dim {QUICK_REGRESSION_WIDTH}"] if (args.hidden_dim or WIDTH[args.task]) > QUICK_REGRESSION_WIDTH else []
    if narrower:
        hints.append(f"a narrower probe ({' '.join(narrower)})")
    return hints


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _announce(args: EvaluateConfig, accelerator, train: ExtractedSplit, what: str) -> StepEstimate | None:
    """Say what is about to be trained, and return the callback that says, once a few steps are timed, how long it
    will take and what would make it quicker (on the main process)."""
    if not accelerator.is_main_process:
        return None
    steps = args.epochs * -(-len(train) // args.batch_size)
    timed = f"; its expected time follows after {TIMED_STEPS + 1} steps" if steps > TIMED_STEPS + 1 else ""
    logger.info("training the %s %s: %d rows x %d epochs in batches of %d (%d steps)%s", args.task, what, len(train),
                args.epochs, args.batch_size, steps, timed)

    def estimate(seconds_per_step: float, steps: int) -> None:
        again = ""
        if what == "probe" and args.shuffled_control:
            again = "; the shuffled-target control then trains as long again (--no-shuffled-control skips it)"
        hints = quicker(args)
        logger.info("expected time of the %s: about %s (%d steps of %.2f s, plus a validation pass per epoch)%s%s",
                    what, _duration(seconds_per_step * steps), steps, seconds_per_step, again,
                    f"; quicker: {', '.join(hints)}" if hints else "")

    return estimate


def _shuffled(args: EvaluateConfig, train: ExtractedSplit) -> np.ndarray:
    """The control's order of the train targets: a permutation of the rows, seeded by --seed."""
    return np.random.default_rng(args.seed).permutation(len(train))


def _classification_config(args: EvaluateConfig) -> ClassificationConfig:
    return ClassificationConfig(
        hidden_dim=args.hidden_dim or WIDTH["classification"],
        pooler_depth=args.pooler_depth,
        attention_heads=args.attention_heads,
        mlp_ratio=args.mlp_ratio,
        heads=_heads(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        class_balanced=args.class_balanced,
        seed=args.seed,
        selection=args.selection,
    )


def _classes_without_validation(names: list[str], validation: ExtractedSplit) -> list[str]:
    counts = np.bincount(validation.labels, minlength=len(names))
    return [names[label] for label in np.flatnonzero(counts == 0)]


def _classify(args, accelerator, train: ExtractedSplit, validation: ExtractedSplit, out: Path) -> dict:
    label_names = train.manifest.get("label_names")
    num_classes = len(label_names) if label_names else int(max(train.labels.max(), validation.labels.max())) + 1
    names = label_names or [str(i) for i in range(num_classes)]
    config = _classification_config(args)

    def train_on(labels: np.ndarray, what: str):
        return train_classification(
            train.features, torch.from_numpy(labels), validation.features, torch.from_numpy(validation.labels),
            config, accelerator, num_classes, on_estimate=_announce(args, accelerator, train, what),
        )

    result = train_on(train.labels, "probe")
    if result.diverged_heads and len(result.diverged_heads) < len(config.heads):
        logger.warning("probe head(s) (lr, weight decay) %s: the loss went NaN or infinite; not chosen",
                       ", ".join(str(config.heads[head]) for head in result.diverged_heads))
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (validation.labels, result.predictions), 1)
    heads = [
        {"lr": lr, "weight_decay": wd, "accuracy": accuracy}
        for (lr, wd), accuracy in zip(config.heads, result.history[-1]["validation_accuracy"])
    ]
    majority = int(np.bincount(train.labels, minlength=num_classes).argmax())
    controls = {"majority_class": {"class": names[majority], "value": float(np.mean(validation.labels == majority))},
                "shuffled_targets": None}
    if args.shuffled_control:
        shuffled = train_on(train.labels[_shuffled(args, train)], "shuffled-target control")
        controls["shuffled_targets"] = {"value": shuffled.accuracy, "best_head": shuffled.best_head, "seed": args.seed}
    if accelerator.is_main_process:
        plot_classification_curves(result.history, heads, out / "training_curves.png")
        plot_confusion_matrix(confusion, names, out / "confusion_matrix.png")
    missing = _classes_without_validation(names, validation)
    return {
        "metric": "top1_accuracy",
        "value": result.accuracy,
        "controls": controls,
        "best_head": result.best_head,
        "selection": result.selection,
        "heads": heads,
        "label_names": names,
        "confusion_matrix": confusion.tolist(),
        "warnings": [f"no validation sample of class(es) {', '.join(map(repr, missing))}: their confusion rows are all "
                     "zero and the accuracy says nothing of them (another --seed, a larger --validation-fraction, or "
                     "more clips of them)"] if missing else [],
        "history": result.history,
        "probe": result.config,
    }


def _resample_chunks(steps: int, *splits: ExtractedSplit) -> dict:
    """Every split's action chunks at `steps` steps (see `chunks`); what was done, for results.json."""
    resampled = {}
    for name, split in zip(("train", "validation"), splits):
        resampled[name] = sum(len(action) != steps for action in split.actions)
        split.actions = [resample_chunk(action, steps) for action in split.actions]
    return {"steps": steps, "resampled_rows": resampled}


def _regress(args, accelerator, train: ExtractedSplit, validation: ExtractedSplit, out: Path) -> dict:
    config = RegressionConfig(
        hidden_dim=args.hidden_dim or WIDTH["regression"],
        residual_blocks=args.residual_blocks,
        lr=_single(args.lr, 1e-4, "--lr"),
        weight_decay=_single(args.weight_decay, 1e-4, "--weight-decay"),
        epochs=args.epochs,
        batch_size=args.batch_size,
        warmup_fraction=args.warmup_fraction,
        seed=args.seed,
        selection=args.selection,
    )

    def train_on(rows: np.ndarray, what: str):
        robot_types = [train.robot_types[row] for row in rows] if train.robot_types else None
        return train_regression(
            train.features, [train.actions[row] for row in rows], validation.features, validation.actions,
            config, accelerator, robot_types, validation.robot_types, on_estimate=_announce(args, accelerator, train, what),
        )

    result = train_on(np.arange(len(train)), "probe")
    controls = {"mean_predictor": {"value": result.mean_predictor_mse}, "shuffled_targets": None}
    if args.shuffled_control:  # each row keeps its robot type with its action, so the normalization is the same
        shuffled = train_on(_shuffled(args, train), "shuffled-target control")
        controls["shuffled_targets"] = {"value": shuffled.mse, "best_epoch": shuffled.best_epoch, "seed": args.seed}
    if accelerator.is_main_process:
        plot_regression_curves(result.history, out / "training_curves.png")
        plot_per_dimension_error(result.per_dimension_mse, out / "per_dimension_error.png")
    return {
        "metric": "normalized_mse",
        "value": result.mse,
        "controls": controls,
        "best_epoch": result.best_epoch,
        "selection": result.selection,
        "per_dimension_mse": result.per_dimension_mse,
        "per_robot_mse": result.per_robot_mse,
        "normalization": result.normalization,
        "warnings": [],
        "history": result.history,
        "probe": result.config,
    }


def _refuse_nonfinite(results: dict) -> None:
    """A NaN or infinite score is no result: refused before anything is written, naming the probe or the control."""
    scores = {f"the probe's {results['metric']}": results["value"]}
    scores |= {f"the {name.replace('_', ' ')} control's {results['metric']}": control["value"]
               for name, control in results["controls"].items() if control is not None}
    for what, value in scores.items():
        if not math.isfinite(value):
            raise LaryError(f"{what} is {value}: its training diverged (the loss went NaN or infinite); a lower --lr "
                            "may train it")


def evaluate(args: EvaluateConfig) -> dict:
    """Read both splits (features per batch), train the probe, write `results.json` and plots under `args.out`;
    returns the results."""
    accelerator = processes.accelerator(cpu=args.cpu)
    set_seed(args.seed)
    target = "label" if args.task == "classification" else args.target
    split_info = None
    steps = None  # before any work: chunks of one length, or the length to resample them to
    if args.task == "regression":
        folders = [args.data] if args.data is not None else [args.train, args.validation]
        steps = chunk_steps(folders, target, resample=args.action_chunk == "resample")
    with accelerator.local_main_process_first():  # one process per machine writes the feature cache
        if args.data is not None:  # one folder, split by episode or clip
            group = "episode_index" if args.split_by == "episode" else "id"
            whole = load_split(args.data, args.feature, target, args.cache_dir, group=group)
            train, validation, split_info = split_by_groups(whole, args.validation_fraction, args.seed,
                                                            stratify=args.task == "classification")
            split_info["split_by"] = group
        else:
            train = load_split(args.train, args.feature, target, args.cache_dir)
            validation = load_split(args.validation, train.feature_name, target, args.cache_dir)
    if train.manifest.get("model") != validation.manifest.get("model"):
        raise LaryError(
            f"train features come from model {train.manifest.get('model')!r} ({args.train}) "
            f"but validation features from {validation.manifest.get('model')!r} ({args.validation})"
        )
    action_chunk = _resample_chunks(steps, train, validation) if args.action_chunk == "resample" and steps else None
    codebook_size = one_hot_indices(train, validation) if train.feature_name == "action_indices" else None
    check_feature_shapes(train, validation)
    out = args.out
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    task = _classify if args.task == "classification" else _regress
    results = {
        "task": args.task,
        "model": train.manifest.get("model"),
        "model_revision": train.manifest.get("model_revision"),
        "dataset": train.manifest.get("dataset"),
        "config": train.manifest.get("config"),
        "feature": train.feature_name,
        "feature_shape": list(train.features.shape[1:]),
        "codebook_size": codebook_size,
        "splits": {"train": _split_info(train), "validation": _split_info(validation), "split": split_info},
        "num_processes": accelerator.num_processes,
        "seed": args.seed,
        **({"action_chunk": action_chunk} if args.task == "regression" else {}),
        **task(args, accelerator, train, validation, out),
    }
    _refuse_nonfinite(results)
    if accelerator.is_main_process:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        for warning in results["warnings"]:
            logger.warning("%s", warning)

        def shown(value: float) -> str:
            return f"{100 * value:.2f}%" if results["metric"] == "top1_accuracy" else f"{value:.4f}"

        controls = "; ".join(f"{name.replace('_', ' ')} {shown(control['value'])}"
                             for name, control in results["controls"].items() if control is not None)
        data = " ".join(str(part) for part in (results["dataset"], results["config"]) if part)
        print(f"{results['model']} on {data}: {results['metric']} = {shown(results['value'])} (controls: {controls})")
        logger.info("wrote %s", out / "results.json")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results
