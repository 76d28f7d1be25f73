"""`lary train --resume` on damaged checkpoints: each of six damaged newest checkpoints (and a save killed midway) is
skipped with its reason on one line, and training resumes from the one before, exactly; with none complete it says so
and starts from step 0. Checkpoints are written under a temporary name and renamed when whole."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from test_train import _train, _weights
from transformers import get_scheduler

from lary import LapaDinov3Config, LapaDinov3Model
from lary.training import checkpoints

pytestmark = pytest.mark.slow  # two lary train subprocesses: with -m slow in .ci/run's second stage


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real `lary train` of 4 steps, checkpoints at steps 2 and 4."""
    return _train(tmp_path_factory.mktemp("train"), "run", "--steps", "4", "--save-every", "2",
                  data="synthetic:8:1", batch_size=4)


def copy_of(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run / "checkpoints", tmp_path / "out" / "checkpoints")
    return tmp_path / "out"


def prepared(run: Path) -> tuple[Accelerator, LapaDinov3Model]:
    """The objects `lary train` prepares and checkpoints (model, optimizer, scheduler), fresh."""
    model = LapaDinov3Model(LapaDinov3Config.from_pretrained(run))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.99))
    scheduler = get_scheduler("constant", optimizer)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return accelerator, accelerator.unwrap_model(model)


def truncate(path: Path) -> None:
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)


def empty(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def without_sizes(checkpoint: Path) -> None:
    """As checkpoints from before sizes were recorded: then the files' headers are what tells."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    del state["files"]
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))


DAMAGES = {
    "missing model file": (lambda c: (c / "state" / "model.safetensors").unlink(), "state/model.safetensors is missing"),
    "truncated safetensors": (lambda c: truncate(c / "state" / "model.safetensors"),
                              r"state/model.safetensors has [\d,]+ bytes, not the [\d,]+ written"),
    "missing optimizer state": (lambda c: (c / "state" / "optimizer.bin").unlink(), "state/optimizer.bin is missing"),
    "empty folder": (empty, "no trainer_state.json"),
    "damaged json state": (lambda c: (c / "trainer_state.json").write_text('{"step": 4, "code_'),
                           "trainer_state.json is not JSON"),
    "truncated optimizer pickle": (lambda c: truncate(c / "state" / "optimizer.bin"),
                                   r"state/optimizer.bin has [\d,]+ bytes, not the [\d,]+ written"),
    # safetensors 0.4.3 says "MetadataIncompleteBuffer", later ones "incomplete metadata"
    "truncated safetensors, no sizes": (lambda c: (without_sizes(c), truncate(c / "state" / "model.safetensors")),
                                        r"state/model.safetensors is unreadable \(SafetensorError: .*[Ii]ncomplete"),
    "truncated optimizer pickle, no sizes": (lambda c: (without_sizes(c), truncate(c / "state" / "optimizer.bin")),
                                             r"state/optimizer.bin is unreadable \(BadZipFile"),
}


def skip_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("--resume")]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_is_skipped_and_the_one_before_resumed(run, tmp_path, caplog, damage):
    out = copy_of(run, tmp_path)
    newest, before = checkpoints.folder(out, 4), checkpoints.folder(out, 2)
    assert checkpoints.problem(newest, 8) is None
    make, reason = DAMAGES[damage]
    make(newest)
    accelerator, model = prepared(run)
    with caplog.at_level(logging.INFO, logger="lary"):
        assert checkpoints.resume(accelerator, model, out) == 2
    [line] = skip_lines(caplog)
    assert line.startswith(f"--resume: skipped {newest}: ")
    assert re.search(reason, line), line
    assert f"resumed from {before} (step 2)" in caplog.text
    expected = load_file(before / "state" / "model.safetensors")
    actual = model.state_dict()
    assert all(torch.equal(actual[key], value) for key, value in expected.items())
    assert model.quantizer.code_usage.tolist() == json.loads((before / "trainer_state.json").read_text())["code_usage"]


def test_with_no_complete_checkpoint_it_says_so_once_and_starts_from_step_0(run, tmp_path, caplog):
    out = copy_of(run, tmp_path)
    (checkpoints.folder(out, 4) / "state" / "optimizer.bin").unlink()
    (checkpoints.folder(out, 2) / "trainer_state.json").write_text("[]")
    accelerator, model = prepared(run)
    with caplog.at_level(logging.INFO, logger="lary"):
        assert checkpoints.resume(accelerator, model, out) == 0
    lines = skip_lines(caplog)
    assert len(lines) == 3 and "step-0000004: state/optimizer.bin is missing" in lines[0]
    assert "step-0000002: trainer_state.json does not hold this checkpoint's step" in lines[1]
    assert lines[2] == f"--resume: no complete checkpoint in {out / 'checkpoints'}; starting from step 0"


def test_a_save_killed_midway_leaves_the_checkpoint_before_the_newest(run, tmp_path, caplog, monkeypatch):
    out = copy_of(run, tmp_path)
    accelerator, model = prepared(run)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after accelerate wrote the state, before the model folder

    monkeypatch.setattr(checkpoints, "export", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(accelerator, model, out, 6)
    assert not checkpoints.folder(out, 6).exists()
    assert (out / "checkpoints" / "step-0000006.partial" / "state" / "optimizer.bin").is_file()
    with caplog.at_level(logging.INFO, logger="lary"):
        assert checkpoints.resume(accelerator, model, out) == 4
    assert skip_lines(caplog) == [f"--resume: skipped {out / 'checkpoints' / 'step-0000006.partial'}: a save that did "
                                  "not finish"]
    monkeypatch.undo()
    checkpoints.save(accelerator, model, out, 6)  # the next save of that step replaces the unfinished one
    assert checkpoints.problem(checkpoints.folder(out, 6), 8) is None
    assert not (out / "checkpoints" / "step-0000006.partial").exists()


def test_lary_train_resumes_exactly_from_the_checkpoint_before_a_damaged_one(run, tmp_path):
    """Resuming from step 2 retrains steps 3 and 4 to the weights of the run that was never interrupted; the damaged
    step 4 is moved aside, not deleted."""
    out = copy_of(run, tmp_path)
    for name in ("training_args.json", "log.jsonl"):
        shutil.copy(run / name, out / name)
    truncate(checkpoints.folder(out, 4) / "state" / "optimizer.bin")
    resumed = _train(tmp_path, "out", "--steps", "4", "--save-every", "2", "--resume", data="synthetic:8:1",
                     batch_size=4)
    expected, actual = _weights(run), _weights(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
    assert checkpoints.problem(checkpoints.folder(out, 4), 8) is None
    assert (out / "checkpoints" / "step-0000004.damaged" / "state" / "optimizer.bin").is_file()
