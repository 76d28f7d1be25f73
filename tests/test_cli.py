"""The `lary` console: bad input ends in one line naming the problem (exit code 2), a traceback only on request."""

import os
import subprocess
import sys

import pytest


def _lary(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lary", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "missing"
    result = _lary("evaluate", "--train", str(missing), "--validation", str(missing), "--task", "classification",
                   "--out", str(tmp_path / "results"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"lary evaluate: error: {missing / 'manifest.json'} not found: pass a folder written by `lary extract`"
    ]
    assert not (tmp_path / "results").exists()


def test_traceback_on_request(tmp_path):
    missing = tmp_path / "missing"
    result = _lary("evaluate", "--train", str(missing), "--validation", str(missing), "--task", "classification",
                   "--out", str(tmp_path / "results"), LARY_TRACEBACK="1")
    assert result.returncode == 1 and "Traceback" in result.stderr and "LaryError" in result.stderr


@pytest.mark.parametrize("command", ["convert", "extract", "evaluate", "leaderboard", "train", "demo", "app", "prepare", "publish"])
def test_every_command_has_help(command):
    result = _lary(command, "--help")
    assert result.returncode == 0 and f"usage: lary {command}" in result.stdout
