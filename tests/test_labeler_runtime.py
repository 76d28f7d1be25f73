"""One runtime (`lary.runtime`) from frames to codes: every way in (`lary extract`, `label_video`, `label_pairs` of a
clip, the app, the Hub files' pipeline, the endpoint's `handler.py`) gives the same codes for one real video and runs
each frame through DINOv3 once; a model's identity covers all its weights; the labeler's arguments are checked."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import shared_path
from safetensors.torch import load_file, save_file
from test_extract import TINY_LAQ, extract, read_output
from transformers import DINOv3ViTModel, pipeline

from lary import LapaDinov3Config, LapaDinov3Model, LatentActionLabeler, runtime
from lary_hub import modeling_lapa_dinov3
from lary.app.analysis import Analyzer
from lary.errors import LaryError
from lary.frames import read_video
from lary.hub import default_model
from lary.synthetic import write_video

STRIDE = 5
BATCH = 7  # pairs per batch: windows of 12 frames share 5 with the next
COLUMNS = ("action_indices", "latent_actions", "continuous_latent_actions")


@pytest.fixture
def backbone_frames(monkeypatch) -> list[int]:
    """The frames each DINOv3 forward pass takes, in this process."""
    seen: list[int] = []
    forward = DINOv3ViTModel.forward

    def counting_forward(self, pixel_values, *args, **kwargs):
        seen.append(len(pixel_values))
        return forward(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(DINOv3ViTModel, "forward", counting_forward)
    return seen


@pytest.fixture(scope="module")
def video():
    return shared_path("robot", "aloha", "ep_00.mp4")  # 50 frames, 480 x 640, 25 fps


@pytest.fixture(scope="module")
def labeler() -> LatentActionLabeler:
    return LatentActionLabeler.from_pretrained(default_model(), device="cpu", batch_size=BATCH)


def _endpoint(folder, monkeypatch):
    """The folder's `handler.py` loaded as Inference Endpoints' toolkit loads it (module `handler.EndpointHandler`,
    the folder on sys.path), its handler made; torch's threads, which it sets for the process, given back."""
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    saved = torch.get_num_threads()
    try:
        return module.EndpointHandler(str(folder))
    finally:
        torch.set_num_threads(saved)


def _handler_labels(handler, video) -> dict[str, np.ndarray]:
    answer = handler({"inputs": video.read_bytes(), "parameters": {"stride": STRIDE, "return_vectors": True}})
    assert [(pair["frame_index"], pair["next_frame_index"]) for pair in answer] == [(t, t + STRIDE) for t in range(50 - STRIDE)]
    return {name: np.array([pair[name] for pair in answer]) for name in COLUMNS}


def test_every_way_in_gives_the_codes_of_lary_extract_each_frame_through_the_backbone_once(
        tmp_path, video, labeler, backbone_frames, monkeypatch):
    frames = read_video(video)
    assert len(frames) == 50

    out = tmp_path / "out"
    assert extract("--model", str(default_model()), "--videos", str(video), "--stride", str(STRIDE), "--batch-size",
                   str(BATCH), "--out", str(out)) == 0
    table = read_output(out)
    expected = {name: np.array(table.column(name).to_pylist()) for name in COLUMNS}
    assert table.column("frame_index").to_pylist() == list(range(50 - STRIDE))
    assert len(np.unique(expected["action_indices"], axis=0)) > 3  # codes that vary: equality means something
    assert sum(backbone_frames) == 50  # the 5 frames a window hands to the next are not computed again

    analyzer = Analyzer(default_model(), device="cpu")
    analyzer.load()
    latent = pipeline(model=str(default_model()), trust_remote_code=True)  # the Hub files alone, a clip in video mode
    handler = _endpoint(default_model(), monkeypatch)  # the Hub files and handler.py, as the endpoint runs them
    ways = {
        "label_video": lambda: labeler.label_video(video, stride=STRIDE),
        "label_pairs of a clip": lambda: labeler.label_pairs(frames[:-STRIDE], frames[STRIDE:]),
        "app": lambda: vars(analyzer.analyse(video, stride=STRIDE)),
        "pipeline": lambda: latent(list(frames), stride=STRIDE),
        "handler.py": lambda: _handler_labels(handler, video),
    }
    for way, label in ways.items():
        backbone_frames.clear()
        labels = label()
        assert sum(backbone_frames) == 50, way
        np.testing.assert_array_equal(labels["action_indices"], expected["action_indices"], err_msg=way)
        for name in COLUMNS[1:]:
            np.testing.assert_allclose(labels[name], expected[name], atol=1e-5, err_msg=way)

    # pairs that share no frame: each frame once, as before
    backbone_frames.clear()
    labeler.label_pairs(frames[:4], frames[10:14])
    assert sum(backbone_frames) == 8


