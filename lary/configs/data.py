"""`lary prepare` and `lary publish`: the LARY benchmark as 🤗 datasets configs (Parquet and a card), and their upload."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lary.configs.parser import option, positive

DEFAULT_MAX_SHARD_SIZE = "500MB"


def comma_list(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


@dataclass(kw_only=True)
class PrepareConfig:
    data_dir: Path = option("LARYBench DATA_DIR (classification/, regression/).")
    metadata_dir: Path = option("Folder of the LARY metadata CSVs.")
    out: Path = option("Output folder: Parquet shards per config and a README card.", short="-o")
    configs: list[str] | None = option("Comma-separated subset of the LARY configs (default: all).", default=None, parse=comma_list, metavar="A,B")
    num_proc: int = option("Processes that read and decode media.", default=1)
    skip_missing: bool = option("Leave out rows with missing or unreadable media (listed in the card).", default=False)
    max_shard_size: str = option("Shard size, e.g. 500MB.", default=DEFAULT_MAX_SHARD_SIZE)

    def validate(self) -> None:
        positive(self, "num_proc")


@dataclass(kw_only=True)
class PublishConfig:
    folder: Path = option("Output folder of `lary prepare`.", positional=True)
    repo: str = option("Hub dataset repository id, e.g. user/LARY.")
    private: bool = option("Create the repository as private.", default=False)
    revision: str | None = option("Branch to upload to (default: main).", default=None)
