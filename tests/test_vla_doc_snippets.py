"""docs/vla.md's `imagefolder` block, run as written on a real folder of PNG frames of two clips: the pairs it
builds are (t, t + k) of each clip, and their codes are the labeler's for the same images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from lary import LatentActionLabeler
from lary.hub import default_model
from lary.synthetic import make_clip

DOC = Path(__file__).resolve().parents[1] / "docs" / "vla.md"
LENGTHS = {"clip_a": 6, "clip_b": 5}


def imagefolder_block() -> str:
    blocks = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
              if 'load_dataset("imagefolder"' in block]
    assert len(blocks) == 1
    return blocks[0]


def test_the_imagefolder_block_labels_pairs_of_frames(tmp_path, monkeypatch):
    for i, (clip, length) in enumerate(LENGTHS.items()):
        (tmp_path / "frames" / clip).mkdir(parents=True)
        for t, frame in enumerate(make_clip(i, num_frames=length, size=48 + 16 * i, seed=i).frames):
            Image.fromarray(frame).save(tmp_path / "frames" / clip / f"{t:03d}.png")
    monkeypatch.chdir(tmp_path)
    labeler = LatentActionLabeler.from_pretrained(default_model())
    namespace = {"labeler": labeler}
    exec(compile(imagefolder_block(), str(DOC), "exec"), namespace)

    frames, k = namespace["frames"], namespace["k"]
    assert k == 3 and len(frames) == sum(length - k for length in LENGTHS.values())
    assert {"frame", "next_frame", "action_indices", "latent_actions", "continuous_latent_actions"} <= set(frames.features)
    expected = [(f"frames/{clip}/{t:03d}.png", f"frames/{clip}/{t + k:03d}.png")
                for clip, length in LENGTHS.items() for t in range(length - k)]
    first = [Image.open(a) for a, _ in expected]
    second = [Image.open(b) for _, b in expected]
    labels = labeler.label_pairs(first, second)
    np.testing.assert_array_equal(np.array(frames["action_indices"]), labels["action_indices"])
    assert frames[0]["frame"].size == (48, 48) and frames[len(frames) - 1]["next_frame"].size == (64, 64)
