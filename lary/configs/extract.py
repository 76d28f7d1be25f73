"""`lary extract`: what to read, which model, where to write, and how the work is spread."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal

from lary.configs.model import allow_missing_weights_option
from lary.configs.parser import option, positive, require

# torch 2.6's compiler fails where it resumes inside transformers 5's output capturing (NameError: torch); 2.7.1 does
# not, and torch 2.13 (CI's) compiles the model to the eager model's rows.
COMPILE_MIN_TORCH = (2, 7)


def torch_release() -> tuple[int, int]:
    """(major, minor) of the installed torch, read without importing it."""
    major, minor = re.match(r"(\d+)\.(\d+)", version("torch")).groups()
    return int(major), int(minor)


@dataclass(kw_only=True)
class ExtractConfig:
    model: str | None = option("LAPA-DINOv3 folder or Hub id: writes latent actions.", default=None, one_of="model", required=True)
    encoder: str | None = option("Any 🤗 vision model folder or Hub id: writes its patch `features` (a LARY baseline).", default=None, one_of="model")
    dataset: str | None = option("Folder or Hub id of a 🤗 dataset with frame pairs or clips (e.g. `lary prepare` output).", default=None, one_of="source", required=True, group="input")
    videos: list[str] | None = option("Video files (globs allowed, `**` recurses): one row per frame pair.", default=None, one_of="source", metavar="FILE_OR_GLOB", group="input")
    images: list[str] | None = option("Folders of consecutive image files, one clip each: one row per frame pair.", default=None, one_of="source", metavar="DIR", group="input")
    lerobot: str | None = option("LeRobot dataset (v3.0 or v2.1), a folder or Hub id: one row per frame pair of each episode.", default=None, one_of="source", metavar="PATH_OR_ID", group="input")
    dataset_config: str | None = option("Config of --dataset, e.g. `libero`.", default=None, group="input")
    split: str = option("Split of --dataset.", default="validation", group="input")
    revision: str | None = option("Hub revision (branch, tag or commit) of --dataset or --lerobot.", default=None, group="input")
    camera: str | None = option("Camera of --lerobot, e.g. `observation.images.top` (default: its only camera).", default=None, group="input")
    episodes: list[int] | None = option("Episode indices of --lerobot (default: all).", default=None, group="input")
    labels: Path | None = option(
        "CSV or Parquet of labels for --videos/--images: `id,label` (a class per clip) or `id,frame_index,action...` "
        "(an action row per frame); ids as `lary extract` writes them.", default=None, group="input",
    )
    limit: int | None = option("Only the first N samples (dataset rows, files, folders, episodes).", default=None, group="input")
    stride: int = option("Latent actions of frames (t, t + stride).", default=1, one_of="stride")
    stride_seconds: float | None = option(
        "Latent actions of frames (t, t + k), k = round(S x fps) frames of each video or LeRobot dataset (instead of "
        "--stride; recorded per sample in manifest.json).", default=None, one_of="stride", metavar="S",
    )
    out: Path = option("Output folder: Parquet shards, manifest.json, errors.jsonl.", short="-o")
    allow_missing_weights: bool = allow_missing_weights_option()
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = option(
        "Model weights dtype (float32 on a GPU computes without TF32, as on the CPU; auto: bfloat16 on a GPU that has "
        "it or a CPU with native bfloat16, AVX512-BF16/AMX/Arm BF16, else float32; see docs/extract.md).", default="float32"
    )
    batch_size: int = option("Frame pairs per forward pass.", default=32, same_run=False, group="performance")
    shard_size: int | None = option(
        "Rows per output shard, the unit of resuming (default: equal shards of at most 1000 rows, as many as a multiple "
        "of processes x decoding workers; a rerun keeps the first run's).", default=None, same_run=False, group="performance",
    )
    num_workers: int | None = option(
        "DataLoader processes that decode and resize frames (default: half the process's cores, at most 4; on a GPU all "
        "but one, at most 8; 0 decodes in the main process).",
        default=None, same_run=False, group="performance",
    )
    threads: int | None = option(
        "Torch threads per process (default: the process's cores, cores / processes, minus its workers).",
        default=None, same_run=False, group="performance",
    )
    compile: bool = option(
        "torch.compile the LAPA-DINOv3 model: compiled at the first batch and once more when batch shapes change, then "
        "faster on a GPU (the compiled model alone: 1.44x in bf16 on an H200).",
        default=False, same_run=False, group="performance",
    )
    device_map: Literal["auto"] | None = option("Spread one big model over all GPUs (one process).", default=None, same_run=False, group="performance")
    cpu: bool = option("Run on CPU, also under `accelerate launch`.", default=False, same_run=False, group="performance")

    def validate(self) -> None:
        positive(self, "stride", "batch_size", "shard_size", "limit", "threads")
        require(self.num_workers is None or self.num_workers >= 0, f"--num-workers must be >= 0; got {self.num_workers}")
        require(self.dataset_config is None or self.dataset is not None, "--dataset-config goes with --dataset")
        require(self.camera is None and self.episodes is None or self.lerobot is not None, "--camera and --episodes go with --lerobot")
        require(self.labels is None or bool(self.videos or self.images), "--labels goes with --videos or --images")
        require(self.revision is None or bool(self.dataset or self.lerobot), "--revision goes with --dataset or --lerobot")
        require(self.stride_seconds is None or self.stride == 1, "--stride-seconds and --stride exclude each other")
        require(self.stride_seconds is None or self.stride_seconds > 0, f"--stride-seconds must be > 0; got {self.stride_seconds}")
        require(self.stride_seconds is None or bool(self.videos or self.lerobot),
                "--stride-seconds needs a frame rate: it goes with --videos or --lerobot (image folders and dataset rows "
                "have none: give --stride in frames)")
        require(not self.compile or self.model is not None, "--compile goes with --model (LAPA-DINOv3)")
        require(not self.compile or torch_release() >= COMPILE_MIN_TORCH,
                f"--compile needs torch >= 2.7; this is torch {version('torch')}, whose compiler fails inside "
                "transformers' output capturing: run without --compile, or upgrade torch")
