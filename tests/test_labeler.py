"""`lary.LatentActionLabeler`: the latent actions of `lary extract` for the same frames, from frames in any form
(uint8 arrays, LeRobot's float CHW tensors, PIL through 🤗 `datasets`), in `Dataset.map` and in a `DataLoader`'s
collate; bad input named."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import shared_path
from datasets import Dataset, Features, Image
from PIL import Image as PILImage
from test_extract import extract, read_output, save_tiny_model
from torch.utils.data import DataLoader

from lary import LatentActionLabeler
from lary.errors import LaryError
from lary.frames import read_video
from lary.hub import default_model

STRIDE = 5


@pytest.fixture(scope="module")
def labeler() -> LatentActionLabeler:
    return LatentActionLabeler.from_pretrained(default_model(), batch_size=7)


@pytest.fixture(scope="module")
def aloha_frames() -> np.ndarray:
    return read_video(shared_path("robot", "aloha", "ep_00.mp4"))  # 50 frames, 480 x 640, as lary extract decodes them


def lerobot_form(frames: np.ndarray) -> torch.Tensor:
    """Frames as LeRobotDataset gives them: float32 (N, C, H, W) in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def test_the_codes_of_lary_extract_for_the_same_frame_pairs(tmp_path, labeler, aloha_frames):
    out = tmp_path / "out"
    assert extract("--model", str(default_model()), "--videos", str(shared_path("robot", "aloha", "ep_00.mp4")),
                   "--stride", str(STRIDE), "--out", str(out)) == 0
    table = read_output(out)
    assert table.column("frame_index").to_pylist() == list(range(50 - STRIDE))
    expected = {name: np.array(table.column(name).to_pylist()) for name in ("action_indices", "latent_actions",
                                                                             "continuous_latent_actions")}
    assert len(np.unique(expected["action_indices"], axis=0)) > 3  # codes that vary: equality means something

    first, second = aloha_frames[:-STRIDE], aloha_frames[STRIDE:]
    for given in ((first, second), (lerobot_form(first), lerobot_form(second)), (list(first), list(second))):
        labels = labeler.label_pairs(*given)
        assert labels["action_indices"].dtype == np.int64 and labels["action_indices"].shape == (45, 4)
        np.testing.assert_array_equal(labels["action_indices"], expected["action_indices"])
        for name in ("latent_actions", "continuous_latent_actions"):
            assert labels[name].dtype == np.float32
            np.testing.assert_allclose(labels[name], expected[name], atol=1e-5)

    # a video file, a batch of 7 pairs at a time, in frames or in seconds (ep_00 is 25 fps: 0.2 s is 5 frames)
    video = shared_path("robot", "aloha", "ep_00.mp4")
    for labels in (labeler.label_video(video, stride=STRIDE), labeler.label_video(video, stride_seconds=0.2)):
        np.testing.assert_array_equal(labels["frame_index"], np.arange(50 - STRIDE))
        np.testing.assert_array_equal(labels["next_frame_index"], np.arange(STRIDE, 50))
        np.testing.assert_array_equal(labels["action_indices"], expected["action_indices"])
        np.testing.assert_allclose(labels["latent_actions"], expected["latent_actions"], atol=1e-5)
    with pytest.raises(LaryError, match=r"0.01 is 0.25 frames of .*ep_00.mp4 at 25 fps"):
        labeler.label_video(video, stride_seconds=0.01)
    with pytest.raises(LaryError, match="fewer than 51 frames"):
        labeler.label_video(video, stride=50)


def test_dataset_map_adds_the_columns(labeler, aloha_frames):
    pairs = [(int(t), int(t) + STRIDE) for t in range(0, 40, 4)]
    frames = Dataset.from_dict(
        {"frame": [PILImage.fromarray(aloha_frames[a]) for a, _ in pairs],
         "next_frame": [PILImage.fromarray(aloha_frames[b]) for _, b in pairs]},
        features=Features({"frame": Image(), "next_frame": Image()}),
    )
    labelled = frames.map(labeler.datasets_map(first="frame", second="next_frame"), batched=True, batch_size=4)
    expected = labeler.label_pairs(aloha_frames[[a for a, _ in pairs]], aloha_frames[[b for _, b in pairs]])
    assert labelled.column_names == ["frame", "next_frame", "action_indices", "latent_actions", "continuous_latent_actions"]
    np.testing.assert_array_equal(np.array(labelled["action_indices"]), expected["action_indices"])
    np.testing.assert_allclose(np.array(labelled["latent_actions"]), expected["latent_actions"], atol=1e-6)


