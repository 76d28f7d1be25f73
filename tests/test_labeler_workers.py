"""The labeler in other processes: a DataLoader's workers under each start method (the model loaded once per worker),
labelling in the main process over a loader's batches, `datasets.map(num_proc=2)` after the parent ran the model
(it used to hang for ever in OpenMP), and the map's `datasets` fingerprint (served from the cache until the model,
its weights or dtype change)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, load_from_disk
from datasets.fingerprint import Hasher
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, default_collate
from transformers import DINOv3ViTModel

from PIL import Image as PILImage

from lary import LatentActionLabeler, labeler as labeler_module
from lary.errors import LaryError
from lary.hub import default_model

pytestmark = pytest.mark.slow  # DataLoader workers under spawn and forkserver each import torch: with -m slow in .ci/run's second stage

STRIDE = 2
TESTS = Path(__file__).parent


def frame_pairs_dataset() -> Dataset:
    """The clip's pairs (t, t + 2) as a 🤗 dataset of two Image columns."""
    frames = [PILImage.fromarray(frame) for frame in clip_frames()]
    return Dataset.from_dict({"frame": frames[:-STRIDE], "next_frame": frames[STRIDE:]},
                             features=Features({"frame": Image(), "next_frame": Image()}))


def clip_frames() -> np.ndarray:
    """16 frames of 32 x 48 with something that moves (codes that vary)."""
    frames = np.zeros((16, 32, 48, 3), np.uint8)
    for t in range(16):
        frames[t, 8:20, 2 * t : 2 * t + 12] = (200, 40 + 10 * t, 90)
    return frames


class FramePairs(torch.utils.data.Dataset):
    """Items as LeRobotDataset gives them with two timestamps of one camera: (2, C, H, W) float in [0, 1]."""

    def __init__(self):
        self.frames = torch.from_numpy(clip_frames()).permute(0, 3, 1, 2).float() / 255

    def __len__(self) -> int:
        return len(self.frames) - STRIDE

    def __getitem__(self, t: int) -> dict:
        return {"camera": self.frames[[t, t + STRIDE]], "frame_index": t}


def collate_noting_the_process(samples: list) -> dict:
    """`default_collate`, plus the process and the labelers it holds when the batch is collated (before labelling)."""
    batch = default_collate(samples)
    batch["pid"] = os.getpid()
    batch["labelers"] = {repr(spec): id(labeler) for spec, labeler in labeler_module._process_labelers.items()}
    return batch


