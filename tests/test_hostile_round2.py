"""The second sweep of hostile and careless inputs (issue 30): an `--out` that is the user's folder or lies inside the
source, image paths of a dataset that leave it, weights that do not fit their config (refused before the model is
allocated), and the smaller cases (damaged run records, odd CLI values, files that are not what they claim). Each ends
in one line (exit code 2) or an `errors.jsonl` entry, and loses nothing of the user's."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from lary_tree import write_clip
from lerobot_fixtures import CAMERAS, synthetic_episodes, write_lerobot_dataset
from test_extract import ENV, TINY_BACKBONE, extract, read_manifest, read_output, save_tiny_model
from PIL import Image
from safetensors.torch import load_file, save_file
from test_lerobot_hostile import tree_state
from transformers import AutoModel, DINOv3ViTConfig, DINOv3ViTModel

from lary import cli
from lary.errors import LaryError, NoSpaceError
from lary.extract.labels import Labels
from lary.extract.lock import OutputLock
from lary.hub import EMBEDDED_MODEL, export, load_pretrained


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    write_clip(folder / "a.mp4", num_frames=4)
    write_clip(folder / "b.mp4", num_frames=5)
    return folder


def write_frames(folder: Path, count: int, size: int = 32) -> Path:
    folder.mkdir(parents=True)
    for index in range(count):
        Image.new("RGB", (size, size), (index * 40, 100, 0)).save(folder / f"{index}.png")
    return folder


def write_dataset(folder: Path, pairs: list[tuple[str, str]]) -> Path:
    """A dataset folder of frame pairs whose Image values hold only paths (`bytes` None), as `datasets` stores images
    it did not embed; `a.png` and `b.png` exist in it."""
    write_frames(folder / "frames", 2)
    for index, name in enumerate(("a.png", "b.png")):
        shutil.move(folder / "frames" / f"{index}.png", folder / name)
    features = datasets.Features(id=datasets.Value("string"), source_image=datasets.Image(), target_image=datasets.Image())
    rows = datasets.Dataset.from_dict({
        "id": [f"row{index}" for index in range(len(pairs))],
        "source_image": [{"bytes": None, "path": first} for first, _ in pairs],
        "target_image": [{"bytes": None, "path": second} for _, second in pairs],
    }, features=features)
    pq.write_table(rows.data.table, folder / "validation.parquet")  # as they are: `to_parquet` would read the paths
    return folder


def run(model: Path, videos: Path, out: Path, *more: str) -> int:
    return extract("--model", str(model), "--videos", str(videos / "*.mp4"), "--out", str(out), "--num-workers", "0",
                   "--shard-size", "4", *more)


def refused(match: str, *args: str) -> str:
    """`lary extract ARGS` refused on one line matching `match`; the line."""
    with pytest.raises(LaryError, match=match) as error:
        extract(*args, "--num-workers", "0")
    assert "\n" not in str(error.value)
    return str(error.value)


# --- item 3: an --out that is not ours ------------------------------------------------------------------------------

def test_a_folder_that_is_not_an_extraction_is_refused_and_left_as_it_was(tmp_path, tiny_model, videos):
    """The user's draft, errors and manifest, and valid shard files of another run (without its run.json): nothing
    is removed, overwritten, adopted, nor is a lock file added."""
    other = tmp_path / "other"
    assert run(tiny_model, videos, other) == 0
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / ".draft.tmp").write_text("my notes")
    (theirs / "errors.jsonl").write_text('{"mine": 1}\n')
    (theirs / "manifest.json").write_text('{"my": "manifest"}')
    for path in other.glob("shard-*"):
        shutil.copy(path, theirs / path.name)
    before = tree_state(theirs)
    refused(r"--out \S+/theirs holds files lary extract did not write \(\.draft\.tmp, errors\.jsonl, manifest\.json "
            r"and \d+ more\) and no run\.json of a lary extract run: choose a new or empty folder",
            "--model", str(tiny_model), "--videos", str(videos / "*.mp4"), "--out", str(theirs), "--shard-size", "4")
    assert tree_state(theirs) == before and not (theirs / ".lock").exists()
    (theirs / "run.json").write_text('{"experiment": "mine"}')  # a run.json of the user's is not ours either
    refused(r"theirs: run\.json is not the record of a lary extract run", "--model", str(tiny_model),
            "--videos", str(videos / "*.mp4"), "--out", str(theirs))


def test_shards_of_another_run_in_our_folder_are_never_taken_for_done(tmp_path, tiny_model, videos):
    """Our folder, its shards replaced by those of a run of another model (same names, valid files): refused,
    naming the file; the user's own files beside ours survive a rerun, our leftovers do not."""
    other_model = Path(shutil.copytree(tiny_model, tmp_path / "other_model"))
    weights = load_file(other_model / "model.safetensors")
    weights["quantizer.codebook"] = weights["quantizer.codebook"].flip(0)
    save_file(weights, other_model / "model.safetensors", metadata={"format": "pt"})
    ours, other = tmp_path / "ours", tmp_path / "other"
    assert run(tiny_model, videos, ours) == 0 and run(other_model, videos, other) == 0
    (ours / ".draft.tmp").write_text("my notes")
    (ours / ".shard-00000-of-00002.parquet.12345.tmp").write_text("a killed run's leftover")
    assert run(tiny_model, videos, ours) == 0  # everything already extracted
    assert (ours / ".draft.tmp").read_text() == "my notes" and not (ours / ".shard-00000-of-00002.parquet.12345.tmp").exists()
    for path in ours.glob("shard-00001-*"):
        path.unlink()
    for path in other.glob("shard-00001-*"):
        shutil.copy(path, ours / path.name)
    other_run = json.loads((other / "shard-00001-of-00002.json").read_text())["run"]
    refused(rf"shard-00001-of-00002\.parquet was not written by the run run\.json records \(its sidecar names run "
            rf"'{other_run}', this folder's is '\w+'\)", "--model", str(tiny_model), "--videos", str(videos / "*.mp4"),
            "--out", str(ours))


