"""Load one split of a LARY (or any 🤗) dataset, from a local folder or the Hub, without stale cached rows.

`datasets.load_dataset(FOLDER, CONFIG)` caches a local folder under a key made of the folder's name and its card
only, so two folders with the same name and card, or a folder rewritten in place, can give back old rows. For a
local folder, `load_lary_split` resolves the config's `data_files` from the card's `configs:` YAML itself and hands
the files to the `parquet` builder, whose cache key includes every file's path and modification time.
"""

from __future__ import annotations

import glob
from pathlib import Path

import datasets
from datasets.data_files import EmptyDatasetError, get_data_patterns, resolve_pattern, sanitize_patterns
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from lary.errors import LaryError, MediaError
from lary.paths import inside

DEFAULT_CONFIG = "default"


def _card_data(folder: Path) -> DatasetCardData:
    readme = folder / "README.md"
    return DatasetCard.load(readme).data if readme.is_file() else DatasetCardData()


def _pick_config(folder: Path, configs: list[dict], config: str | None) -> dict:
    """The card's entry for `config`; without one, the only config or the one marked `default: true`."""
    names = [entry.get("config_name", DEFAULT_CONFIG) for entry in configs]
    if config is None:
        candidates = configs if len(configs) == 1 else [entry for entry in configs if entry.get("default")]
        if len(candidates) != 1:
            raise LaryError(f"{folder}: pick a config, one of {names}")
        return candidates[0]
    if config not in names:
        raise LaryError(f"{folder}: no config {config!r} in README.md; configs: {names}")
    return configs[names.index(config)]


def _resolve(folder: Path, patterns: list[str]) -> list[str]:
    """Files matching `patterns` under `folder`, in order, as `datasets` resolves them: a glob may match nothing,
    a named file must exist."""
    files: list[str] = []
    for pattern in patterns:
        try:
            files += resolve_pattern(pattern, str(folder))
        except FileNotFoundError:
            if not glob.has_magic(pattern):
                raise LaryError(f"{folder}: {pattern} (named in README.md) does not exist") from None
    return list(dict.fromkeys(files))


def _split_files(folder: Path, config: str | None, split: str) -> tuple[list[str], datasets.Features | None]:
    """The Parquet files of `split` and the card's features of the config (None: the files' own schema)."""
    card = _card_data(folder)
    configs = card.to_dict().get("configs")
    if configs:
        entry = _pick_config(folder, configs, config)
        config = entry.get("config_name", DEFAULT_CONFIG)
        if "data_files" not in entry:
            raise LaryError(f"{folder}: config {config!r} in README.md has no data_files")
        patterns = sanitize_patterns(entry["data_files"])
    elif config in (None, DEFAULT_CONFIG):  # no card configs: datasets' file-naming conventions
        try:
            found = get_data_patterns(str(folder))
        except EmptyDatasetError:
            raise LaryError(f"{folder}: no data files (and no `configs:` in README.md naming them)") from None
        config, patterns = DEFAULT_CONFIG, {str(name): value for name, value in found.items()}
    else:
        raise LaryError(f"{folder}: no `configs:` in README.md, so there is no config {config!r}")
    if split not in patterns:
        raise LaryError(f"{folder}: config {config!r} has no split {split!r}; splits: {sorted(patterns)}")
    files = [file for file in _resolve(folder, patterns[split]) if file.endswith(".parquet")]
    if not files:
        raise LaryError(
            f"{folder}: config {config!r}, split {split!r}: no Parquet file matches {patterns[split]}"
        )
    info = DatasetInfosDict.from_dataset_card_data(card).get(config)
    return files, info.features if info is not None else None


def load_lary_split(
    path_or_id: str | Path, config: str | None, split: str, streaming: bool = False, revision: str | None = None
) -> datasets.Dataset | datasets.IterableDataset:
    """One split of a local folder with a `configs:` card (e.g. `lary prepare` output; a folder without one is read
    with datasets' split-naming conventions) or of a Hub dataset (`load_dataset(path, config, split=split)`).

    Local folders load through the `parquet` builder from the files the card names, so the rows are always those
    on disk; features (ClassLabel names, image columns) come from the card's `dataset_info`, else from the files.
    `revision` (a Hub branch, tag or commit) applies to Hub ids.
    """
    folder = Path(path_or_id)
    if not folder.is_dir():
        return datasets.load_dataset(str(path_or_id), config, split=split, streaming=streaming, revision=revision)
    files, features = _split_files(folder, config, split)
    return datasets.load_dataset(
        "parquet", data_files={split: files}, split=split, features=features, streaming=streaming
    )


def dataset_image(value: dict | None, folder: Path | None, where: str) -> bytes | Path | None:
    """What to read for a 🤗 `datasets` Image value (`{"bytes", "path"}`) of a dataset: its bytes, else its `path`,
    which must lie inside the dataset's local `folder` (`lary.paths.inside`: relative to it, never to the working
    directory; an absolute path, `..` or a symlink out of it is a `MediaError` naming the path). A Hub dataset
    (`folder` None) must hold its images' bytes: a path there names a file of another machine, or anywhere."""
    if value is None or value.get("bytes") is not None or value.get("path") is None:
        return None if value is None else value.get("bytes")
    if folder is None:
        raise MediaError(where, f"the image holds no bytes, only the path {value['path']!r}, which is not read (the "
                                "dataset is not a local folder)")
    try:
        return inside(folder, value["path"], "an image path of the dataset")
    except LaryError as error:
        raise MediaError(where, str(error)) from None
