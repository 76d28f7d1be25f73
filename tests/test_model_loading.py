"""Loading a model in every `lary` command: weights that do not fit, unreadable weights files and impossible config
values are refused on one line naming the key, file or value; `--allow-missing-weights` is the explicit way past."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_path
from safetensors.torch import load_file, save_file
from test_model_behaviour import TINY
from transformers import AutoModel, DINOv3ViTConfig, DINOv3ViTModel

from lary import LapaDinov3Config, LapaDinov3Model, cli
from lary.errors import LaryError
from lary.hub import EMBEDDED_MODEL, load_pretrained
from lary.synthetic import make_clip, write_video
from lary_hub.configuration_lapa_dinov3 import BACKBONE_RANGES, RANGES

REFUSED = {
    "missing": r"missing weights quantizer\.codebook\. Its outputs would be wrong; pass --allow-missing-weights",
    "unexpected": r"unexpected weights extra\.weight\. Its outputs would be wrong; pass --allow-missing-weights",
    "mis-shaped": r"mis-shaped weights quantizer\.codebook \(checkpoint \(3, 4\), model \(8, 4\)\); its weights do "
                  r"not fit its config\.json",
    "truncated": r"model\.safetensors is truncated or not a safetensors file",
    "out of range": r"config\.json: spatial_depth=10000000 is out of range: it must be in \[1, 256\]",
}


def _damage(folder: Path, case: str) -> None:
    """The embedded model's copy in `folder`, with one thing wrong."""
    weights, config = folder / "model.safetensors", folder / "config.json"
    state = load_file(weights)
    if case == "missing":
        del state["quantizer.codebook"]
    elif case == "unexpected":
        state["extra.weight"] = torch.zeros(2)
    elif case == "mis-shaped":
        state["quantizer.codebook"] = torch.zeros(3, 4)
    save_file(state, weights, metadata={"format": "pt"})
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif case == "out of range":
        config.write_text(json.dumps({**json.loads(config.read_text()), "spatial_depth": 10_000_000}))


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for case in REFUSED:
        folders[case] = Path(shutil.copytree(EMBEDDED_MODEL, tmp_path_factory.mktemp("broken") / case.replace(" ", "_")))
        _damage(folders[case], case)
    return folders


@pytest.mark.parametrize("case", REFUSED)
def test_a_model_that_does_not_fit_is_refused_naming_the_key_or_file(broken, case, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(LaryError, match=REFUSED[case]) as error:
        load_pretrained(AutoModel, broken[case], "--model")
    assert "\n" not in str(error.value) and str(error.value).startswith(f"--model {broken[case]}: ")
    assert "LOAD REPORT" not in caplog.text  # transformers' table is replaced by the one line


def test_allow_missing_weights_loads_it_and_says_which(broken, caplog):
    with caplog.at_level(logging.WARNING, logger="lary.hub"):
        model = load_pretrained(AutoModel, broken["missing"], "--model", allow_missing_weights=True)
    assert isinstance(model, LapaDinov3Model)
    assert "missing weights quantizer.codebook (--allow-missing-weights)" in caplog.text
    with pytest.raises(LaryError, match=REFUSED["mis-shaped"]):  # no flag makes a mis-shaped weight fit
        load_pretrained(AutoModel, broken["mis-shaped"], "--model", allow_missing_weights=True)


def test_the_model_commands_refuse_it(broken, tmp_path):
    """extract, app and demo load `--model` through `lary.hub.load_pretrained` (the app before Gradio starts)."""
    video = write_video(make_clip(0, num_frames=3, size=64).frames, tmp_path / "clip.mp4")
    commands = [
        ["extract", "--videos", str(video), "--out", str(tmp_path / "features"), "--num-workers", "0"],
        ["app", "--port", "1"],
        ["demo", "--frames", "3", "--out", str(tmp_path / "demo")],
    ]
    for command in commands:
        with pytest.raises(LaryError, match=REFUSED["missing"]):
            cli.main([*command, "--model", str(broken["missing"])])
    assert not (tmp_path / "features").exists() and not (tmp_path / "demo").exists()


@pytest.fixture(scope="module")
def backbone_missing_a_weight(tmp_path_factory) -> Path:
    """A DINOv3 folder (the golden model's backbone shape) whose weights lack the final layer norm's weight."""
    config = DINOv3ViTConfig(**json.loads(shared_path("golden", "lapa_dinov3_tiny", "backbone_config.json").read_text()))
    folder = tmp_path_factory.mktemp("dinov3")
    DINOv3ViTModel(config).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    del state["norm.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_train_and_convert_refuse_a_backbone_with_a_missing_weight(backbone_missing_a_weight, golden_dir, tmp_path):
    reference = torch.load(golden_dir / "laq_dinov3.pt", weights_only=True)
    state = reference["model"] if "model" in reference else reference
    without_backbone = tmp_path / "laq_without_backbone.pt"
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("dino_tokenizer.")}}, without_backbone)
    commands = [
        ["train", "--data", "synthetic:2", "--steps", "1", "--cpu", "--out", str(tmp_path / "trained")],
        ["convert", str(without_backbone), "--laq-config", str(golden_dir / "laq_config.json"),
         "--out", str(tmp_path / "converted")],
    ]
    for command in commands:
        with pytest.raises(LaryError, match=r"--backbone \S+: missing weights norm\.weight\. Its outputs would be wrong"):
            cli.main([*command, "--backbone", str(backbone_missing_a_weight)])
    converted = tmp_path / "converted_anyway"
    cli.main([*commands[1][:-1], str(converted), "--backbone", str(backbone_missing_a_weight), "--allow-missing-weights"])
    assert (converted / "model.safetensors").is_file()


