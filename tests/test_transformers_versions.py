"""The Hub files on the transformers our users run: the Inference Endpoints image's 4.51.3, the last 4.x and LeRobot's
5.5, each in an environment of its own (`other_envs.python_with`), load a model folder by remote code alone
(`AutoModel`, `AutoProcessor`, `pipeline`, `handler.py`; never `lary`) and give the codes of this environment's
transformers. Below 4.56 transformers has no DINOv3, and the modeling file brings its own: it is checked against
transformers' here."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from other_envs import python_with, run_python
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from lary.configs.model import ConvertConfig
from lary.convert import convert
from lary_hub.modeling_lapa_dinov3 import Dinov3ViT

pytestmark = pytest.mark.envs  # builds other environments from the package index: `pytest -m envs`

REPO_ROOT = Path(__file__).resolve().parents[1]

# Pins that pip resolves beside this environment's torch (each transformers brings the tokenizers it accepts).
ENVIRONMENTS = {
    "4.51.3": ["transformers==4.51.3", "huggingface_hub==0.30.2"],  # the Inference Endpoints image
    "4.57.6": ["transformers==4.57.6"],  # the last 4.x, where VLA code pinned to 4 lands
    # LeRobot 0.6.1's policies pin transformers>=5.4,<5.6; 5.5 does not import beside this suite's newer kernels
    "5.5.4": ["transformers==5.5.4", "kernels>=0.12,<0.13"],
}

# Run by each environment's Python, in a folder outside the checkout (nothing of ours on its path): codes and vectors
# of pairs and of a clip through AutoModel + AutoProcessor, of the clip through the model's windowed video forward,
# `handler.py` (loaded as Inference Endpoints loads it) and the pipeline (which saves itself), and every record of
# eager attention (hidden states and attention maps of the encoder, decoder and backbone); and a config out of range
# is refused.
CODES = """
import base64, importlib.util, io, json, os, sys
import numpy as np, torch, transformers
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline


for job in json.loads(os.environ["LARY_JOBS"]):
    frames = list(np.load(job["frames"]))
    model = AutoModel.from_pretrained(job["folder"], trust_remote_code=True)
    eager = AutoModel.from_pretrained(job["folder"], trust_remote_code=True, attn_implementation="eager")
    processor = AutoProcessor.from_pretrained(job["folder"], trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    pairs = processor(images=[list(pair) for pair in zip(frames[:-1], frames[1:])])
    with torch.no_grad():
        paired = model(**pairs)
        clip = model(**processor(videos=[frames], stride=2))
        recorded = eager(**pairs, output_hidden_states=True, output_attentions=True, return_predicted_features=True)
    # the windowed video forward: windows of 2 pairs carrying stride 2's features, and stride 3 read by two readers
    video = {stride: list(model.latent_actions_of_video(frames, stride, processor, pairs_per_window=2)) for stride in (2, 3)}
    video = {stride: {key: torch.cat([window[key] for window in windows]) for key in ("action_indices", "latent_actions")}
             for stride, windows in video.items()}
    assert torch.equal(video[2]["action_indices"], clip.action_indices[0])
    # handler.py as Inference Endpoints loads it (a module `handler.EndpointHandler`, the folder on sys.path), the
    # clip's frames sent as base64 PNG images
    sys.path.insert(0, job["folder"])
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", os.path.join(job["folder"], "handler.py"))
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    sys.path.remove(job["folder"])
    pngs = []
    for frame in frames:
        png = io.BytesIO()
        Image.fromarray(frame).save(png, format="PNG")
        pngs.append(base64.b64encode(png.getvalue()).decode())
    answer = handler.EndpointHandler(job["folder"])({"inputs": pngs, "parameters": {"return_vectors": True}})
    latent = pipeline(model=job["folder"], trust_remote_code=True)
    served = latent(frames)
    latent.save_pretrained(job["saved"])
    records = {f"{key}_{i}": value for key, values in recorded.items() if isinstance(values, tuple)
               for i, value in enumerate(values)}
    np.savez(job["out"], pair_indices=paired.action_indices, pair_vectors=paired.continuous_latent_actions,
             pair_tokens=paired.latent_actions, clip_indices=clip.action_indices,
             clip_vectors=clip.continuous_latent_actions, served_indices=served["action_indices"],
             served_vectors=served["continuous_latent_actions"], predicted=recorded.predicted_features,
             video_indices=video[2]["action_indices"], video_tokens=video[2]["latent_actions"],
             long_stride_indices=video[3]["action_indices"], long_stride_tokens=video[3]["latent_actions"],
             handler_indices=[pair["action_indices"] for pair in answer],
             handler_vectors=[pair["continuous_latent_actions"] for pair in answer], **records)
try:  # the config's range checks run on every version (transformers 4 has no `@strict`)
    type(model.config)(spatial_depth=-1)
    refused = "not refused"
except Exception as error:  # a ValueError, which `@strict` wraps on transformers 5
    refused = str(error)
assert "spatial_depth=-1 is out of range: it must be in [1, 256]" in refused, refused
ours = sorted(name for name in sys.modules if name.split(".")[0] in ("lary", "lary_hub"))
assert not ours, ours
print(transformers.__version__)
"""


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """Hub folders with real files (no symlinks into the checkout) and the frames each is run on: the embedded tiny
    model on frames it resizes, and the golden checkpoint converted by `lary convert` on the golden cases' frames."""
    golden = shared_path("golden", "lapa_dinov3_tiny")
    root = tmp_path_factory.mktemp("hub_folders")
    tiny = shutil.copytree(REPO_ROOT / "examples" / "tiny-lapa-dinov3", root / "tiny")
    converted = convert(ConvertConfig(checkpoint=golden / "laq_dinov3.pt", out=root / "golden",
                                      laq_config=golden / "laq_config.json",
                                      backbone_config=golden / "backbone_config.json"))
    rng = np.random.default_rng(0)
    tiny_frames = np.stack([rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(5)])
    golden_frames = load_file(golden / "cases.safetensors")["frames"].flatten(0, 1).numpy()  # pairs (0, 1), (2, 3)...
    return {"tiny": (tiny, tiny_frames), "golden": (converted, golden_frames)}


def run_codes(python: Path, folders: dict[str, tuple[Path, np.ndarray]], work: Path) -> tuple[dict, str]:
    """`CODES` by `python` on each folder: {name: arrays, name + "/saved": the pipeline's saved folder}, and the
    transformers version it ran."""
    work.mkdir()
    jobs = []
    for name, (folder, frames) in folders.items():
        np.save(work / f"{name}.npy", frames)
        jobs.append({"folder": str(folder), "frames": str(work / f"{name}.npy"), "out": str(work / f"{name}.npz"),
                     "saved": str(work / f"{name}-saved")})
    result = run_python(python, CODES, cwd=work, env={"LARY_JOBS": json.dumps(jobs), "HF_HOME": str(work / "hf")})
    results = {name: dict(np.load(work / f"{name}.npz")) for name in folders}
    results.update({f"{name}/saved": work / f"{name}-saved" for name in folders})
    return results, result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def reference(model_folders, tmp_path_factory) -> dict:
    """The codes with this environment's transformers, by the same remote-code script."""
    results, _ = run_codes(Path(sys.executable), model_folders, tmp_path_factory.mktemp("reference") / "run")
    cases = load_file(shared_path("golden", "lapa_dinov3_tiny", "cases.safetensors"))
    assert np.array_equal(results["golden"]["pair_indices"][::2], cases["indices"].numpy())  # the reference's codes
    for name in model_folders:  # the handler's pairs (t, t + 1) are the processor's pairs
        assert np.array_equal(results[name]["handler_indices"], results[name]["pair_indices"]), name
        assert np.abs(results[name]["handler_vectors"] - results[name]["pair_vectors"]).max() < 1e-5, name
    return results


def assert_same_codes(ours: dict, theirs: dict, where: str) -> None:
    assert set(ours) == set(theirs), f"{where}: other outputs or records {set(ours) ^ set(theirs)}"
    for key in ours:
        if key.endswith("indices"):
            assert np.array_equal(ours[key], theirs[key]), f"{where}: {key} differ"
        else:
            assert np.abs(ours[key] - theirs[key]).max() < 1e-5, f"{where}: {key} differ"


@pytest.mark.parametrize("version", ENVIRONMENTS)
def test_hub_files_give_the_same_codes_on_each_transformers(version, model_folders, reference, tmp_path):
    results, ran = run_codes(python_with(ENVIRONMENTS[version]), model_folders, tmp_path / "run")
    assert ran == version
    for name in model_folders:
        assert_same_codes(results[name], reference[name], f"{name} on transformers {version}")
    # what that version's pipeline saved loads here: the config, the weights, the processor
    saved = results["tiny/saved"]
    assert (saved / "preprocessor_config.json").is_file()
    processor = AutoProcessor.from_pretrained(saved, trust_remote_code=True)
    with torch.no_grad():
        clip = AutoModel.from_pretrained(saved, trust_remote_code=True)(
            **processor(videos=[list(model_folders["tiny"][1])], stride=2)
        )
    assert np.array_equal(clip.action_indices.numpy(), reference["tiny"]["clip_indices"])


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_our_dinov3_is_transformers_dinov3(model_folders, golden_dir, attention):
    """Dinov3ViT (the backbone below transformers 4.56) loads the saved backbone weights by their names, strictly,
    and computes what transformers' DINOv3ViTModel computes: on the golden cases' frames and on random pixels of
    another size, every hidden state and attention map."""
    folder = model_folders["golden"][0]
    theirs = AutoModel.from_pretrained(folder, attn_implementation=attention).backbone
    saved = load_file(folder / "model.safetensors")
    ours = Dinov3ViT(theirs.config).eval()
    ours.load_state_dict({key.removeprefix("backbone."): value for key, value in saved.items()
                          if key.startswith("backbone.")})  # strict: every name matches
    frames = load_file(golden_dir / "cases.safetensors")["frames"].flatten(0, 1)
    golden_pixels = AutoProcessor.from_pretrained(folder)(videos=[list(frames)])["pixel_values_videos"][0]
    random_pixels = torch.rand(2, 3, 160, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for pixels in (golden_pixels, random_pixels):
        with torch.no_grad():
            expected = theirs(pixel_values=pixels, output_hidden_states=True, output_attentions=attention == "eager")
            got = ours(pixel_values=pixels, output_hidden_states=True, output_attentions=attention == "eager")
        for key in ("last_hidden_state", "pooler_output", "hidden_states", "attentions"):
            torch.testing.assert_close(getattr(got, key), getattr(expected, key), rtol=0, atol=1e-6)