@pytest.mark.parametrize("damage", ["run.json", "plan.json"])
def test_a_damaged_run_record_is_refused_on_one_line(tmp_path, tiny_model, videos, damage):
    out = tmp_path / "out"
    assert run(tiny_model, videos, out) == 0
    text = (out / damage).read_text()
    (out / damage).write_text(text[: len(text) // 2])
    refused(rf"{damage} (cannot be read|is damaged)", "--model", str(tiny_model), "--videos", str(videos / "*.mp4"),
            "--out", str(out))
    (out / damage).write_text("[1, 2]")
    refused(rf"{damage} is (not the record of a lary extract run|damaged)", "--model", str(tiny_model),
            "--videos", str(videos / "*.mp4"), "--out", str(out))


def test_a_run_refused_while_planning_leaves_no_lock_nor_folder_of_its_own(tmp_path, tiny_model, videos, monkeypatch):
    """The disk fills while the plan is written (some bytes of it, then ENOSPC): the folders the run made are removed,
    an empty folder the user made stays (empty), and a lock file the run did not create (the previous run's, another
    live run's) stays."""
    write_text = Path.write_text

    def disk_full(path: Path, text: str, *args, **kwargs) -> int:
        if not path.name.startswith(".plan.json."):
            return write_text(path, text, *args, **kwargs)
        write_text(path, text[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", disk_full)
        with pytest.raises(NoSpaceError):
            run(tiny_model, videos, tmp_path / "new" / "deeper" / "out")
        assert not (tmp_path / "new").exists()
        (tmp_path / "empty").mkdir()
        with pytest.raises(NoSpaceError):
            run(tiny_model, videos, tmp_path / "empty")
        assert list((tmp_path / "empty").iterdir()) == []

    ours = tmp_path / "ours"
    assert run(tiny_model, videos, ours) == 0
    before = tree_state(ours)
    refused(r"was planned with --shard-size 4, not 3", "--model", str(tiny_model), "--videos", str(videos / "*.mp4"),
            "--out", str(ours), "--shard-size", "3")
    after = tree_state(ours)
    assert ".lock" in after and {**after, ".lock": ""} == {**before, ".lock": ""}  # the previous run's lock file

    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; d = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.lockf(d, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(ours / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        refused(r"is being written by another run", "--model", str(tiny_model), "--videos", str(videos / "*.mp4"),
                "--out", str(ours))
        assert (ours / ".lock").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_removed_by_a_refused_run_while_another_opened_it_is_not_the_lock_held(tmp_path):
    """Run B opens `.lock` just before refused run A removes it (A still holding it): B, locking what is no longer
    the file at the path, opens the path again, so a third run would find B's lock rather than a new file."""
    first, second = OutputLock(tmp_path), OutputLock(tmp_path)
    first.acquire()
    assert first.created
    opened = second._open

    def open_then_first_discards() -> int:
        descriptor = opened()
        if first.descriptor is not None:
            first.discard()
        return descriptor

    second._open = open_then_first_discards
    second.acquire()
    try:
        assert (tmp_path / ".lock").exists() and second.created
        assert os.path.samestat(os.fstat(second.descriptor), os.stat(tmp_path / ".lock"))
    finally:
        second.discard()
    assert not (tmp_path / ".lock").exists()


# --- item 4: an --out inside the source -----------------------------------------------------------------------------

def test_an_out_inside_a_lerobot_dataset_is_refused_symlinks_resolved(tmp_path, tiny_model):
    root = write_lerobot_dataset(tmp_path / "dataset", "v3.0", synthetic_episodes([4]), 10)
    (tmp_path / "into_meta").symlink_to(root / "meta")
    before = tree_state(root)
    for out, shown in ((root, ""), (root / "data" / "chunk-000", ""), (tmp_path / "into_meta" / "features", "resolves to")):
        line = refused(r"is inside the LeRobot dataset \S+/dataset", "--model", str(tiny_model), "--lerobot", str(root),
                       "--camera", CAMERAS[0], "--out", str(out))
        assert shown in line
    assert tree_state(root) == before


def test_an_out_inside_an_image_folder_or_a_dataset_or_among_the_videos_is_refused(tmp_path, tiny_model, videos):
    frames = write_frames(tmp_path / "frames", 3)
    refused(r"features is inside the image folder \S+/frames", "--model", str(tiny_model), "--images", str(frames),
            "--out", str(frames / "features"))
    refused(r"is the folder of the input videos", "--model", str(tiny_model), "--videos", str(videos / "a.mp4"),
            "--out", str(videos))
    dataset = write_dataset(tmp_path / "dataset", [("a.png", "b.png")])
    refused(r"is inside the dataset \S+/dataset", "--model", str(tiny_model), "--dataset", str(dataset),
            "--out", str(dataset / "features"))


# --- item 5: a dataset's image paths stay inside it -----------------------------------------------------------------

def test_image_paths_of_a_dataset_are_read_inside_its_folder_only(tmp_path, tiny_model, monkeypatch):
    """Relative paths against the dataset's folder (not the working directory, which holds other files of those
    names); absolute ones, `..` and a symlink out of the folder are that row's error, naming the path."""
    secret = write_frames(tmp_path / "elsewhere", 1)
    (secret / "a.png").write_bytes(b"not an image: the dataset's a.png is another file")
    dataset = write_dataset(tmp_path / "dataset", [("a.png", "b.png"), (str(secret / "0.png"), "b.png"),
                                                   ("../elsewhere/0.png", "a.png"), ("link.png", "a.png")])
    (dataset / "link.png").symlink_to(secret / "0.png")
    monkeypatch.chdir(secret)  # its a.png is not the dataset's (and not an image)
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--dataset", str(dataset), "--out", str(out), "--num-workers", "0") == 1
    assert read_output(out).column("id").to_pylist() == ["row0"]
    reasons = [json.loads(line)["reason"] for line in (out / "errors.jsonl").read_text().splitlines()]
    assert len(reasons) == 3
    assert "is an absolute path; it must be relative to" in reasons[0]
    assert "'../elsewhere/0.png' leads out of" in reasons[1]
    assert "'link.png' leads out of" in reasons[2] and "through a symlink" in reasons[2]


# --- item 7: weights checked against the config before the model is allocated ---------------------------------------

HUGE_BACKBONE = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 20, "num_attention_heads": 16}


def test_a_huge_config_beside_a_tiny_weights_file_is_refused_before_anything_is_allocated(tmp_path):
    """A 1-billion-parameter config with a weights file of a few kB: refused from the headers, naming the keys, in a
    fraction of a second and without the 4 GB the model would take (measured in a process of its own)."""
    folder = Path(shutil.copytree(EMBEDDED_MODEL, tmp_path / "huge"))
    config = json.loads((folder / "config.json").read_text())
    config["backbone_config"].update(HUGE_BACKBONE)
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(folder / "model.safetensors")
    save_file({key: weights[key] for key in ("quantizer.codebook", "backbone.embeddings.cls_token")},
              folder / "model.safetensors", metadata={"format": "pt"})
    assert (folder / "model.safetensors").stat().st_size < 8192
    code = f"""
import re, time
from transformers import AutoModel
from lary import cli  # everything the command line imports, counted in the peak
from lary.errors import LaryError
from lary.hub import load_pretrained
start = time.perf_counter()
try:
    load_pretrained(AutoModel, {str(folder)!r}, "--model")
except LaryError as error:
    # VmHWM: this process image's own peak (ru_maxrss keeps the peak of the large process that forked it: the suite)
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    print(round(time.perf_counter() - start, 3), peak_kb // 1024, error)
"""
    seconds, peak_mb, line = subprocess.run([sys.executable, "-c", code], env=ENV, check=True, capture_output=True,
                                            text=True, timeout=300).stdout.strip().split(" ", 2)
    assert re.match(rf"--model {folder}: missing weights backbone\.\S+, .* and \d+ more; mis-shaped weights "
                    r"backbone\.embeddings\.cls_token \(checkpoint \(1, 1, 64\), model \(1, 1, 2048\)\); its weights "
                    r"do not fit its config\.json$", line), line
    assert float(seconds) < 2 and int(peak_mb) < 1500, (seconds, peak_mb)


def test_a_sharded_model_whose_index_leads_out_of_its_folder_is_refused(tmp_path):
    folder = Path(shutil.copytree(EMBEDDED_MODEL, tmp_path / "sharded"))
    (folder / "model.safetensors").rename(tmp_path / "outside.safetensors")
    keys = load_file(tmp_path / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {key: "../outside.safetensors" for key in keys}}))
    with pytest.raises(LaryError, match=r"model\.safetensors\.index\.json: weight_map: '\.\./outside\.safetensors' leads out"):
        load_pretrained(AutoModel, folder, "--model")


def test_a_config_json_that_is_a_list_is_named(tmp_path):
    folder = Path(shutil.copytree(EMBEDDED_MODEL, tmp_path / "listed"))
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(LaryError, match=r"--model \S+listed: config\.json holds a JSON list, not an object$"):
        load_pretrained(AutoModel, folder, "--model")


def test_train_checks_a_backbone_folder_s_sizes_before_loading_it(tmp_path):
    """A DINOv3 folder whose config asks for absurd sizes: refused from its config, naming the value, before its
    weights are read or anything is allocated."""
    folder = tmp_path / "dinov3"
    DINOv3ViTModel(DINOv3ViTConfig(**TINY_BACKBONE)).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 10**7}))
    start = time.perf_counter()
    with pytest.raises(LaryError, match=rf"{folder}: backbone_config\.hidden_size=10000000 is out of range"):
        cli.main(["train", "--backbone", str(folder), "--data", "synthetic:2", "--steps", "1", "--cpu",
                  "--out", str(tmp_path / "trained")])
    assert time.perf_counter() - start < 5 and not (tmp_path / "trained").exists()