def test_the_labeler_refuses_bad_arguments_on_one_line(labeler, video):
    for stride_seconds in (math.nan, math.inf, -0.2, 0, "0.2", True):
        with pytest.raises(LaryError, match=r"^stride_seconds=.*: it must be a positive, finite number of seconds$"):
            labeler.label_video(video, stride_seconds=stride_seconds)
    for stride in (1.5, 0, -1, "2", True):
        with pytest.raises(LaryError, match=r"^stride=.*: it must be a positive whole number of frames"):
            labeler.label_video(video, stride=stride)
    empty = np.zeros((0, 0, 3), dtype=np.uint8)
    with pytest.raises(LaryError, match=r"^first_frames\[0\] is 0x0 pixels: a frame needs at least one$"):
        labeler.label_pairs([empty], [empty])
    with pytest.raises(LaryError, match=r"^second_frames\[1\] is 0x4 pixels"):
        labeler.label_pairs(np.zeros((2, 4, 4, 3), np.uint8), [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 0, 3), np.uint8)])
    for batch_size in (0, 2.5, True):
        with pytest.raises(LaryError, match="batch_size must be a positive integer"):
            LatentActionLabeler(labeler.model, batch_size=batch_size)


def _checkpoint_beyond_16_mib(folder):
    """A model whose DINOv3 backbone fills the first 16 MiB of model.safetensors (as the released one does)."""
    torch.manual_seed(0)
    backbone = {"hidden_size": 384, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 6,
                "num_register_tokens": 4, "image_size": 224, "patch_size": 16}
    LapaDinov3Model(LapaDinov3Config(backbone_config=backbone, **TINY_LAQ)).eval().save_pretrained(folder)
    return folder


def test_a_model_s_identity_covers_all_its_weights_and_a_resume_with_another_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LARY_CACHE", str(tmp_path / "cache"))
    first = _checkpoint_beyond_16_mib(tmp_path / "step-1000")
    second = tmp_path / "step-2000"  # the same run later: the frozen backbone the same, the latent action model not
    shutil.copytree(first, second)
    weights = load_file(second / "model.safetensors")
    changed = "quantizer.codebook"
    weights[changed] = weights[changed] + 0.5
    save_file(weights, second / "model.safetensors", metadata={"format": "pt"})
    data = (second / "model.safetensors").read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    offset = 8 + header_size + json.loads(data[8 : 8 + header_size])[changed]["data_offsets"][0]
    assert offset > 16 * 2**20  # the change lies past the 16 MiB that were once all that was hashed
    assert (first / "model.safetensors").read_bytes()[: 16 * 2**20] == (second / "model.safetensors").read_bytes()[: 16 * 2**20]

    identities = runtime.model_identity(first), runtime.model_identity(second)
    assert identities[0] != identities[1] and all(identity.startswith("sha256:") for identity in identities)

    # the sha256 is read from the cache while the file's size and mtime are those it was computed for
    entries = list((tmp_path / "cache" / "weights-sha256").glob("*.json"))
    assert len(entries) == 2
    entry = next(path for path in entries if json.loads(path.read_text())["path"] == str((first / "model.safetensors").resolve()))
    cached = json.loads(entry.read_text())
    entry.write_text(json.dumps({**cached, "sha256": "0" * 64}))
    assert runtime.model_identity(first) != identities[0]  # served from the cache, not read again
    entry.write_text(json.dumps({**cached, "mtime_ns": cached["mtime_ns"] - 1, "sha256": "0" * 64}))
    assert runtime.model_identity(first) == identities[0]  # another mtime: hashed again

    clip = write_video([np.full((32, 32, 3), 10 * t, np.uint8) for t in range(6)], tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert extract("--model", str(first), "--videos", str(clip), "--out", str(out)) == 0
    assert json.loads((out / "run.json").read_text())["model"]["revision"] == identities[0]
    with pytest.raises(LaryError, match=r"holds a run of other inputs, model or options(.|\n)*model.revision"):
        extract("--model", str(second), "--videos", str(clip), "--out", str(out))
    assert extract("--model", str(first), "--videos", str(clip), "--out", str(out)) == 0  # the same model resumes


def test_one_thread_policy_sees_affinity_and_a_container_s_cpu_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(16)))
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(modeling_lapa_dinov3, "CGROUP_CPU_MAX", cpu_max)  # the Hub file's rule, which lary imports
    assert runtime.available_cores() == 16  # no cgroup file
    for quota, cores in (("max 100000", 16), ("200000 100000", 2), ("250000 100000", 3), ("50000 100000", 1)):
        cpu_max.write_text(quota + "\n")
        assert runtime.available_cores() == cores, quota
    cpu_max.write_text("400000 100000\n")  # 4 cores
    threads = runtime.compute_threads(workers=0), runtime.compute_threads(workers=1), runtime.compute_threads(3, processes=2)
    assert threads == (4, 3, 1)
    # by default the cores decoding keeps beside the model are counted out (half, at most 4): extract's workers on a
    # CPU, a video's reader, a DataLoader's workers
    assert (runtime.decoding_cores(), runtime.compute_threads(), runtime.compute_threads(processes=2)) == (2, 2, 1)

    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        with runtime.torch_threads():
            assert torch.get_num_threads() == 2  # no more than the cores it may use, less decoding's
        with runtime.torch_threads(workers=0):  # nothing decodes beside it
            assert torch.get_num_threads() == 4
        assert torch.get_num_threads() == 8  # the caller's setting comes back
        torch.set_num_threads(1)
        with runtime.torch_threads():
            assert torch.get_num_threads() == 1  # nor more than the caller set
    finally:
        torch.set_num_threads(saved)
