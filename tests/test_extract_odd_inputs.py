"""`lary extract` on inputs a careless or hostile user gives: a file name that is not UTF-8, symlink loops and links,
an input of the wrong kind, an image named like a video, 16-bit and truncated images. A bad item never stops the good
ones: it is refused before the model loads (the wrong kind of input) or recorded in `errors.jsonl` (exit code 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lary_tree import write_clip
from PIL import Image
from test_extract import ENV, extract, read_manifest, read_output, save_tiny_model

from lary.errors import LaryError
from lary.extract.sources import VideoSource
from lary.synthetic import make_clip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def errors_of(out: Path) -> dict[str, str]:
    """`errors.jsonl` as {id: reason}, after checking it is UTF-8 text (no lone surrogates)."""
    text = (out / "errors.jsonl").read_bytes().decode("utf-8", "strict")
    reasons = {entry["id"]: entry["reason"] for entry in map(json.loads, text.splitlines())}
    "".join([*reasons, *reasons.values()]).encode("utf-8", "strict")  # raises on a lone surrogate
    return reasons


def test_a_name_that_is_not_utf8_keeps_its_bytes_in_its_id_and_stops_nothing(tmp_path, tiny_model):
    videos = tmp_path / "videos"
    write_clip(videos / "a.mp4", num_frames=4)
    write_clip(videos / "b.mp4", num_frames=5)
    folder = os.fsencode(videos)
    with open(folder + b"/nonutf8_\xff\xfe.mp4", "wb") as copy:
        copy.write((videos / "a.mp4").read_bytes())
    with open(folder + b"/broken_\xff.mp4", "wb") as broken:
        broken.write(b"not a video")
    # the id's text, `\xNN` for each byte that is not UTF-8, keys the labels file like any other id
    pd.DataFrame({"id": ["a.mp4", "b.mp4", "nonutf8_\\xff\\xfe.mp4", "broken_\\xff.mp4"], "label": [0, 1, 1, 0]}).to_csv(
        tmp_path / "labels.csv", index=False)
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--videos", str(videos / "*.mp4"), "--labels", str(tmp_path / "labels.csv"),
                   "--out", str(out)) == 1  # one unreadable file: the others' rows are all there
    table = read_output(out)
    ids = table.column("id").to_pylist()
    assert ids == ["a.mp4"] * 3 + ["b.mp4"] * 4 + ["nonutf8_\\xff\\xfe.mp4"] * 3
    assert table.column("label").to_pylist() == [0] * 3 + [1] * 7
    assert table.column("action_indices").to_pylist()[:3] == table.column("action_indices").to_pylist()[7:]  # same bytes
    reasons = errors_of(out)
    assert list(reasons) == ["broken_\\xff.mp4"]
    assert reasons["broken_\\xff.mp4"].startswith(f"{videos}/broken_\\xff.mp4: unreadable video")
    assert read_manifest(out)["rows"] == 10


def test_a_symlink_loop_ends_and_links_are_samples_named_as_given(tmp_path):
    """`**` follows a link to a folder once: `self -> .` and `up -> ..` list nothing twice (Python's glob follows them
    until the path is too long: hours). Links to one file are samples of their own, named by the link, not the target."""
    loop = tmp_path / "loop"
    write_clip(loop / "x.mp4", num_frames=3)
    write_clip(loop / "sub" / "y.mp4", num_frames=3)
    (loop / "self").symlink_to(".")
    (loop / "sub" / "up").symlink_to("..")
    links = tmp_path / "links"
    links.mkdir()
    for name in ("first.mp4", "second.mp4"):
        (links / name).symlink_to(loop / "x.mp4")
    out = tmp_path / "out"
    model = save_tiny_model(tmp_path / "model")
    subprocess.run([sys.executable, "-m", "lary", "extract", "--model", str(model), "--videos", str(loop / "**" / "*.mp4"),
                    str(links / "*.mp4"), "--num-workers", "0", "--cpu", "--out", str(out)],
                   env=ENV, check=True, capture_output=True, timeout=180)  # a loop followed would run for hours
    table = read_output(out)
    assert sorted(set(table.column("id").to_pylist())) == ["links/first.mp4", "links/second.mp4", "loop/sub/y.mp4", "loop/x.mp4"]
    assert table.num_rows == 4 * 2


def test_inputs_of_the_wrong_kind_are_refused_before_the_model_loads(tmp_path):
    write_clip(tmp_path / "videos" / "a.mp4", num_frames=3)
    (tmp_path / "videos" / "folder.mp4").mkdir()
    no_model = str(tmp_path / "no-model")  # the model would fail to load: each input error comes first
    cases = {
        ("--videos", str(tmp_path / "videos")): r"--videos \S+/videos is a folder, not a video file: give its files, "
                                                r"e.g. '\S+/videos/\*.mp4'",
        ("--videos", str(tmp_path / "videos" / "b.mp4")): r"--videos \S+/b.mp4 does not exist",
        ("--videos", str(tmp_path / "videos" / "*.mkv")): r"matches no file",
        ("--videos", str(tmp_path / "videos" / "f*")): r"matches only folders \(\S+/folder.mp4, ...\), no video files",
        ("--images", str(tmp_path / "videos" / "a.mp4")): r"--images \S+/a.mp4 is a file, not a folder of image files",
        ("--images", str(tmp_path / "frames")): r"--images \S+/frames does not exist",
        ("--videos", str(tmp_path / "videos" / "a.mp4"), "--labels", str(tmp_path / "videos")): r"--labels \S+ is not a file",
    }
    for arguments, message in cases.items():
        with pytest.raises(LaryError, match=message):
            extract("--model", no_model, *arguments, "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # a glob's folders are skipped, its files kept
    assert [path.name for path in VideoSource([str(tmp_path / "videos" / "*")]).paths] == ["a.mp4"]


def test_an_image_named_like_a_video_and_broken_images_fail_alone(tmp_path, tiny_model):
    frames = make_clip(3, num_frames=4, size=32, seed=1).frames
    videos = tmp_path / "videos"
    write_clip(videos / "a.mp4", num_frames=3)
    Image.fromarray(frames[0]).save(videos / "photo.mp4", format="PNG")
    out = tmp_path / "videos-out"
    assert extract("--model", str(tiny_model), "--videos", str(videos / "*.mp4"), "--out", str(out)) == 1
    assert read_output(out).column("id").to_pylist() == ["a.mp4"] * 2
    assert errors_of(out)["photo.mp4"] == f"{videos / 'photo.mp4'}: a PNG image, not a video"

    # 16-bit grey frames are read as their high byte (as OpenCV does), not clipped to white: the rows of their 8-bit
    # copy; a truncated frame fails its folder alone
    grey = frames[..., 0].astype(np.uint16) * 257 + np.arange(32, dtype=np.uint16)  # low bytes that must not matter
    folders = {name: tmp_path / "frames" / name for name in ("deep", "eight", "truncated")}
    for index, frame in enumerate(grey):
        for name, image in (("deep", Image.fromarray(frame)), ("eight", Image.fromarray((frame >> 8).astype(np.uint8))),
                            ("truncated", Image.fromarray(frames[index]))):
            folders[name].mkdir(parents=True, exist_ok=True)
            image.save(folders[name] / f"frame_{index}.png")
    assert Image.open(folders["deep"] / "frame_0.png").mode == "I;16"
    last = folders["truncated"] / "frame_3.png"
    last.write_bytes(last.read_bytes()[:-200])
    out = tmp_path / "frames-out"
    assert extract("--model", str(tiny_model), "--images", *map(str, folders.values()), "--batch-size", "1",
                   "--out", str(out)) == 1
    table = read_output(out)
    deep, eight = (table.filter(np.array(table.column("id").to_pylist()) == name) for name in ("deep", "eight"))
    assert deep.num_rows == eight.num_rows == 3
    assert deep.drop(["id"]).equals(eight.drop(["id"]))
    assert table.column("id").to_pylist().count("truncated") == 2  # the windows before the broken frame are kept
    reason = errors_of(out)["truncated"]
    assert reason.startswith(f"{last}: unreadable image (") and "truncated" in reason