# --- item 11 and issue 32 item 8: the smaller cases -----------------------------------------------------------------

def test_labels_with_only_a_header_or_a_frame_index_beyond_int64_are_named(tmp_path):
    (tmp_path / "header.csv").write_text("id,label\n")
    with pytest.raises(LaryError, match=r"header\.csv has no rows \(columns: \['id', 'label'\]\)$"):
        Labels(tmp_path / "header.csv")
    (tmp_path / "huge.csv").write_text("id,frame_index,x\na.mp4,0,1.0\na.mp4,99999999999999999999,2.0\n")
    with pytest.raises(LaryError, match=r"huge\.csv, line 3, column 'frame_index': '99999999999999999999' is not a "
                                        r"frame index \(an integer in 0 \.\. 9007199254740991\)$"):
        Labels(tmp_path / "huge.csv")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--stride-seconds", "inf", "argument --stride-seconds: 'inf' is not a finite number"),
    ("--stride-seconds", "nan", "argument --stride-seconds: 'nan' is not a finite number"),
    ("--out", "", "argument -o/--out: an empty path"),
])
def test_values_that_pass_for_numbers_or_paths_are_refused_by_the_parser(tmp_path, videos, option, value, message, capsys):
    args = {"--model": "m", "--videos": str(videos / "a.mp4"), "--out": str(tmp_path / "out"), option: value}
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["extract", *[text for pair in args.items() for text in pair]])
    assert exit_code.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == f"lary extract: error: {message}"
    assert not (tmp_path / "out").exists() and not list(Path.cwd().glob("shard-*"))


