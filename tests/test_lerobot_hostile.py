"""LeRobot datasets a hostile or careless user gives to `lary extract --lerobot` and `lary export`: paths in
`meta/info.json` that climb out with `..` or are absolute, and files or folders that are symlinks to elsewhere. Each
is refused before anything is read from outside or written (exit code 2, one line naming the key and the path); an
export writes only under `--out` and never changes its source. A Hub cache snapshot, whose files are symlinks to
its repository's blobs, is read as any folder. A video whose frame rate is not `fps` is named with both rates."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lerobot_fixtures import CAMERAS, encode_video, synthetic_episodes, write_lerobot_dataset
from test_extract import ENV
from test_extract_runs import console
from test_lerobot import latent_rows, write_shards

from lary.cli import main as lary_main
from lary.errors import LaryError
from lary.frames import probe_video, read_video
from lary.lerobot import export_latent_actions, open_lerobot

VERSIONS = ("v3.0", "v2.1")
LENGTHS = {0: 8, 1: 6}
# where each version keeps episode 0's data file and top-camera video (v3.0: both episodes share them)
DATA = {"v3.0": "data/chunk-000/file-000.parquet", "v2.1": "data/chunk-000/episode_000000.parquet"}
VIDEO = {
    "v3.0": f"videos/{CAMERAS[0]}/chunk-000/file-000.mp4",
    "v2.1": f"videos/chunk-000/{CAMERAS[0]}/episode_000000.mp4",
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, Path]:
    """Per version, a dataset of two episodes and the latent actions of their pairs (t, t + 2)."""
    root = tmp_path_factory.mktemp("clean")
    datasets = {v: write_lerobot_dataset(root / v, v, synthetic_episodes(list(LENGTHS.values())), 10) for v in VERSIONS}
    return {**datasets, "latents": write_shards(latent_rows(LENGTHS, stride=2), root / "latents")}


def tree_state(folder: Path) -> dict[str, str]:
    """Every name under `folder` (symlinks not followed) and what it holds: a file's sha256, a link's target."""
    state = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            state[name] = "link to " + os.readlink(path)
        elif path.is_dir():
            state[name] = "folder"
        else:
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def set_template(root: Path, key: str, value: str) -> None:
    info_path = root / "meta/info.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), key: value}, indent=4))


def move_out(root: Path, relative: str, outside: Path) -> None:
    """`root/relative` moved to `outside/relative`."""
    (outside / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root / relative, outside / relative)


def hostile(clean: Path, work: Path, case: str) -> tuple[Path, str, str, str]:
    """A copy of `clean` in `work/ds` made hostile as `case` says, its files moved to `work/outside` (where they
    would be found if the paths were followed). Returns the dataset, the key and path its error must name, and how
    the path is wrong."""
    root, outside = shutil.copytree(clean, work / "ds"), work / "outside"
    info = json.loads((root / "meta/info.json").read_text())
    if case in ("data_path ..", "video_path .."):
        key = case.split()[0]
        folder = "data" if key == "data_path" else "videos"
        for path in [path for path in sorted((root / folder).rglob("*")) if path.is_file()]:
            move_out(root, path.relative_to(root).as_posix(), outside)
        set_template(root, key, "../outside/" + info[key])
        return root, key, "../outside/" + (DATA if key == "data_path" else VIDEO)[clean.name], "leads out of"
    if case == "absolute video_path":
        for path in sorted((root / "videos").rglob("*.mp4")):
            move_out(root, path.relative_to(root).as_posix(), outside)
        set_template(root, "video_path", f"{outside}/{info['video_path']}")
        return root, "video_path", f"{outside}/{VIDEO[clean.name]}", "is an absolute path"
    if case == "symlinked data file":
        move_out(root, DATA[clean.name], outside)
        (root / DATA[clean.name]).symlink_to(outside / DATA[clean.name])
        return root, "data_path", DATA[clean.name], r"leads out of .* \(through a symlink, to "
    assert case == "symlinked videos folder"
    shutil.move(root / "videos", outside / "videos")
    (root / "videos").symlink_to(outside / "videos")
    return root, "video_path", VIDEO[clean.name], r"leads out of .* \(through a symlink, to "


CASES = ("data_path ..", "video_path ..", "absolute video_path", "symlinked data file", "symlinked videos folder")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_paths_that_leave_the_dataset_are_refused(clean, tmp_path, version, case, monkeypatch, capsys):
    root, key, path, how = hostile(clean[version], tmp_path, case)
    before = tree_state(tmp_path)
    message = rf"{re.escape(str(root / 'meta/info.json'))}: {key}: {re.escape(repr(path))} {how}"
    no_model = str(tmp_path / "no-model")  # refused before the model would load
    code, error = console(["extract", "--model", no_model, "--lerobot", str(root), "--camera", CAMERAS[0], "--cpu",
                           "--out", str(tmp_path / "features")], monkeypatch, capsys)
    assert code == 2 and len(error.splitlines()) == 1 and re.match(rf"lary extract: error: {message}", error), error
    code, error = console(["export", "--lerobot", str(root), "--latent-actions", str(clean["latents"]),
                           "--out", str(tmp_path / "deep/a/exp")], monkeypatch, capsys)
    assert code == 2 and len(error.splitlines()) == 1 and re.match(rf"lary export: error: {message}", error), error
    assert tree_state(tmp_path) == before  # nothing written, nothing changed


def test_an_export_writes_only_under_out_and_changes_no_source(clean, tmp_path, monkeypatch):
    """The reported case: `data_path` `../outside/...` made export rewrite the file outside the dataset and, with
    `--out deep/a/exp`, create `deep/a/outside/data-000.parquet`. The work folder holds the source, what it points
    to and the parent of `--out`: a refused export leaves all of it as it was, a good one adds only `--out`."""
    root, _, path, _ = hostile(clean["v3.0"], tmp_path, "data_path ..")
    (tmp_path / "deep/a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    before = tree_state(tmp_path)
    export = [sys.executable, "-m", "lary", "export", "--lerobot", "ds", "--latent-actions", str(clean["latents"]),
              "--out", "deep/a/exp"]
    refused = subprocess.run(export, env=ENV, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr == (
        f"lary export: error: {Path('ds/meta/info.json')}: data_path: {path!r} leads out of ds\n"
    )
    assert tree_state(tmp_path) == before

    shutil.rmtree(root)
    shutil.copytree(clean["v3.0"], root)
    before = tree_state(tmp_path)
    assert lary_main(export[3:]) == 0
    after = tree_state(tmp_path)
    assert {name: state for name, state in after.items() if not name.startswith("deep/a/exp")} == before
    assert "deep/a/exp/data/chunk-000/file-000.parquet" in after
    assert open_lerobot(tmp_path / "deep/a/exp", camera=CAMERAS[0]).episodes[1].length == LENGTHS[1]


def test_an_unfinished_export_is_redone_and_a_folder_of_that_name_kept(clean, tmp_path):
    """`OUT.incomplete` is removed by a rerun only when a killed export left it (it holds its mark)."""
    theirs = tmp_path / "exp.incomplete"
    (theirs / "notes.txt").parent.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(LaryError, match=r"exp.incomplete exists and is not an unfinished export; move it"):
        export_latent_actions(clean["v2.1"], clean["latents"], tmp_path / "exp")
    assert (theirs / "notes.txt").read_text() == "mine"
    (theirs / ".lary-export-unfinished").touch()  # as a killed export leaves it
    out = export_latent_actions(clean["v2.1"], clean["latents"], tmp_path / "exp")
    assert not theirs.exists() and not (out / ".lary-export-unfinished").exists() and not (out / "notes.txt").exists()


def test_a_hub_cache_snapshot_links_to_its_blobs_and_nowhere_else(clean, tmp_path):
    """As huggingface_hub stores a download: `snapshots/<commit>/<file>` a relative symlink to `blobs/<hash>`."""
    repo = tmp_path / "hub" / "datasets--someone--robot"
    snapshot = repo / "snapshots" / ("0" * 40)
    for path in sorted(clean["v3.0"].rglob("*")):
        if path.is_file():
            blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(clean["v3.0"])
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    dataset = open_lerobot(snapshot, camera=CAMERAS[0])
    assert dataset.read_episode(dataset.episodes[1]).length == LENGTHS[1]
    out = export_latent_actions(snapshot, clean["latents"], tmp_path / "exp")
    assert not (out / "meta/info.json").is_symlink() and json.loads((out / "meta/info.json").read_text())["fps"] == 10

    elsewhere = tmp_path / "elsewhere.parquet"
    shutil.copyfile(snapshot / "meta/tasks.parquet", elsewhere)
    (snapshot / "meta/tasks.parquet").unlink()
    (snapshot / "meta/tasks.parquet").symlink_to(elsewhere)
    refusal = r"a file of the dataset: 'meta/tasks.parquet' leads out of .* \(through a symlink, to "
    with pytest.raises(LaryError, match=refusal):
        export_latent_actions(snapshot, clean["latents"], tmp_path / "exp2")


@pytest.mark.parametrize("version", VERSIONS)
def test_an_fps_that_is_not_the_video_s_is_named(clean, tmp_path, version):
    """info.json says 10 frames a second; the videos were encoded at 5: each row's frame is not where its timestamp
    says, and the error names both rates and the files."""
    root = shutil.copytree(clean[version], tmp_path / "ds")
    for video in sorted(root.glob("videos/**/*.mp4")):
        encode_video(read_video(video), video, fps=5)
    dataset = open_lerobot(root, camera=CAMERAS[0])
    episode = dataset.read_episode(dataset.episodes[0])
    rates = re.escape(f"({root / 'meta/info.json'} says fps 10; the video has 5 frames per second)")
    with pytest.raises(LaryError, match=rf"episode 0: .*{re.escape(str(episode.video_file))}.* {rates}$"):
        dataset.frame_positions(episode, probe_video(episode.video_file).times)
