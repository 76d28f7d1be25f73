"""Python environments beside the test suite's own: the transformers, datasets and hub versions our users pin.

`python_with(["transformers==4.51.3", ...])` is the Python of a virtual environment that sees this environment's
packages (the local CPU torch among them; `python_with_torch` pins another) with the given requirements installed over
them, made once from the package index into `$LARY_TEST_ENVS` (default `~/.cache/lary/test-envs`) and reused by later
runs. Without the index it skips with the reason, except in CI, which reaches the index and fails instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.version import Version

INSTALL_TIMEOUT_S = 900


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason)


def python_with(requirements: list[str], system_site_packages: bool = True) -> Path:
    """The Python executable of an environment holding `requirements` (pip's syntax), made once and cached."""
    # a venv made from inside a venv (tests/floor_env.py) sees the interpreter's packages, not the outer venv's
    key = json.dumps({"requirements": sorted(requirements), "system": system_site_packages, "base": sys.base_prefix})
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(os.environ.get("LARY_TEST_ENVS", Path.home() / ".cache" / "lary" / "test-envs")) / name
    python = folder / "bin" / "python"
    done = folder / "lary-env.json"
    if done.is_file():
        return python
    venv.EnvBuilder(system_site_packages=system_site_packages, clear=True, with_pip=True).create(folder)
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                            capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if result.returncode != 0:
        _unavailable(f"could not install {' '.join(requirements)}: {result.stderr.strip()[-400:]}")
    done.write_text(key)
    return python


def python_with_torch(requirements: list[str], version: str) -> Path:
    """`python_with` with torch `version` over this environment's (the package index has CUDA builds only: a few GB),
    checked to be the torch it imports."""
    python = python_with([*requirements, f"torch=={version}"])
    found = run_python(python, "import torch; print(torch.__version__)").stdout.strip()
    assert Version(found.split("+")[0]) == Version(version), f"{python} imports torch {found}, not {version}"
    return python


def run_python(python: Path, code: str, cwd: Path | None = None, env: dict | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """`code` run by `python` (offline, as the suite runs), its output captured; a failure shows its stderr."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run([str(python), "-c", code], cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{python} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result