def test_a_dataset_folder_without_data_files_is_named(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    refused(r"empty: no data files \(and no `configs:` in README\.md naming them\)$", "--model", str(tiny_model),
            "--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))


class Payload:
    """What a pickle may carry besides tensors (never unpickled)."""


def test_a_file_that_is_not_a_checkpoint_is_named_without_suggesting_the_unsafe_load(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    torch.save({"model": Payload()}, tmp_path / "object.pt")
    for name, match in (("notes.pt", r"notes\.pt is not a PyTorch checkpoint, or is damaged \(\w+\)$"),
                        ("object.pt", r"object\.pt holds a Python object \(\S*Payload\) besides tensors, which lary "
                                      r"never unpickles: not a training checkpoint of tensors$")):
        with pytest.raises(LaryError, match=match) as error:
            cli.main(["convert", str(tmp_path / name), "--out", str(tmp_path / "converted")])
        assert "weights_only" not in str(error.value) and not (tmp_path / "converted").exists()
    (tmp_path / "taken").write_text("a file of the user's")
    with pytest.raises(LaryError, match=r"--out \S+taken is a file, not a folder"):
        cli.main(["convert", str(tmp_path / "object.pt"), "--out", str(tmp_path / "taken")])
    assert (tmp_path / "taken").read_text() == "a file of the user's"


def test_an_exported_model_s_weights_are_readable_as_the_umask_allows(tmp_path):
    """`lary convert` and `lary train` write through `lary.hub.export`: transformers leaves the weights 0600."""
    model = AutoModel.from_pretrained(EMBEDDED_MODEL)
    old = os.umask(0o022)
    try:
        export(model, tmp_path / "shared")
        os.umask(0o027)
        export(model, tmp_path / "group")
    finally:
        os.umask(old)
    assert (tmp_path / "shared" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "group" / "model.safetensors").stat().st_mode & 0o777 == 0o640


def test_the_manifest_records_only_the_options_that_apply(tmp_path, tiny_model, videos):
    out = tmp_path / "out"
    assert run(tiny_model, videos, out, "--stride-seconds", "0.2") == 0  # 2 frames at 10 fps
    arguments = read_manifest(out)["arguments"]
    assert arguments["stride_seconds"] == 0.2 and "stride" not in arguments and "split" not in arguments
    assert None not in arguments.values() and read_manifest(out)["split"] is None


def test_a_named_pipe_or_a_gif_among_the_frames_is_that_folder_s_error(tmp_path, tiny_model):
    """A pipe named like a frame is refused without being opened (opening it blocked the planning for ever); a .gif
    among PNG frames is named, not skipped (the frames after it would have been renumbered). Other folders run."""
    good = write_frames(tmp_path / "good", 3)
    piped = write_frames(tmp_path / "piped", 3)
    os.mkfifo(piped / "1b.png")
    animated = write_frames(tmp_path / "animated", 3)
    Image.new("RGB", (32, 32)).save(animated / "1.gif")
    out = tmp_path / "out"
    command = subprocess.run([sys.executable, "-m", "lary", "extract", "--model", str(tiny_model), "--images",
                              str(good), str(piped), str(animated), "--out", str(out), "--num-workers", "0", "--cpu"],
                             env=ENV, capture_output=True, text=True, timeout=300)  # a pipe opened would hang here
    assert command.returncode == 1, command.stderr
    assert read_output(out).column("id").to_pylist() == ["good", "good"]
    reasons = {entry["id"]: entry["reason"] for entry in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert reasons["piped"] == f"{piped / '1b.png'}: not a regular file (a named pipe, a device or a folder): not read"
    assert reasons["animated"].startswith(f"{animated / '1.gif'}: a .gif image among the frames")


def test_an_existing_file_named_like_a_glob_is_that_file(tmp_path, tiny_model):
    write_clip(tmp_path / "videos" / "clip[1].mp4", num_frames=4)
    write_clip(tmp_path / "videos" / "clip1.mp4", num_frames=6)  # what the glob `clip[1].mp4` matches
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--videos", str(tmp_path / "videos" / "clip[1].mp4"), "--out", str(out),
                   "--num-workers", "0") == 0
    assert read_output(out).column("id").to_pylist() == ["clip[1].mp4"] * 3
    assert read_manifest(out)["arguments"]["videos"] == [str(tmp_path / "videos" / "clip[1].mp4")]


def write_timed_video(path: Path, times_ms: list[int], rate: int = 30) -> Path:
    """An MP4 whose frame `i` is shown at `times_ms[i]` (a variable frame rate when they are not evenly spaced)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = time_ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_stride_seconds_refuses_a_variable_frame_rate_video(tmp_path, tiny_model):
    """Frames 33 ms apart, then 100 ms, then 33 ms: no k frames are 0.2 s throughout (the header's rate, 18.75 fps
    here, would have been trusted)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_timed_video(videos / "phone.mp4", [0, 33, 67, 100, 200, 300, 400, 433, 467, 500])
    write_timed_video(videos / "steady.mp4", [round(index * 1000 / 30) for index in range(10)])
    refused(rf"--stride-seconds 0\.2: {videos}/phone\.mp4 has a variable frame rate \(frames 33\.\d to 100\.\d ms "
            r"apart; its header says [\d.]+ fps\), so no number of frames is 0\.2 s throughout: give --stride in frames",
            "--model", str(tiny_model), "--videos", str(videos / "*.mp4"), "--stride-seconds", "0.2",
            "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused when planning: the folder it made, and its lock, removed
    out = tmp_path / "steady"
    assert extract("--model", str(tiny_model), "--videos", str(videos / "steady.mp4"), "--stride-seconds", "0.2",
                   "--out", str(out), "--num-workers", "0") == 0
    assert read_manifest(out)["stride"] == 6 and read_output(out).num_rows == 4


def test_convert_names_a_backbone_whose_config_json_is_a_list(tmp_path):
    torch.save({"model": {"vq.codebooks": torch.zeros(8, 32)}}, tmp_path / "laq.pt")
    (tmp_path / "backbone").mkdir()
    (tmp_path / "backbone" / "config.json").write_text("[]")
    with pytest.raises(LaryError, match=r"--backbone \S+backbone: config\.json holds a JSON list, not an object$"):
        cli.main(["convert", str(tmp_path / "laq.pt"), "--backbone", str(tmp_path / "backbone"),
                  "--out", str(tmp_path / "converted")])
    assert not (tmp_path / "converted").exists()
