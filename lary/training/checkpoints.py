"""`lary train`'s checkpoints: written whole or not at all, and resumed from the newest complete one.

A checkpoint `checkpoints/step-NNNNNNN/` holds `state/` (accelerate's `save_state`: model, optimizer, scheduler and
every process's RNG), `model/` (the Hub-ready export) and `trainer_state.json` (the step, the codebook usage counts and
the size of every file). It is written as `step-NNNNNNN.partial` and renamed when complete (a rename is atomic), so a
run killed while saving leaves the previous checkpoint the newest. `--resume` checks each checkpoint, newest first, and
takes the first complete one, saying which it skipped and why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors import safe_open

from lary import LapaDinov3Model
from lary.errors import LaryError
from lary.hub import export

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
PARTIAL = ".partial"
NAME = re.compile(r"step-(\d{7})(\.partial)?")


def folder(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:07d}"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save(accelerator: Accelerator, model: LapaDinov3Model, out: Path, step: int) -> None:
    """Checkpoint `step` (every process calls it): written as `step-N.partial`, each file flushed to disk, then renamed.
    A `step-N` already there (a damaged one that `--resume` skipped) is moved aside to `step-N.damaged`, not deleted."""
    final = folder(out, step)
    partial = final.with_name(final.name + PARTIAL)
    if accelerator.is_main_process and partial.exists():  # a save of ours that was killed
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial / "state"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export(model, partial / "model")
        files = sorted(path for path in partial.rglob("*") if path.is_file())
        for path in files:
            _fsync(path)
        state = {"step": step, "code_usage": model.quantizer.code_usage.tolist(),
                 "files": {path.relative_to(partial).as_posix(): path.stat().st_size for path in files}}
        (partial / STATE_FILE).write_text(json.dumps(state))
        _fsync(partial / STATE_FILE)
        if final.exists():
            aside = final.with_name(final.name + ".damaged")
            number = 1
            while aside.exists():
                number += 1
                aside = final.with_name(f"{final.name}.damaged-{number}")
            final.rename(aside)
            logger.warning("moved the checkpoint that was at %s aside to %s", final, aside.name)
        partial.rename(final)
        if os.name == "posix":  # the rename itself on disk (a folder cannot be opened to flush elsewhere)
            _fsync(final.parent)
    accelerator.wait_for_everyone()


def problem(checkpoint: Path, codebook_size: int) -> str | None:
    """Why `checkpoint` cannot be resumed from (a missing, truncated or unreadable part), or None when it is complete.
    Reads headers and sizes, not the tensors."""
    if checkpoint.name.endswith(PARTIAL):
        return "a save that did not finish"
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"no {STATE_FILE}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{STATE_FILE} is not JSON ({error})"
    usage = state.get("code_usage") if isinstance(state, dict) else None
    if not isinstance(state, dict) or state.get("step") != int(NAME.fullmatch(checkpoint.name)[1]) \
            or not isinstance(usage, list) or len(usage) != codebook_size:
        return f"{STATE_FILE} does not hold this checkpoint's step and {codebook_size} code usage counts"
    # checkpoints from before sizes were recorded: accelerate's files by their names
    files = state.get("files") or {"state/model.safetensors": None, "state/optimizer.bin": None}
    if not isinstance(files, dict):
        return f"{STATE_FILE}'s files is not a table of sizes"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if size is not None and path.stat().st_size != size:
            return f"{name} has {path.stat().st_size:,} bytes, not the {size:,} written"
        if reason := _unreadable(path):
            return f"{name} is {reason}"
    return None


def _unreadable(path: Path) -> str | None:
    """A header check of the formats a checkpoint holds: safetensors, and torch.save's zip archives (`.bin`, `.pkl`)."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt"):
                pass
        elif path.suffix in (".bin", ".pkl"):
            with zipfile.ZipFile(path):
                pass
    except Exception as error:  # safetensors and zipfile raise their own types for damaged files
        return f"unreadable ({type(error).__name__}: {error})"
    return None


def resume(accelerator: Accelerator, model: LapaDinov3Model, out: Path) -> int:
    """Load the newest complete checkpoint into the prepared objects and `model`'s codebook usage; its step, or 0 when
    there is none. Each checkpoint skipped is named on one line with its reason (the main process checks; every process
    takes its choice)."""
    chosen = [None]
    if accelerator.is_main_process:
        candidates = sorted((path for path in (out / "checkpoints").glob("step-*") if NAME.fullmatch(path.name)),
                            key=lambda path: (path.name[:12], path.name.endswith(PARTIAL)), reverse=True)
        for checkpoint in candidates:
            if (reason := problem(checkpoint, model.config.codebook_size)) is None:
                chosen[0] = str(checkpoint)
                break
            logger.warning("--resume: skipped %s: %s", checkpoint, reason)
        if chosen[0] is None:
            logger.warning("--resume: no %scheckpoint in %s; starting from step 0",
                           "complete " if candidates else "", out / "checkpoints")
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen)
    if chosen[0] is None:
        return 0
    checkpoint = Path(chosen[0])
    try:
        accelerator.load_state(str(checkpoint / "state"))
    except Exception as error:  # the checks read headers; a part whose contents are damaged fails here
        raise LaryError(f"--resume: cannot load {checkpoint / 'state'}: {type(error).__name__}: {error}; move that "
                        "checkpoint aside to resume from the one before") from None
    state = json.loads((checkpoint / STATE_FILE).read_text())
    model.quantizer.code_usage.copy_(torch.tensor(state["code_usage"]))
    logger.info("resumed from %s (step %d)", checkpoint, state["step"])
    return int(state["step"])
