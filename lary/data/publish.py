"""`lary publish`: upload a folder written by `lary prepare` to a 🤗 Hub dataset repository."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from lary.configs.data import PublishConfig
from lary.errors import LaryError


def publish(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Create the dataset repo if needed and upload `folder` (shards, stats, card); returns the commit URL."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise LaryError(f"{folder} has no README.md card: run `lary prepare --out {folder}` first")
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=folder,
        revision=revision,
        ignore_patterns=["*/.incomplete-*/**"],
        commit_message="Upload LARY prepared with `lary prepare`",
    )
    return str(commit)


def publish_command(config: PublishConfig) -> int:
    print(publish(config.folder, config.repo, config.private, config.revision))
    return 0
