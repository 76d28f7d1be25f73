"""Names of models and datasets on the Hub or on disk."""

from __future__ import annotations

from pathlib import Path

from lary.errors import LaryError


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a local path: absolute, `./`, `../`, `~`, or more than one `/` (a Hub id is
    `name` or `owner/name`)."""
    return name.startswith((".", "~", "/")) or "\\" in name or name.count("/") > 1


def check_model_name(name: str, flag: str) -> None:
    """A folder that does not exist is named as such (rather than as a malformed Hub id)."""
    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise LaryError(f"{flag} {name}: no such folder")
