"""The worked example of docs/vla.md, `examples/vla_pretraining_batch.py`, end to end on a tiny LeRobot dataset and on
video files: frame pairs labelled on the fly with `lary extract`'s codes, the codes as tokens of a small language
model, one training step with the loss on the action tokens; its defaults offline, as a user runs them; bad input in
one line; and the doc's excerpts are the script's lines."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lerobot_fixtures import CAMERAS, synthetic_episodes, write_lerobot_dataset
from test_extract import ENV, extract, read_output

from lary.hub import default_model
from lary.synthetic import make_clip, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "vla_pretraining_batch.py"
LENGTHS = [12, 9, 15]
STRIDE = 2


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("vla_pretraining_batch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_lerobot_dataset(tmp_path_factory.mktemp("ds") / "ds", "v3.0", synthetic_episodes(LENGTHS), fps=10)


def test_a_pretraining_batch_of_lary_extract_s_codes_with_the_loss_on_the_action_tokens(tmp_path, example, dataset):
    result = example.main(["--lerobot", str(dataset), "--camera", CAMERAS[0], "--stride", str(STRIDE), "--batch-size", "16"])
    batch, inputs, tokens, tokenizer = result["batch"], result["inputs"], result["tokens"], result["tokenizer"]
    assert batch[CAMERAS[0]].shape == (16, 2, 3, 64, 64) and np.isfinite(result["loss"])

    # the codes are lary extract's for the same pairs (t, t + k) of the same episodes
    out = tmp_path / "out"
    assert extract("--model", str(default_model()), "--lerobot", str(dataset), "--camera", CAMERAS[0],
                   "--stride", str(STRIDE), "--out", str(out)) == 0
    table = read_output(out)
    rows = {(e, t): codes for e, t, codes in zip(table.column("episode_index").to_pylist(),
                                                 table.column("frame_index").to_pylist(),
                                                 table.column("action_indices").to_pylist())}
    padded = batch[f"{CAMERAS[0]}_is_pad"][:, 1].numpy()
    keys = list(zip(batch["episode_index"].tolist(), batch["frame_index"].tolist()))
    assert padded.tolist() == [t + STRIDE >= LENGTHS[e] for e, t in keys] and padded.any() and not padded.all()
    for (e, t), codes, pad in zip(keys, batch["action_indices"].tolist(), padded):
        assert pad or codes == rows[(e, t)]

    # each sequence: <bos> the task's prompt, then the pair's codes as tokens; labels on those tokens only, none for
    # pairs whose second frame is padding
    ids, labels, mask = inputs["input_ids"], inputs["labels"], inputs["attention_mask"].bool()
    is_action = tokens.is_action(ids) & mask
    assert (labels != -100).sum() == 4 * (~padded).sum()
    for i, (e, _) in enumerate(keys):
        np.testing.assert_array_equal(tokens.decode(ids[i][is_action[i]]).numpy(), batch["action_indices"][i].numpy())
        assert ids[i][is_action[i]].tolist() == ids[i][mask[i]][-4:].tolist()
        assert (labels[i] != -100).tolist() == (is_action[i] & bool(not padded[i])).tolist()
        prompt = tokenizer.decode(ids[i][mask[i] & ~is_action[i]], skip_special_tokens=True)
        assert prompt == f"What action should the robot take to move {e % 8} ?"
    assert (ids[~mask] == tokenizer.pad_token_id).all()


def test_the_script_runs_as_a_user_runs_it(dataset):
    run = subprocess.run([sys.executable, str(SCRIPT), "--lerobot", str(dataset), "--camera", CAMERAS[1]],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"36 pairs (t, t + 3) of {CAMERAS[1]}" in run.stdout
    assert re.search(r"loss on the action tokens: \d+\.\d{4}", run.stdout)


def script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=ENV, timeout=300,
                          cwd=cwd)


def test_the_defaults_run_offline_as_documented(tmp_path):
    """No input given: clips generated in a temporary folder, read as video files; nothing left behind."""
    run = script(cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "48 pairs (t, t + 3) of observation.image" in run.stdout  # 4 clips of 12 frames
    assert re.search(r"sample 0: 'What action should the robot take to move [a-z -]+\?' -> codes \[\d, \d, \d, \d\]",
                     run.stdout), run.stdout
    assert re.search(r"loss on the action tokens: \d+\.\d{4}", run.stdout)
    assert list(tmp_path.iterdir()) == []


def test_video_files_give_the_codes_of_lary_extract_videos(tmp_path, example):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i, (size, frames) in enumerate([(64, 10), (80, 7)]):  # two sizes, two lengths
        write_video(make_clip(i, num_frames=frames, size=size, seed=i).frames, folder / f"pick_cup_{i}.mkv")
    result = example.main(["--videos", str(folder / "*.mkv"), "--batch-size", "17"])
    batch, inputs, tokenizer, tokens = result["batch"], result["inputs"], result["tokenizer"], result["tokens"]
    sizes = {tuple(pair.shape) for pair in batch["observation.image"]}  # a list: the videos differ in size
    assert len(batch["observation.image"]) == 17 and sizes == {(2, 3, 64, 64), (2, 3, 80, 80)}

    out = tmp_path / "out"
    assert extract("--model", str(default_model()), "--videos", str(folder / "*.mkv"), "--stride", "3",
                   "--out", str(out)) == 0
    table = read_output(out)
    rows = {(i, t): codes for i, t, codes in zip(table.column("id").to_pylist(), table.column("frame_index").to_pylist(),
                                                 table.column("action_indices").to_pylist())}
    padded = batch["observation.image_is_pad"][:, 1].tolist()
    keys = list(zip(batch["episode_index"].tolist(), batch["frame_index"].tolist()))
    assert padded == [t + 3 >= (10, 7)[e] for e, t in keys] and not all(padded)
    for (e, t), codes, pad in zip(keys, batch["action_indices"].tolist(), padded):
        assert pad or codes == rows[(f"pick_cup_{e}.mkv", t)]
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    for i, (e, _) in enumerate(keys):  # the task: the file's name, _ as spaces
        prompt = tokenizer.decode(ids[i][mask[i] & ~tokens.is_action(ids[i])], skip_special_tokens=True)
        assert prompt == f"What action should the robot take to pick cup {e} ?"
    again = example.main(["--videos", str(folder / "pick_cup_1.mkv"), "--task", "stack the blocks"])
    assert set(again["batch"]["task"]) == {"stack the blocks"} and len(again["batch"]["task"]) == 7  # a pair per frame


def test_bad_input_is_one_line_and_the_help_says_every_default(tmp_path):
    offline = script("--lerobot", "lerobot/aloha_sim_insertion_human", "--stride", "15")
    assert offline.returncode == 2 and "Traceback" not in offline.stderr, offline.stderr
    assert offline.stderr.strip().splitlines() == [
        line for line in offline.stderr.strip().splitlines() if line.startswith("vla_pretraining_batch.py: error: ")]
    assert "vla_pretraining_batch.py: error: lerobot/aloha_sim_insertion_human: not a local folder" in offline.stderr
    missing = script("--videos", str(tmp_path / "*.mp4"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"vla_pretraining_batch.py: error: --videos {tmp_path}/*.mp4: no video file"
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    broken = script("--videos", str(tmp_path / "broken.mp4"))
    assert broken.returncode == 2 and broken.stderr.strip().splitlines()[-1].startswith(
        f"vla_pretraining_batch.py: error: {tmp_path / 'broken.mp4'}: ")
    assert len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    usage = script("--help")
    text = " ".join(usage.stdout.split())
    for said in ("--batch-size BATCH_SIZE pairs per batch", "(default: 8)", "--seed SEED seed of the batch order",
                 "--stride STRIDE k: the pairs are frames (t, t + k) (default: 3)"):
        assert said in text, usage.stdout


def test_the_doc_shows_the_script_s_own_lines():
    """Every line of docs/vla.md's code blocks that start `# examples/vla_pretraining_batch.py` is a line of the
    script, in the script's order."""
    doc = (REPO_ROOT / "docs" / "vla.md").read_text()
    script = [line.strip() for line in SCRIPT.read_text().splitlines()]
    blocks = [block for block in re.findall(r"```python\n(.*?)```", doc, re.S)
              if block.startswith("# examples/vla_pretraining_batch.py")]
    assert blocks
    for block in blocks:
        position = 0
        for line in filter(None, (line.strip() for line in block.splitlines()[1:])):
            assert line in script[position:], f"docs/vla.md shows {line!r}, which the script does not have (there)"
            position = script.index(line, position) + 1
