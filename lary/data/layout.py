"""Where each LARY config lives: metadata CSV names, splits, required columns and media roots under DATA_DIR."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lary.errors import LaryError

SPLITS = ("train", "validation", "unseen")

PAIR_COLUMNS = ("src_img", "tgt_img", "action")
CLIP_COLUMNS = ("video_path", "sample_indices", "action")
STATE_COLUMNS = ("dataset", "type", "perspective", "src_img", "src_state", "tgt_img", "tgt_state", "action")
ROBOCOIN_COLUMNS = ("dataset", "robot_type", "perspective", "src_img", "tgt_img", "action")
AGIBOT_COLUMNS = ("dataset", "task_id", "episode_id", "perspective", "robot_type", "src_img", "tgt_img", "action")


@dataclass(frozen=True)
class ConfigLayout:
    """One LARY config.

    Args:
        name: config name, e.g. `"calvin"`.
        kind: `"pair"` (image-pair classification), `"clip"` (video clip classification) or `"regression"`.
        csv_names: split -> metadata CSV file name.
        columns: the columns each CSV must have.
        media_root: folder under DATA_DIR that the CSV paths are relative to.
        split_media_dirs: split -> sub-folder of `media_root`, for configs whose splits live apart (CALVIN).
        stride: rows per action chunk (regression).
        dof: action dimensions, or None where it varies by robot (RoboCOIN).
        metadata_columns: CSV columns kept as string features (regression).
    """

    name: str
    kind: str
    csv_names: dict[str, str]
    columns: tuple[str, ...]
    media_root: str
    split_media_dirs: dict[str, str] = field(default_factory=dict)
    stride: int | None = None
    dof: int | None = None
    metadata_columns: tuple[str, ...] = ()

    @property
    def has_states(self) -> bool:
        return "src_state" in self.columns

    @property
    def stats_by_robot(self) -> bool:
        return "robot_type" in self.columns

    def media_dir(self, data_dir: str | Path, split: str) -> Path:
        """The folder that this split's CSV paths are relative to."""
        root = Path(data_dir) / self.media_root
        return root / self.split_media_dirs[split] if split in self.split_media_dirs else root

    def csv_path(self, metadata_dir: str | Path, split: str) -> Path:
        return Path(metadata_dir) / self.csv_names[split]


def _train_val(prefix: str) -> dict[str, str]:
    return {"train": f"{prefix}_metadata_train.csv", "validation": f"{prefix}_metadata_val.csv"}


def _seen_unseen(prefix: str) -> dict[str, str]:
    return {
        "train": f"{prefix}_metadata_seen_train.csv",
        "validation": f"{prefix}_metadata_seen_val.csv",
        "unseen": f"{prefix}_metadata_unseen.csv",
    }


def _vlabench(name: str, stride: int) -> ConfigLayout:
    return ConfigLayout(
        name, "regression", _train_val(name), STATE_COLUMNS, "regression/vlabench",
        stride=stride, dof=7, metadata_columns=("dataset", "type", "perspective"),
    )


LAYOUTS: dict[str, ConfigLayout] = {
    layout.name: layout
    for layout in (
        ConfigLayout("libero", "pair", _train_val("libero"), PAIR_COLUMNS, "classification/LIBERO"),
        ConfigLayout("human_1st", "clip", _train_val("human_1st"), CLIP_COLUMNS, "classification"),
        ConfigLayout("robot_1st", "clip", _train_val("robot_1st"), CLIP_COLUMNS, "classification"),
        ConfigLayout(
            "calvin", "regression", _train_val("calvin"), STATE_COLUMNS, "regression/calvin",
            split_media_dirs={"train": "train_stride5", "validation": "val_stride5"},
            stride=5, dof=7, metadata_columns=("dataset", "type", "perspective"),
        ),
        _vlabench("vlabench", 5),
        _vlabench("vlabench_15", 15),
        _vlabench("vlabench_30", 30),
        ConfigLayout(
            "robocoin", "regression", _seen_unseen("robocoin"), ROBOCOIN_COLUMNS, "regression/robocoin_10",
            stride=10, dof=None, metadata_columns=("dataset", "robot_type", "perspective"),
        ),
        ConfigLayout(
            "agibotbeta", "regression", _seen_unseen("agibotbeta"), AGIBOT_COLUMNS, "regression/agibot_45",
            stride=45, dof=16, metadata_columns=("dataset", "task_id", "episode_id", "perspective", "robot_type"),
        ),
    )
}


def get_layout(name: str) -> ConfigLayout:
    if name not in LAYOUTS:
        raise LaryError(f"Unknown LARY config {name!r}; choose from {', '.join(LAYOUTS)}")
    return LAYOUTS[name]