@pytest.fixture(scope="module")
def labeler() -> LatentActionLabeler:
    return LatentActionLabeler.from_pretrained(default_model(), device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def expected(labeler) -> dict[str, np.ndarray]:
    frames = clip_frames()
    labels = labeler.label_pairs(frames[:-STRIDE], frames[STRIDE:])
    assert len(np.unique(labels["action_indices"], axis=0)) > 1
    return labels


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_the_collate_labels_in_workers_under_each_start_method_loading_the_model_once_per_worker(method, labeler, expected):
    collate = labeler.collate("camera", base_collate=collate_noting_the_process)
    loader = DataLoader(FramePairs(), batch_size=2, num_workers=2, collate_fn=collate, multiprocessing_context=method)
    batches = list(loader)
    assert torch.cat([batch["frame_index"] for batch in batches]).tolist() == list(range(14))
    np.testing.assert_array_equal(torch.cat([batch["action_indices"] for batch in batches]).numpy(),
                                  expected["action_indices"])
    np.testing.assert_allclose(torch.cat([batch["latent_actions"] for batch in batches]).numpy(),
                               expected["latent_actions"], atol=1e-5)
    held = {}  # worker -> the labeler of this spec it held, batch by batch
    for batch in batches:
        held.setdefault(batch["pid"], []).append(batch["labelers"].get(repr(labeler.spec)))
    assert os.getpid() not in held and sorted(len(ids) for ids in held.values()) == [3, 4]  # 7 batches, 2 workers
    for worker, ids in held.items():
        assert None not in ids and len(set(ids)) == 1, (worker, ids)  # loaded once, before its first batch
    if method == "fork":  # inherited from this process: not loaded at all
        assert all(set(ids) == {id(labeler)} for ids in held.values())


def test_labelled_labels_a_loader_s_batches_in_this_process(labeler, expected):
    loader = DataLoader(FramePairs(), batch_size=4, num_workers=2, collate_fn=collate_noting_the_process)
    labelled = labeler.labelled(loader, "camera")
    assert len(labelled) == 4
    batches = list(labelled)
    assert {batch["pid"] for batch in batches} != {os.getpid()}  # collated in the workers, labelled here
    np.testing.assert_array_equal(torch.cat([batch["action_indices"] for batch in batches]).numpy(),
                                  expected["action_indices"])


def test_a_labeler_of_a_model_in_memory_stays_in_its_process(labeler):
    in_memory = LatentActionLabeler(labeler.model)
    with pytest.raises(LaryError, match="made from a model in memory cannot go to another process"):
        pickle.dumps(in_memory.collate("camera"))
    assert pickle.loads(pickle.dumps(labeler.collate("camera"))).labeler is labeler  # this process's, not loaded again


MAP_AFTER_THE_PARENT_RAN = """
import numpy as np, torch
from datasets import Dataset
from lary import LatentActionLabeler
from lary.hub import default_model
from test_labeler_workers import clip_frames, frame_pairs_dataset

torch.set_num_threads(2)  # the parent's OpenMP threads run first: what a forked child used to wait for
frames = clip_frames()
labeler = LatentActionLabeler.from_pretrained(default_model(), device="cpu", batch_size=3)
expected = labeler.label_pairs(frames[:-2], frames[2:])
labelled = frame_pairs_dataset().map(labeler.datasets_map("frame", "next_frame"), batched=True, batch_size=4, num_proc=2)
assert np.array_equal(np.array(labelled["action_indices"]), expected["action_indices"])
assert torch.get_num_threads() == 2  # the parent keeps its threads
print("mapped", len(labelled))
"""


def test_datasets_map_with_two_processes_finishes_after_the_parent_ran_the_model(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run([sys.executable, "-c", MAP_AFTER_THE_PARENT_RAN], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0 and "mapped 14" in result.stdout, result.stderr[-3000:]


def _other_checkpoint(folder: Path) -> Path:
    """The embedded model with other latent-action weights (the same backbone)."""
    shutil.copytree(default_model(), folder)
    weights = load_file(folder / "model.safetensors")
    weights["quantizer.codebook"] = weights["quantizer.codebook"] + 0.5
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


FINGERPRINT = """
from datasets.fingerprint import Hasher
from lary import LatentActionLabeler
from lary.hub import default_model
labeler = LatentActionLabeler.from_pretrained(default_model(), device="cpu", batch_size=3)
print(Hasher.hash(labeler.datasets_map("frame", "next_frame")))
"""


def test_the_map_is_served_from_the_datasets_cache_until_the_model_or_dtype_changes(tmp_path, labeler, monkeypatch):
    frame_pairs_dataset().save_to_disk(tmp_path / "pairs")
    pairs = load_from_disk(tmp_path / "pairs")
    first = pairs.map(labeler.datasets_map("frame", "next_frame"), batched=True, batch_size=4)
    assert first.cache_files[0]["filename"].startswith(str(tmp_path / "pairs"))

    # the fingerprint is the same in another process (another session), and in this one for a labeler made again
    result = subprocess.run([sys.executable, "-c", FINGERPRINT], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == Hasher.hash(labeler.datasets_map("frame", "next_frame"))

    seen = []
    forward = DINOv3ViTModel.forward

    def counting_forward(self, pixel_values, *args, **kwargs):
        seen.append(len(pixel_values))
        return forward(self, pixel_values, *args, **kwargs)

    monkeypatch.setattr(DINOv3ViTModel, "forward", counting_forward)

    def mapped(other: LatentActionLabeler):
        seen.clear()
        return pairs.map(other.datasets_map("frame", "next_frame"), batched=True, batch_size=4), sum(seen)

    again, computed = mapped(LatentActionLabeler.from_pretrained(default_model(), device="cpu", batch_size=3))
    assert computed == 0 and again.cache_files == first.cache_files  # served from the cache
    np.testing.assert_array_equal(np.array(again["action_indices"]), np.array(first["action_indices"]))

    other_model = _other_checkpoint(tmp_path / "other")
    for other in (LatentActionLabeler.from_pretrained(other_model, device="cpu", batch_size=3),
                  LatentActionLabeler.from_pretrained(default_model(), device="cpu", dtype="bfloat16", batch_size=3)):
        result, computed = mapped(other)
        assert computed > 0 and result.cache_files != first.cache_files  # computed again, into another file
    assert not np.array_equal(np.array(mapped(LatentActionLabeler.from_pretrained(other_model, device="cpu",
                                                                                   batch_size=3))[0]["latent_actions"]),
                              np.array(first["latent_actions"]))
