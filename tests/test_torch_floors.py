"""torch's floor and the Inference Endpoints container's torch, installed from the package index (CUDA builds, a few
GB per environment, minutes to install the first time; cached by `other_envs.python_with`): `pytest -m torch_floors`.

On the container's torch 2.5.1 with its transformers 4.51.3, the Hub files by remote code alone give this environment's
codes (`test_transformers_versions.CODES`; the toolkit's own server on that torch is in test_endpoint_toolkit.py). On
the lowest versions pyproject.toml declares, torch's included (`floor_env.floor_python(kept=set())`), `lary` loads the
embedded model, labels a video and its frames' pairs, and `lary extract` writes a video's rows: the codes and vectors
it gives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from packaging.version import Version

from floor_env import floor_python, floor_requirements
from lary.synthetic import make_clip, write_video
from other_envs import python_with_torch, run_python
from test_endpoint_toolkit import CONTAINER, CONTAINER_TORCH
from test_transformers_versions import assert_same_codes, model_folders, reference, run_codes  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.envs, pytest.mark.torch_floors]

# Run by each Python in a folder of its own: the embedded model through `lary`'s labeler and `lary extract`.
SMOKE = """
import json, os
import numpy as np, torch
from lary.cli import main
from lary.hub import EMBEDDED_MODEL
from lary.labeler import LatentActionLabeler

job = json.loads(os.environ["LARY_JOB"])
labeler = LatentActionLabeler.from_pretrained(EMBEDDED_MODEL, device="cpu", batch_size=8)
video = labeler.label_video(job["video"], stride=2)
frames = np.load(job["frames"])
pairs = labeler.label_pairs(frames[:-1], frames[1:])
assert main(["extract", "--model", str(EMBEDDED_MODEL), "--videos", job["video"], "--out", job["extracted"], "--cpu",
             "--num-workers", "0"]) == 0
np.savez(job["out"], **{f"video_{key}": value for key, value in video.items()},
         **{f"pairs_{key}": value for key, value in pairs.items()})
print(torch.__version__)
"""


def run_smoke(python: Path, media: dict[str, Path], work: Path) -> tuple[dict[str, np.ndarray], list[dict], str]:
    """`SMOKE` by `python`: the labeler's arrays, `lary extract`'s rows by frame, and the torch it ran."""
    work.mkdir()
    job = {**{name: str(path) for name, path in media.items()}, "out": str(work / "labels.npz"),
           "extracted": str(work / "extracted")}
    ran = run_python(python, SMOKE, cwd=work, env={"LARY_JOB": json.dumps(job)}).stdout.strip().splitlines()[-1]
    table = pq.read_table(sorted((work / "extracted").glob("*.parquet"))).sort_by("frame_index")
    rows = table.select(["frame_index", "next_frame_index", "action_indices", "latent_actions"]).to_pylist()
    return dict(np.load(work / "labels.npz")), rows, ran


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    clip = make_clip(3, num_frames=12, size=96, seed=5).frames
    np.save(folder / "frames.npy", clip)
    return {"video": write_video(clip, folder / "clip.mkv"), "frames": folder / "frames.npy"}


def assert_same_on_another_torch(ours: dict, theirs: dict, where: str) -> None:
    """`assert_same_codes` (codes equal, vectors within 1e-5), but the eager records (hidden states and attention maps,
    `name_i`) within 1e-5 of their largest magnitude: another torch's kernels round float32 otherwise, and the tiny
    model's hidden states reach 569, where float32's spacing is 6e-5 (seen: 1.1e-6 of the magnitude at most)."""
    records = {key for key in theirs if key.rsplit("_", 1)[-1].isdigit()}
    assert_same_codes({key: value for key, value in ours.items() if key not in records},
                      {key: value for key, value in theirs.items() if key not in records}, where)
    for key in records:
        scale = max(1.0, float(np.abs(theirs[key]).max()))
        assert np.abs(ours[key] - theirs[key]).max() < 1e-5 * scale, f"{where}: {key} differ"


def test_hub_files_on_the_endpoint_containers_torch(model_folders, reference, tmp_path):
    python = python_with_torch(CONTAINER, CONTAINER_TORCH)
    results, ran = run_codes(python, model_folders, tmp_path / "run")
    assert ran == "4.51.3"
    for name in model_folders:
        assert_same_on_another_torch(results[name], reference[name],
                                     f"{name} on torch {CONTAINER_TORCH}, transformers 4.51.3")


def test_lary_on_torchs_floor_gives_the_same_codes(media, tmp_path):
    floor = next(pin.split("==")[1] for pin in floor_requirements(kept=set()) if pin.startswith("torch=="))
    if Version(torch.__version__.split("+")[0]) == Version(floor):
        pytest.skip(f"this environment's torch is the floor, {floor}: nothing to compare it with")
    ours, our_rows, _ = run_smoke(Path(sys.executable), media, tmp_path / "here")
    theirs, their_rows, ran = run_smoke(floor_python(kept=set()), media, tmp_path / "floor")
    assert Version(ran.split("+")[0]) == Version(floor), ran
    assert len(ours["video_action_indices"]) == 10 and len(ours["pairs_action_indices"]) == 11
    assert_same_codes(theirs, ours, f"lary on torch {ran}")
    assert [row["frame_index"] for row in their_rows] == [row["frame_index"] for row in our_rows] == list(range(11))
    for mine, other in zip(our_rows, their_rows):
        assert other["action_indices"] == mine["action_indices"], mine["frame_index"]
        np.testing.assert_allclose(other["latent_actions"], mine["latent_actions"], atol=1e-5)
