"""The Hub-ready folder as users load it: fresh offline process, Auto classes, pipeline, dtypes, device maps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from huggingface_hub import ModelCard
from test_model_behaviour import TINY
from transformers import AutoModel, AutoProcessor, pipeline

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor
from lary.configs.train import TrainConfig
from lary.model_card import known_base_model, render_model_card
from lary.training.report import training_provenance

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """`lary convert` of the golden checkpoint, run as a user runs it."""
    golden = shared_path("golden", "lapa_dinov3_tiny")
    out = tmp_path_factory.mktemp("converted")
    subprocess.run(
        ["lary", "convert", str(golden / "laq_dinov3.pt"), "--out", str(out),
         "--laq-config", str(golden / "laq_config.json"), "--backbone-config", str(golden / "backbone_config.json")],
        check=True, capture_output=True, text=True,
    )
    return out


def test_folder_is_hub_ready(converted):
    names = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md",
            "configuration_lapa_dinov3.py", "modeling_lapa_dinov3.py", "processing_lapa_dinov3.py"} <= names
    config = json.loads((converted / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_lapa_dinov3.LapaDinov3Model"
    assert json.loads((converted / "preprocessor_config.json").read_text())["auto_map"]["AutoProcessor"]
    assert (converted / "README.md").read_text().startswith("---\nlibrary_name: transformers")


FRESH_PROCESS = """
import sys, torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoProcessor
path, cases = sys.argv[1], load_file(sys.argv[2])
assert "lary" not in sys.modules
config = AutoConfig.from_pretrained(path, trust_remote_code=True)
model = AutoModel.from_pretrained(path, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
frames = cases["frames"].numpy()
inputs = processor(images=[[f0, f1] for f0, f1 in frames], return_tensors="pt")
with torch.no_grad():
    out = model(**inputs, return_predicted_features=True)
assert torch.equal(out.action_indices, cases["indices"])
assert (out.latent_actions - cases["tokens"]).abs().max() < 1e-4
assert (out.continuous_latent_actions - cases["continuous"]).abs().max() < 1e-4
assert (out.predicted_features - cases["predicted_features"]).abs().max() < 1e-4
print("ok", config.model_type)
"""


def test_fresh_offline_process_loads_with_remote_code(converted, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    cases = REPO_ROOT.parent / "shared" / "golden" / "lapa_dinov3_tiny" / "cases.safetensors"
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(converted), str(cases)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok lapa_dinov3" in result.stdout


def _pairs(n: int = 2, size: int = 224) -> list[list]:
    generator = torch.Generator().manual_seed(0)
    return [[torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8).numpy() for _ in range(2)]
            for _ in range(n)]


def test_registered_auto_classes_load_without_remote_code(converted, tmp_path):
    model = AutoModel.from_pretrained(converted)
    processor = AutoProcessor.from_pretrained(converted)
    assert isinstance(model, LapaDinov3Model) and isinstance(processor, LapaDinov3Processor)
    assert not model.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("backbone."))
    inputs = processor(images=_pairs())
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path / "again")
    reloaded = AutoModel.from_pretrained(tmp_path / "again")
    with torch.no_grad():
        after = reloaded(**inputs)
    assert torch.equal(before.action_indices, after.action_indices)
    assert torch.equal(before.latent_actions, after.latent_actions)


def test_bfloat16_and_device_map(converted):
    inputs = LapaDinov3Processor()(images=_pairs())
    reference = AutoModel.from_pretrained(converted)(**inputs)
    half = AutoModel.from_pretrained(converted, dtype=torch.bfloat16)
    assert half.quantizer.codebook.dtype == torch.bfloat16
    out = half(**inputs)
    assert out.latent_actions.dtype == torch.bfloat16
    assert (out.action_indices == reference.action_indices).float().mean() > 0.8  # bf16 may flip near-ties
    mapped = AutoModel.from_pretrained(converted, device_map="auto")
    assert {"DINOv3ViTLayer", "DINOv3ViTEmbeddings", "LapaDinov3Block"} <= set(mapped._no_split_modules)
    assert torch.equal(mapped(**inputs).action_indices, reference.action_indices)


def test_pipeline_serves_pairs_clips_and_batches(converted):
    latent = pipeline(model=str(converted), trust_remote_code=True)
    (f0, f1), (g0, g1) = _pairs()
    single = latent([f0, f1])
    assert single["action_indices"].shape == (1, 16) and single["latent_actions"].shape == (1, 16, 64)
    clip = latent([f0, f1, g0, g1], stride=2)
    assert clip["action_indices"].shape == (2, 16)
    batch = latent([[f0, f1], [g0, g1]])
    assert len(batch) == 2
    assert (batch[0]["action_indices"] == single["action_indices"]).all()
    assert (clip["action_indices"][0] == latent([f0, g0])["action_indices"][0]).all()


def _with_processor(converted: Path, folder: Path, **settings) -> Path:
    """A copy of the converted folder whose saved processor has other settings than the defaults."""
    shutil.copytree(converted, folder)
    LapaDinov3Processor(**settings).save_pretrained(folder)
    return folder


def test_pipeline_save_writes_the_processor_and_its_settings_survive(converted, tmp_path):
    source = _with_processor(converted, tmp_path / "source", resample="pil_bicubic_antialias", stride=2)
    pipeline(model=str(source), trust_remote_code=True).save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())
    assert (saved["resample"], saved["stride"], saved["size"]) == ("pil_bicubic_antialias", 2, 224)
    assert saved["auto_map"]["AutoProcessor"] == "processing_lapa_dinov3.LapaDinov3Processor"
    processor = AutoProcessor.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    assert (processor.resample, processor.stride) == ("pil_bicubic_antialias", 2)
    reloaded = pipeline(model=str(tmp_path / "saved"), trust_remote_code=True)
    assert (reloaded.frame_processor.resample, reloaded.frame_processor.stride) == ("pil_bicubic_antialias", 2)
    (f0, f1), (g0, g1) = _pairs()
    assert reloaded([f0, f1, g0, g1])["action_indices"].shape == (2, 16)  # pairs (0, 2) and (1, 3)


def test_pipeline_takes_the_saved_processors_stride_unless_the_call_gives_one(converted, tmp_path):
    latent = pipeline(model=str(_with_processor(converted, tmp_path / "stride2", stride=2)), trust_remote_code=True)
    (f0, f1), (g0, g1) = _pairs()
    clip = latent([f0, f1, g0, g1])
    assert clip["action_indices"].shape == (2, 16)  # pairs (0, 2) and (1, 3)
    assert (clip["action_indices"][0] == latent([f0, g0])["action_indices"][0]).all()
    assert (clip["action_indices"][1] == latent([f1, g1])["action_indices"][0]).all()
    assert latent([f0, f1, g0, g1], stride=1)["action_indices"].shape == (3, 16)


SAVE_LOADED = """
import sys
from transformers import AutoModel
converted, out = sys.argv[1:]
remote = AutoModel.from_pretrained(converted, trust_remote_code=True)
assert type(remote).__module__.startswith("transformers_modules"), type(remote).__module__
remote.save_pretrained(out + "/remote")
import lary  # registers the classes: the model now loads from lary_hub, without remote code
local = AutoModel.from_pretrained(converted)
assert type(local).__module__ == "lary_hub.modeling_lapa_dinov3", type(local).__module__
local.save_pretrained(out + "/lary")
"""

PIPELINE_ON_SAVED = """
import sys
from safetensors.torch import load_file
from transformers import pipeline
cases = load_file(sys.argv[1])
f0, f1 = cases["frames"][0].numpy()
for saved in sys.argv[2:]:
    latent = pipeline(model=saved, trust_remote_code=True)
    assert (latent([f0, f1])["action_indices"][0] == cases["indices"][0].numpy()).all(), saved
assert "lary" not in sys.modules
print("ok")
"""


def test_a_loaded_model_saves_a_folder_that_loads_again(converted, tmp_path):
    """save -> load -> save keeps the code files, whether the model came from remote code or from `lary`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", SAVE_LOADED, str(converted), str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = [tmp_path / "remote", tmp_path / "lary"]
    for folder in saved:
        names = {p.name for p in folder.iterdir()}
        assert {"configuration_lapa_dinov3.py", "modeling_lapa_dinov3.py", "processing_lapa_dinov3.py"} <= names
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"] == {"AutoConfig": "configuration_lapa_dinov3.LapaDinov3Config",
                                      "AutoModel": "modeling_lapa_dinov3.LapaDinov3Model"}
        assert "latent-action-extraction" in config["custom_pipelines"]
    # a fresh process with an empty module cache, as on another machine
    env["HF_HOME"] = str(tmp_path / "hf_home_pipeline")
    cases = shared_path("golden", "lapa_dinov3_tiny", "cases.safetensors")
    result = subprocess.run([sys.executable, "-c", PIPELINE_ON_SAVED, str(cases), *map(str, saved)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_a_fresh_model_saves_loadable_code(tmp_path):
    LapaDinov3Model(LapaDinov3Config(**TINY)).save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.glob("*.py")} == {
        "configuration_lapa_dinov3.py", "modeling_lapa_dinov3.py", "processing_lapa_dinov3.py"}
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"] == \
        "modeling_lapa_dinov3.LapaDinov3Model"


def _card(text: str) -> tuple[dict, str]:
    """A card's metadata, and its text with whitespace runs as single spaces."""
    card = ModelCard(text)
    return card.data.to_dict(), " ".join(card.text.split())


def test_the_card_of_a_converted_model_states_its_own_sizes(converted):
    metadata, text = _card((converted / "README.md").read_text())
    assert metadata["pipeline_tag"] == "robotics"  # as the Hub's other latent action models
    assert {"image-feature-extraction", "latent-actions", "lapa"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["meituan-longcat/LARYBench"]
    assert "base_model" not in metadata  # a random tiny backbone is no DINOv3 release
    assert "DINOv3-architecture ViT with 16-pixel patches (2 layers, width 64, 4 heads, 4 register tokens)" in text
    assert "an NSVQ codebook of 8 entries of dimension 8) turns the pair into 16 action codes and their 64-d" in text
    assert "Converted from the LARYBench checkpoint `laq_dinov3.pt` by `lary convert`" in text
    assert "(1, 16, 64) action vectors" in text and "(batch, 14, 14, 64)" in text
    assert "5 x (batch, 2, 196, 64)" in text  # hidden_states: input, 2 spatial and 2 temporal layers
    assert "ViT-L" not in text and "1024" not in text and "$" not in text
    assert f'from_pretrained("{converted}", trust_remote_code=True)' in text


def test_the_embedded_and_trained_models_cards_have_the_same_task_metadata(tmp_path):
    metadata, text = _card((REPO_ROOT / "examples" / "tiny-lapa-dinov3" / "README.md").read_text())
    assert metadata["pipeline_tag"] == "robotics" and "image-feature-extraction" in metadata["tags"]
    assert "not a real latent action model" in text
    record = {"step": 10, "loss": 0.5, "codebook_usage": 1.0, "perplexity": 4.0}
    (tmp_path / "log.jsonl").write_text(json.dumps(record) + "\n")
    args = TrainConfig(backbone="backbone.json", data=["synthetic:2"], out=tmp_path)
    card = render_model_card(LapaDinov3Config(**TINY), str(tmp_path), training_provenance(tmp_path / "log.jsonl", args))
    metadata, text = _card(card)
    assert metadata["pipeline_tag"] == "robotics" and "image-feature-extraction" in metadata["tags"]
    assert "trained for 10 steps" in text
    assert metadata["license_name"] == "dinov3-license" and "base_model" not in metadata  # random backbone


def test_the_card_of_the_released_configuration():
    config = LapaDinov3Config()
    card = render_model_card(config, "AGI-Eval/LAPA-DINOv3", "Converted.", known_base_model(config))
    metadata, text = _card(card)
    assert metadata["base_model"] == "facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert "A frozen DINOv3 ViT-L/16 (24 layers, width 1024, 16 heads, 4 register tokens) encodes both 224x224" in text
    assert "(1, 16) codes in [0, 8)" in text and "(1, 16, 1024) action vectors" in text and "(1, 16, 32)" in text
    assert known_base_model(config, backbone="facebook/dinov3-vitb16-pretrain-lvd1689m") == \
        "facebook/dinov3-vitb16-pretrain-lvd1689m"


HUB_FILES = ("configuration_lapa_dinov3.py", "modeling_lapa_dinov3.py", "processing_lapa_dinov3.py")


def test_the_embedded_example_links_the_hub_files_and_its_configs_are_a_save(tmp_path):
    """The example's code files are relative links to the Hub files at the root (no copies to keep equal); its
    configs are what a save writes now (auto_map, the pipeline, the processor's resample), so it loads as any saved
    folder, with or without `lary`; and a save of it writes the current Hub files."""
    example = REPO_ROOT / "examples" / "tiny-lapa-dinov3"
    for name in HUB_FILES:
        assert os.readlink(example / name) == f"../../{name}"
    model = AutoModel.from_pretrained(example)
    model.save_pretrained(tmp_path / "copy")
    for name in HUB_FILES:
        assert (tmp_path / "copy" / name).read_text() == (REPO_ROOT / name).read_text()
    saved, committed = (json.loads((folder / "config.json").read_text()) for folder in (tmp_path / "copy", example))
    assert {key: committed[key] for key in ("auto_map", "custom_pipelines")} == \
        {key: saved[key] for key in ("auto_map", "custom_pipelines")}
    AutoProcessor.from_pretrained(example).save_pretrained(tmp_path / "processor")
    saved = tmp_path / "processor" / "preprocessor_config.json"
    assert json.loads(saved.read_text()) == json.loads((example / "preprocessor_config.json").read_text())


REMOTE_CODE_ONLY = """
import sys, torch
from transformers import AutoModel, AutoProcessor, pipeline
frames = torch.load(sys.argv[1], weights_only=True).numpy()
for folder in sys.argv[2:]:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    codes = model(**processor(images=[frames])).action_indices
    assert (pipeline(model=folder, trust_remote_code=True)(list(frames))["action_indices"] == codes.numpy()).all()
    print(folder, codes.tolist())
assert "lary" not in sys.modules
"""


def test_the_embedded_example_and_a_plain_save_of_it_load_without_lary(tmp_path):
    """The README's model section on the embedded example, and on the folder that a plain `save_pretrained` of the
    installed classes writes (model and processor): model, processor and pipeline in a fresh process without `lary`,
    with the codes the installed classes give."""
    example = REPO_ROOT / "examples" / "tiny-lapa-dinov3"
    model, processor = AutoModel.from_pretrained(example), AutoProcessor.from_pretrained(example)
    assert isinstance(model, LapaDinov3Model) and isinstance(processor, LapaDinov3Processor)  # `import lary`'s classes
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    frames = torch.from_numpy(np.stack(_pairs(1, size=64)[0]))
    torch.save(frames, tmp_path / "frames.pt")
    with torch.no_grad():
        expected = model(**processor(images=[list(frames.numpy())])).action_indices.tolist()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    folders = [str(example), str(tmp_path / "saved")]
    result = subprocess.run([sys.executable, "-c", REMOTE_CODE_ONLY, str(tmp_path / "frames.pt"), *folders],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [f"{folder} {expected}" for folder in folders]
