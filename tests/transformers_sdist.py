"""The `tests/` folder of the installed transformers' source distribution (sdist): its common model tests.

The installed transformers has no tests. `python tests/transformers_sdist.py` downloads the sdist of the installed
version from the package index once (`pip download --no-binary`, a few seconds) into `$LARY_CACHE` (default
`~/.cache/lary`), unpacks its `tests/` folder there and prints the folder; `.ci/run` does it before the suite, so the
suite itself never downloads. `TRANSFORMERS_TESTS` names another such folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import transformers


def tests_folder() -> Path:
    """Where the installed transformers' sdist `tests/` folder is, or will be once fetched."""
    if os.environ.get("TRANSFORMERS_TESTS"):
        return Path(os.environ["TRANSFORMERS_TESTS"])
    version = transformers.__version__
    cache = Path(os.environ.get("LARY_CACHE", Path.home() / ".cache" / "lary"))
    return cache / f"transformers-sdist-{version}" / f"transformers-{version}" / "tests"


def fetch() -> Path:
    """The `tests/` folder, downloaded and unpacked first if absent; a failed download raises with pip's message."""
    tests = tests_folder()
    if tests.is_dir():
        return tests
    version = transformers.__version__
    folder = tests.parent.parent
    result = subprocess.run([sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary",
                             ":all:", "--no-deps", "-q", "-d", str(folder)],
                            capture_output=True, text=True, timeout=300)
    archive = folder / f"transformers-{version}.tar.gz"
    if result.returncode != 0 or not archive.is_file():
        raise RuntimeError(f"transformers {version}'s sdist could not be downloaded: {result.stderr.strip()[-300:]}")
    with tarfile.open(archive) as sdist:
        members = [m for m in sdist.getmembers() if m.name.startswith(f"transformers-{version}/tests/")]
        sdist.extractall(folder, members=members, filter="data")
    return tests


if __name__ == "__main__":
    print(fetch())
