"""`lary train`: train a LAPA-DINOv3-style latent action model (one process, or under `accelerate launch`)."""

from __future__ import annotations

import argparse
import shlex
import sys

from lary.training.trainer import TrainingArguments, train


def _stride_range(value: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a,b (two integers), got {value!r}") from None
    return low, high


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True, help="DINOv3 model id or folder (pretrained), or a DINOv3 config JSON (random init)")
    parser.add_argument("--data", nargs="+", required=True, help="videos, image folders, folders of clips, saved `datasets` folders (a `frames` column), dataset:PATH_OR_ID:CONFIG[:SPLIT] (a LARY/`datasets` config: `frames` clips or `source_image`/`target_image` pairs; split train by default), or synthetic:COUNT[:SEED]")
    parser.add_argument("--out", required=True, help="output folder: final model, checkpoints/, log.jsonl, training_curves.png")
    parser.add_argument("--config", help="JSON of LapaDinov3Config fields other than backbone_config")
    parser.add_argument("--image-size", type=int, help="backbone input size (default: the backbone config's image_size)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--lr-scheduler", default="constant", help="a transformers scheduler name (constant, cosine, linear, ...)")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--stride-range", type=_stride_range, default=(1, 1), help="a,b: frame stride drawn per sample")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--cache-features", action="store_true", help="compute the frozen backbone's features once")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute the quantizer's activations in the backward pass: less memory, more time")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (and at the end)")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--cpu", action="store_true", help="train on CPU even if an accelerator is present")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")


def main(args: argparse.Namespace) -> int:
    train(TrainingArguments(**vars(args), command="lary " + shlex.join(sys.argv[1:])))
    return 0
