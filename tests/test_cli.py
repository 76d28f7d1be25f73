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


@pytest.mark.parametrize("command", ["convert", "extract", "evaluate", "export", "leaderboard", "train", "demo", "app", "prepare", "publish"])
def test_every_command_has_help(command):
    result = _lary(command, "--help")
    assert result.returncode == 0 and f"usage: lary {command}" in result.stdout


def test_help_and_argument_errors_import_nothing_heavy():
    for args in (["--help"], ["extract", "--help"], ["extract", "--out", "x"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lary", *args], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
        assert not {"torch", "transformers", "datasets"} & imported, args
    assert "one of the arguments --model --encoder is required" in result.stderr


def test_a_folder_that_does_not_exist_is_named_as_such(tmp_path):
    (tmp_path / "x.mp4").touch()  # an input that exists: the model is what is wrong
    result = _lary("extract", "--model", "/no/such/dir", "--videos", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.strip() == "lary extract: error: --model /no/such/dir: no such folder"
    assert not (tmp_path / "o").exists()  # nothing written before the model and the input have loaded


def test_a_command_leaves_its_process_group_behind_it(monkeypatch, tmp_path):
    """A process under `accelerate launch` that exits with its gloo group alive can abort while the interpreter shuts
    down (a 2-process test did, 2026-11-28): the console destroys the group when the command ends, also on an error."""
    import torch.distributed as dist

    from lary import cli

    def joins_a_group(config):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
        raise cli.LaryError("bad input")

    load, runner = cli._load, cli.COMMANDS["demo"].runner
    monkeypatch.setattr(cli, "_load", lambda target: joins_a_group if target == runner else load(target))
    with pytest.raises(cli.LaryError):
        cli.main(["demo"])
    assert not dist.is_initialized()