class FramePairs(torch.utils.data.Dataset):
    """Items as LeRobotDataset gives them with `delta_timestamps={"observation.images.top": [0, STRIDE / fps]}`."""

    def __init__(self, frames: np.ndarray):
        self.frames = lerobot_form(frames)

    def __len__(self) -> int:
        return len(self.frames) - STRIDE

    def __getitem__(self, t: int) -> dict:
        return {"observation.images.top": self.frames[[t, t + STRIDE]], "frame_index": t, "task": "insert the peg"}


def test_a_dataloader_s_batches_are_labelled_in_its_collate(labeler, aloha_frames):
    loader = DataLoader(FramePairs(aloha_frames), batch_size=8, collate_fn=labeler.collate("observation.images.top"))
    batches = list(loader)
    assert batches[0]["observation.images.top"].shape == (8, 2, 3, 480, 640) and batches[0]["task"][0] == "insert the peg"
    codes = torch.cat([batch["action_indices"] for batch in batches])
    assert codes.dtype == torch.int64 and batches[0]["latent_actions"].shape == (8, 4, 64)
    expected = labeler.label_pairs(aloha_frames[:-STRIDE], aloha_frames[STRIDE:])
    np.testing.assert_array_equal(codes.numpy(), expected["action_indices"])
    assert torch.cat([batch["frame_index"] for batch in batches]).tolist() == list(range(45))

    # two keys, one frame each
    def split(samples):
        return [{"now": s["observation.images.top"][0], "later": s["observation.images.top"][1]} for s in samples]

    collate = labeler.collate("now", "later", base_collate=lambda samples: torch.utils.data.default_collate(split(samples)))
    batch = next(iter(DataLoader(FramePairs(aloha_frames), batch_size=8, collate_fn=collate)))
    np.testing.assert_array_equal(batch["action_indices"].numpy(), expected["action_indices"][:8])


def test_bfloat16_when_asked(aloha_frames):
    labeler = LatentActionLabeler.from_pretrained(default_model(), device="cpu", dtype=torch.bfloat16)
    assert next(labeler.model.parameters()).dtype == torch.bfloat16 and labeler.device == torch.device("cpu")
    labels = labeler.label_pairs(aloha_frames[:4], aloha_frames[STRIDE : STRIDE + 4])
    assert labels["action_indices"].shape == (4, 4) and labels["latent_actions"].dtype == np.float32
    with pytest.raises(LaryError, match="dtype='int8' is not one of"):
        LatentActionLabeler.from_pretrained(default_model(), dtype="int8")


def test_bad_frames_are_named(labeler, aloha_frames):
    frames = lerobot_form(aloha_frames[:3])
    with pytest.raises(LaryError, match=r"first_frames\[1\]: float tensors must hold values in \[0, 1\]"):
        labeler.label_pairs(torch.stack([frames[0], frames[1] * 2]), frames[:2])
    with pytest.raises(LaryError, match="3 first frames but 2 second frames"):
        labeler.label_pairs(frames, frames[:2])
    with pytest.raises(LaryError, match=r"first_frames has shape \(480, 640, 3\): pass a batch of frames"):
        labeler.label_pairs(aloha_frames[0], aloha_frames[1])
    with pytest.raises(LaryError, match=r"batch\['observation.images.top'\] has shape \(3, 3, 480, 640\): with one key"):
        labeler.label_batch({"observation.images.top": frames}, "observation.images.top")
    with pytest.raises(LaryError, match=r"the batch has no key 'next'; its keys: \['frame'\]"):
        labeler.label_batch({"frame": frames}, "frame", "next")
    with pytest.raises(LaryError, match=r"second_frames\[0\]: .*missing"):
        labeler.label_pairs([aloha_frames[0]], ["/no/such/frame.png"])


def test_a_model_whose_weights_do_not_fit_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_tiny_model(tmp_path / "model")
    weights = load_file(folder / "model.safetensors")
    dropped = sorted(key for key in weights if "codebook" in key)[0]
    del weights[dropped]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    # a library call's error names its arguments, not the CLI's flags
    with pytest.raises(LaryError, match=rf"^name_or_path {folder}: missing weights {re.escape(dropped)}.* pass "
                                        r"allow_missing_weights=True to load it anyway"):
        LatentActionLabeler.from_pretrained(folder)
    labeler = LatentActionLabeler.from_pretrained(folder, allow_missing_weights=True)
    assert labeler.config.code_seq_len == 16
