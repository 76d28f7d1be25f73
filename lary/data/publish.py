"""`lary publish`: upload a folder written by `lary prepare` to a 🤗 Hub dataset repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import HfApi


def publish(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Create the dataset repo if needed and upload `folder` (shards, stats, card); returns the commit URL."""
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md card: run `lary prepare --out {folder}` first")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="Output folder of `lary prepare`.")
    parser.add_argument("--repo", required=True, help="Hub dataset repository id, e.g. user/LARY.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", help="Branch to upload to (default: main).")


def main(args: argparse.Namespace) -> int:
    print(publish(args.folder, args.repo, args.private, args.revision))
    return 0
