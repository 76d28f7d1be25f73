"""The lowest versions `lary` declares, installed: `python tests/floor_env.py` prints the Python of an environment
holding exactly the floor (`>=`) of each dependency in pyproject.toml, over this environment's packages.

torch stays this environment's (the README's CPU build: a floor torch would be a CUDA download); the test tools and
the app's gradio stay too. The environment is made once by `other_envs.python_with` and cached; it holds `lary` itself
(editable, without dependencies) for its `lary` command. `.ci/run` runs the suite again with this Python, its folder
first on PATH.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from other_envs import python_with

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
KEPT = {"torch"}


def floor_requirements(kept: set[str] = KEPT) -> list[str]:
    """`name==floor` for each dependency but `kept`'s (torch); a dependency without a `>=` floor is an error."""
    pins = []
    for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name in kept:
            continue
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(floors) != 1:
            raise ValueError(f"{PYPROJECT}: {line!r} needs exactly one `>=` floor")
        pins.append(f"{requirement.name}=={floors[0]}")
    return pins


def floor_python(kept: set[str] = KEPT) -> Path:
    """The floor environment's Python, with `lary`'s command installed there (`kept=set()`: torch's floor too, a CUDA
    build of a few GB, for tests/test_torch_floors.py)."""
    python = python_with(floor_requirements(kept))
    found = subprocess.run([str(python), "-c", "import importlib.util; print(importlib.util.find_spec('lary').origin)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not (python.parent / "lary").is_file() or Path(found).parents[1] != ROOT:  # or a checkout elsewhere's
        # build isolation: the base environment's setuptools plugins (kernels') do not import at the floors
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "-e",
                        str(ROOT)], check=True, capture_output=True, timeout=600)
    return python


if __name__ == "__main__":
    print(floor_python())
