"""The Space builds from its folder alone: `scripts/build_space.py` puts the lary package into a copy of `space/`,
its `requirements.txt` installs into a fresh virtual environment, and `python app.py` in that folder serves the page
(on the address and port gradio reads from the environment, as on the Hub), with nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.envs  # builds other environments from the package index: `pytest -m envs`

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE_FILES = ("README.md", "app.py", "requirements.txt")


@pytest.fixture(scope="module")
def built_space(tmp_path_factory) -> Path:
    space = tmp_path_factory.mktemp("space")
    for name in SPACE_FILES:
        shutil.copy(REPO_ROOT / "space" / name, space / name)
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_space.py"), "--space", str(space)], check=True,
                   capture_output=True, timeout=300)
    return space


def test_the_built_space_holds_the_package_and_the_committed_requirements(built_space):
    assert (built_space / "lary" / "app" / "page.py").is_file()
    assert (built_space / "lary_hub" / "examples" / "tiny-lapa-dinov3" / "model.safetensors").is_file()
    # the committed requirements.txt is what the script writes now (it follows pyproject.toml)
    assert (built_space / "requirements.txt").read_text() == (REPO_ROOT / "space" / "requirements.txt").read_text()
    requirements = [line for line in (built_space / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert any(line.startswith("gradio") for line in requirements) and not any("lary" in line for line in requirements)


@pytest.mark.slow
def test_the_space_installs_into_a_fresh_venv_and_serves(built_space, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    # torch first, the CPU build on this machine's disk: `torch>=2.4` alone would let pip fetch a CUDA build
    subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True, timeout=600)
    subprocess.run([*pip, "-r", "requirements.txt"], cwd=built_space, check=True, capture_output=True, timeout=600)

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", LARY_MODEL="lary_hub/examples/tiny-lapa-dinov3")  # the model in the folder
    log = tmp_path / "app.log"
    with open(log, "w") as output:
        app = subprocess.Popen([str(python), "app.py"], cwd=built_space, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        page = _get(f"http://127.0.0.1:{port}/", app, log)
    finally:
        app.terminate()
        app.wait(timeout=60)
    assert "LAPA-DINOv3 latent actions" in page
    lary_file = subprocess.run([str(python), "-c", "import lary; print(lary.__file__)"], cwd=built_space,
                               capture_output=True, text=True, check=True).stdout.strip()
    assert Path(lary_file).is_relative_to(built_space)  # the folder's copy, not an installed lary


def _get(url: str, app: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    """The page at `url` once the app listens (until it exits, or `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise AssertionError(f"app.py exited with {app.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"app.py did not serve {url} within {timeout} s:\n{log.read_text()[-3000:]}")
