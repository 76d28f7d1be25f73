"""Reading the small JSON config files that commands take."""

from __future__ import annotations

import json
from pathlib import Path

from lary.errors import LaryError


def read_json_object(path: str | Path, what: str) -> dict:
    """The JSON object in `path`; a clear `ValueError` naming `what` and the file otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LaryError(f"cannot read {what} {path}: {error}") from None
    if not isinstance(data, dict):
        raise LaryError(f"{what} {path} must hold a JSON object")
    return data
