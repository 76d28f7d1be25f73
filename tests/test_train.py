"""`lary train`: data sources, the step-indexed sampler, the LAPA schedule, loss reduction, exact resume, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lary import LapaDinov3Processor
from lary.synthetic import make_clip, write_video
from lary.training.data import StepBatchSampler, load_clips
from lary.training.trainer import replacement_due

BACKBONE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_register_tokens": 4, "image_size": 64, "patch_size": 8}
LAQ = {"quant_dim": 4, "codebook_size": 8, "code_seq_len": 4, "spatial_depth": 1, "temporal_depth": 1,
       "decoder_depth": 1, "dim_head": 16, "heads": 2, "initializer_range": 0.2}


def test_replacement_schedule():
    due = [step for step in range(1, 6001) if replacement_due(step)]
    assert due[:10] == list(range(10, 101, 10))
    assert due[9:19] == [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    assert due[-2:] == [4000, 4500] and 5000 not in due


def test_sampler_is_a_function_of_the_step():
    lengths = [8, 5, 12]
    whole = list(StepBatchSampler(lengths, 6, 4, (1, 3), seed=1))
    shards = [list(StepBatchSampler(lengths, 3, 4, (1, 3), seed=1, process_index=r, num_processes=2)) for r in range(2)]
    assert [a + b for a, b in zip(*shards)] == whole
    assert list(StepBatchSampler(lengths, 6, 4, (1, 3), seed=1, start_step=2)) == whole[2:]
    for clip, start, stride in sum(whole, []):
        assert 1 <= stride <= 3 and start + stride < lengths[clip]


def test_load_clips_from_videos_image_folders_and_synthetic(tmp_path):
    (tmp_path / "videos").mkdir()
    write_video(make_clip(0, num_frames=5, size=40, seed=0).frames, tmp_path / "videos" / "a.mkv")
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(make_clip(1, num_frames=3, size=40, seed=1).frames):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    clips = load_clips([str(tmp_path / "videos"), str(folder), "synthetic:2:7"], LapaDinov3Processor(size=32))
    assert [tuple(clip.shape) for clip in clips] == [(5, 3, 32, 32), (3, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32)]
    assert clips[0].dtype == torch.uint8
    with pytest.raises(ValueError, match="synthetic:COUNT"):
        load_clips(["synthetic:x"], LapaDinov3Processor(size=32))
    with pytest.raises(ValueError, match="not a video file"):
        load_clips([str(tmp_path / "missing.mp4")], LapaDinov3Processor(size=32))


def write_tiny_configs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "backbone.json").write_text(json.dumps(BACKBONE))
    (tmp_path / "laq.json").write_text(json.dumps(LAQ))
    return tmp_path / "backbone.json", tmp_path / "laq.json"


def _train(tmp_path: Path, out: str, *extra: str, launcher: tuple[str, ...] = (sys.executable,)) -> Path:
    backbone, laq = write_tiny_configs(tmp_path)
    command = [*launcher, "-m", "lary", "train", "--backbone", str(backbone), "--model-config", str(laq),
               "--data", "synthetic:32:1", "--out", str(tmp_path / out), "--batch-size", "8", "--cpu",
               "--stride-range", "1,2", "--cache-features", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_short_run_halves_the_loss_and_writes_a_loadable_model(tmp_path):
    out = _train(tmp_path, "run", "--steps", "200", "--lr", "1e-3", "--log-every", "1", "--save-every", "200")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in records[:5]]), np.mean([r["loss"] for r in records[-10:]])
    assert last <= first / 2, (first, last)
    assert (out / "training_curves.png").stat().st_size > 0
    assert "lary train" in (out / "README.md").read_text()

    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(out), trust_remote_code=True).config.codebook_size == 8
    weights = _weights(out)
    fresh = _weights(out / "checkpoints" / "step-0000200" / "model")
    assert all(torch.equal(weights[k], fresh[k]) for k in weights)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    straight = _train(tmp_path, "straight", "--steps", "30", "--save-every", "15")
    _train(tmp_path, "resumed", "--steps", "15", "--save-every", "15")
    resumed = _train(tmp_path, "resumed", "--steps", "30", "--save-every", "15", "--resume")
    expected, actual = _weights(straight), _weights(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [10, 15, 20, 30]


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path):
    out = _train(tmp_path, "ddp", "--steps", "12", "--save-every", "12", "--log-every", "4",
                 launcher=(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no"))
    assert (out / "model.safetensors").exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 3


CACHE_SCRIPT = """
import sys, torch
from accelerate import Accelerator
from lary import LapaDinov3Processor
from lary.training.data import load_clips
from lary.training.features_cache import compute_features
from lary.training.trainer import build_model
accelerator = Accelerator(cpu=True)
torch.manual_seed(0)
model = build_model(sys.argv[1], sys.argv[2])
processor = LapaDinov3Processor(size=64)
features = compute_features(model, processor, load_clips(["synthetic:5:2"], processor), accelerator, batch_size=3)
if accelerator.is_main_process:
    torch.save(features, sys.argv[3])
"""


@pytest.mark.slow
def test_feature_cache_split_over_two_processes_equals_one(tmp_path):
    backbone, laq = write_tiny_configs(tmp_path)
    script = tmp_path / "cache.py"
    script.write_text(CACHE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    for name, launcher in (("one", (sys.executable,)), ("two", launch)):
        result = subprocess.run([*launcher, str(script), str(backbone), str(laq), str(tmp_path / f"{name}.pt")],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{name}.pt", weights_only=True) for name in ("one", "two"))
    assert len(one) == len(two) == 5
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_bf16_mixed_precision_run(tmp_path):
    out = _train(tmp_path, "bf16", "--steps", "6", "--save-every", "6", "--log-every", "2", "--mixed-precision", "bf16")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) for r in records)
    weights = _weights(out)
    assert {w.dtype for w in weights.values()} == {torch.float32}  # autocast computes in bf16, the weights stay fp32
    assert json.loads((out / "training_args.json").read_text())["mixed_precision"] == "bf16"


# `python -c SPY -m lary train ...`: `lary train`, noting in $CHECKPOINTING_MARKER that checkpointing was enabled
SPY = """
import os, runpy, sys
from lary_hub.modeling_lapa_dinov3 import LapaDinov3Model
enable = LapaDinov3Model.activation_checkpointing_enable
def spy(self, *args, **kwargs):
    open(os.environ["CHECKPOINTING_MARKER"], "w").close()
    return enable(self, *args, **kwargs)
LapaDinov3Model.activation_checkpointing_enable = spy
sys.argv = ["lary", *sys.argv[3:]]
runpy.run_module("lary", run_name="__main__")
"""


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_model(tmp_path, monkeypatch):
    marker = tmp_path / "enabled"
    monkeypatch.setenv("CHECKPOINTING_MARKER", str(marker))
    args = ("--steps", "6", "--save-every", "6", "--log-every", "2")
    plain = _train(tmp_path, "plain", *args, launcher=(sys.executable, "-c", SPY))
    assert not marker.exists()
    checkpointed = _train(tmp_path, "checkpointed", *args, "--gradient-checkpointing",
                          launcher=(sys.executable, "-c", SPY))
    assert marker.exists()
    assert json.loads((checkpointed / "training_args.json").read_text())["gradient_checkpointing"] is True
    expected, actual = _weights(plain), _weights(checkpointed)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)
    assert (plain / "log.jsonl").read_text() == (checkpointed / "log.jsonl").read_text()