def test_lary_ends_in_one_line_and_exit_code_2(broken):
    result = subprocess.run([sys.executable, "-m", "lary", "demo", "--model", str(broken["missing"])],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(errors) == 1 and errors[0].startswith(f"lary demo: error: --model {broken['missing']}: missing weights")


def test_every_config_value_out_of_range_is_named_when_the_config_is_built():
    """Checked by `@strict` validation in the config's constructor, so a value out of range never reaches the model's
    allocation (10^7 layers) or a torch shape check (`Expected cond to be True`)."""
    for name, (low, high) in RANGES.items():
        for value in (low - 1, high * 2):
            value = type(getattr(LapaDinov3Config(**TINY), name))(value)
            with pytest.raises(Exception, match=rf"{name}={value!r} is out of range: it must be in \[{low}, {high}\]"):
                LapaDinov3Config(**{**TINY, name: value})
    for name, (low, high) in BACKBONE_RANGES.items():
        with pytest.raises(Exception, match=rf"backbone_config\.{name}=-1 is out of range: it must be in \[{low}, {high}\]"):
            LapaDinov3Config(**{**TINY, "backbone_config": {**TINY["backbone_config"], name: -1}})
    with pytest.raises(Exception, match=r"backbone_config\.hidden_size=32 is not a multiple of backbone_config\.num_attention_heads=3"):
        LapaDinov3Config(**{**TINY, "backbone_config": {**TINY["backbone_config"], "num_attention_heads": 3}})
    with pytest.raises(Exception, match=r"attention_scale=nan is out of range"):
        LapaDinov3Config(**{**TINY, "attention_scale": float("nan")})


def test_train_names_a_model_config_value_out_of_range(tmp_path):
    model_config = tmp_path / "laq.json"
    model_config.write_text(json.dumps({"spatial_depth": -1}))
    backbone = tmp_path / "backbone.json"
    backbone.write_text(json.dumps(TINY["backbone_config"]))
    with pytest.raises(LaryError, match=rf"^{backbone}, {model_config}: spatial_depth=-1 is out of range: it must be in \[1, 256\]$"):
        cli.main(["train", "--backbone", str(backbone), "--model-config", str(model_config), "--data", "synthetic:2",
                  "--cpu", "--out", str(tmp_path / "trained")])


def test_sizes_that_multiply_into_an_impossible_model_are_refused_when_the_config_is_built():
    """Every size within its range, yet 10^13 parameters: refused by the estimate, before anything is allocated; the
    estimate is the released model's real count within 1%."""
    from lary_hub.configuration_lapa_dinov3 import MAX_PARAMETERS

    huge = {"hidden_size": 65536, "num_attention_heads": 64, "num_hidden_layers": 256, "intermediate_size": 262144}
    with pytest.raises(Exception, match=r"these sizes make about 1\.36e\+13 parameters, more than 2e\+10 .*"
                                        r"backbone_config\.hidden_size=65536, intermediate_size=262144, num_hidden_layers=256"):
        LapaDinov3Config(backbone_config=huge)
    released = LapaDinov3Config()
    with torch.device("meta"):
        count = sum(parameter.numel() for parameter in LapaDinov3Model(released).parameters())
    assert abs(released.parameter_estimate() / count - 1) < 0.01 and count < MAX_PARAMETERS / 40
