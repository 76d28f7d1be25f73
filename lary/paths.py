"""Paths that come from data (a dataset's path templates, the file names it lists or holds) stay inside the folder
they belong to: neither `..`, an absolute path nor a symlink leads out of it, whether the path is read or written."""

from __future__ import annotations

import os
from pathlib import Path

from lary.errors import LaryError, path_text


def _allowed(root: Path) -> tuple[Path, ...]:
    """Where the resolved files of `root` may be: `root` itself and, for a Hub cache snapshot
    (`<repo>/snapshots/<commit>`, whose files are symlinks to `<repo>/blobs/`), its repository's blobs."""
    base = root.resolve()
    blobs = base.parent.parent / "blobs"
    return (base, blobs) if base.parent.name == "snapshots" and blobs.is_dir() else (base,)


def inside(root: str | Path, relative: str | Path, what: str) -> Path:
    """`root / relative`, normalised (`a/./b` is `a/b`, symlinks kept), after checking that it stays in `root`.

    `what` says where `relative` came from (`".../meta/info.json: data_path"`, `"a file of the dataset"`): a
    `LaryError` names it and the path when `relative` is absolute, climbs out with `..`, or resolves (symlinks
    followed, also those of its folders) to a file outside `root`. The file need not exist (paths to write).
    """
    root, text = Path(root), os.fspath(relative)
    if os.path.isabs(text):
        raise LaryError(f"{what}: {path_text(text)!r} is an absolute path; it must be relative to {path_text(root)}")
    normal = os.path.normpath(text)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise LaryError(f"{what}: {path_text(text)!r} leads out of {path_text(root)}")
    path = root / normal
    target = path.resolve()
    if not any(target.is_relative_to(folder) for folder in _allowed(root)):
        raise LaryError(
            f"{what}: {path_text(text)!r} leads out of {path_text(root)} (through a symlink, to {path_text(target)})"
        )
    return path


def outside(out: str | Path, source: str | Path, what: str) -> None:
    """Refuse an output folder `out` that is `source` or lies inside it, symlinks resolved (also those of `out`'s
    parents, and `out` itself when it is a link to a folder of `source`): writing there would change what is read.
    `what` names the source (`"the dataset"`, `"the image folder"`); the error names both folders."""
    target, folder = Path(out).resolve(), Path(source).resolve()
    if target.is_relative_to(folder):
        shown = "" if target == Path(out).absolute() else f" (it resolves to {path_text(target)})"
        raise LaryError(f"{path_text(out)} is inside {what} {path_text(source)}{shown}: write the output elsewhere")
