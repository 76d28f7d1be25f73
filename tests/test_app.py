"""`lary app`: the page's functions through `gradio_client` against a launched app, bad input as readable messages
(and the app serving on), the downloads equal to `lary extract`'s rows. The browser test (`test_app_browser.py`)
runs the command line's server."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tomllib
import torch
import yaml
from app_server import served_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from packaging.requirements import Requirement
from PIL import Image
from transformers import AutoModel

from lary.app.analysis import Analysis, Analyzer, frame_range, pair_table, parse_codes, read_clip
from lary.app.limits import Limits
from lary.app.page import STATE_SESSIONS, _intro
from lary.app.sessions import SessionStore
from lary.cli import main as lary_main
from lary.errors import LaryError
from lary.extract import rows
from lary.frames import load_processor
from lary.hub import default_model, export
from lary.synthetic import make_clip, write_video

LIMITS = Limits(max_frames=24, max_pixels=160 * 160, max_file_mb=1)
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("videos")
    (folder / "not_a_video.mp4").write_text("a text file with a video's name\n")
    (folder / "huge.mp4").write_bytes(os.urandom(2 * LIMITS.max_file_mb * 2**20))
    clip = write_video(make_clip(0, num_frames=30, size=128, seed=1).frames, folder / "clip.mp4")
    (folder / "truncated.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # its index (moov) is lost
    return {
        "clip": clip,
        "truncated": folder / "truncated.mp4",
        "one_frame": write_video(make_clip(0, num_frames=1, size=64).frames, folder / "one_frame.mp4"),
        "big_frames": write_video(make_clip(0, num_frames=3, size=192).frames, folder / "big_frames.mkv"),
        "not_a_video": folder / "not_a_video.mp4",
        "huge": folder / "huge.mp4",
    }


@pytest.fixture(scope="module")
def app():
    with served_app(LIMITS) as served:
        yield served


def client(app) -> Client:
    """A new visitor (its own session)."""
    return Client(app.url, verbose=False, analytics_enabled=False)


def assert_picture(path: str, min_width: int = 400) -> None:
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] >= min_width and image.std() > 20, f"{path}: {image.shape}, std {image.std():.1f}"


def test_extract_what_if_and_downloads_through_the_client(app, videos):
    visitor = client(app)
    summary, timeline, histogram, usage, files, pair, codes, source = visitor.predict(
        handle_file(videos["clip"]), 2, 0, 0, api_name="/extract"
    )
    # the open range is cut to the 24-frame limit, with a note saying so
    assert "Frames 0 to 23, stride 2: **22 pairs**" in summary and "at most 24 per request" in summary
    for picture in (timeline, histogram, usage):
        assert_picture(picture)
    parquet = pq.read_table(next(path for path in files if path.endswith(".parquet")))
    assert parquet.schema.equals(rows.pair_schema(rows.latent_action_types()))
    assert parquet.column("frame_index").to_pylist() == list(range(22))
    assert parquet.column("next_frame_index").to_pylist() == list(range(2, 24))
    assert set(parquet.column("id").to_pylist()) == {"clip.mp4"}
    with open(next(path for path in files if path.endswith(".json"))) as file:
        assert json.load(file) == parquet.to_pylist()
    assert pair["maximum"] == 21 and codes == " ".join(map(str, parquet.column("action_indices")[0].as_py()))

    assert visitor.predict(3, api_name="/take_codes") == " ".join(map(str, parquet.column("action_indices")[3].as_py()))
    picture, numbers = visitor.predict(1, "0 1 2 3", api_name="/what_if")
    assert_picture(picture)
    assert "with codes `0 1 2 3`" in numbers and "copying frame 1" in numbers


BAD_INPUT = [  # (video, (stride, first frame, last frame), the message's words)
    ("not_a_video", (1, 0, 0), "not_a_video.mp4: unreadable video"),
    ("truncated", (1, 0, 0), "truncated.mp4: unreadable video"),
    ("one_frame", (1, 0, 0), "one_frame.mp4 has 1 frame(s); latent actions need at least two"),
    ("big_frames", (1, 0, 0), "big_frames.mkv is 192x192 (36,864 pixels a frame); this page takes frames up to 25,600"),
    ("clip", (1, 0, 29), "frames 0 to 29 are 30 frames; this page reads at most 24 per request"),
    ("clip", (1, 40, 0), "first frame 40 is outside the video (frames 0 to 29)"),
    ("clip", (24, 0, 0), "stride 24 needs at least 25 frames"),
    (None, (1, 0, 0), "upload a video, or pick one of the example clips, first"),
]


def test_bad_input_is_a_readable_message_and_the_app_serves_on(app, videos):
    visitor = client(app)
    for video, arguments, message in BAD_INPUT:
        with pytest.raises(AppError) as error:
            visitor.predict(handle_file(videos[video]) if video else None, *arguments, api_name="/extract")
        assert message in str(error.value) and "Traceback" not in str(error.value), (video, str(error.value))
    summary = visitor.predict(handle_file(videos["clip"]), 1, 0, 5, api_name="/extract")[0]
    assert "**5 pairs**" in summary


def test_what_if_input_is_checked(app, videos):
    visitor = client(app)
    with pytest.raises(AppError, match="extract the latent actions of a video first"):
        visitor.predict(0, "0 1 2 3", api_name="/what_if")
    visitor.predict(handle_file(videos["clip"]), 1, 0, 4, api_name="/extract")
    for codes in ("0 1 2", "0 1 2 8", "up down"):
        with pytest.raises(AppError, match="codes must be 4 whole numbers from 0 to 7"):
            visitor.predict(0, codes, api_name="/what_if")
    with pytest.raises(AppError, match="Value 9 is greater than maximum value 3"):  # the slider's bounds: 4 pairs
        visitor.predict(9, api_name="/take_codes")
    assert "MSE" in visitor.predict(2, "7 7 7 7", api_name="/what_if")[1]


def test_a_huge_upload_is_refused(app, videos):
    # gradio refuses the upload itself (its max_file_size is the page's limit); the page checks again on the server
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client(app).predict(handle_file(videos["huge"]), 1, 0, 0, api_name="/extract")
    with pytest.raises(LaryError, match="huge.mp4 is 2.0 MB; this page takes files up to 1 MB"):
        read_clip(videos["huge"], None, LIMITS)


def test_an_unexpected_failure_is_a_short_message(app, videos, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.analyzer, "analyse", broken)
    with pytest.raises(AppError, match="Something went wrong on our side") as error:
        client(app).predict(handle_file(videos["clip"]), 1, 0, 0, api_name="/extract")
    assert "a bug" not in str(error.value)


def test_the_visitors_analyses_are_held_within_a_budget(videos):
    """Least recently used first, within the budget, none past its age; a replaced one goes at once."""
    analysis = Analyzer(default_model(), LIMITS).analyse(videos["clip"], stride=1, first=0, last=5)
    now = [0.0]
    store = SessionStore(max_bytes=3 * analysis.nbytes, max_age=600, clock=lambda: now[0])
    keys = []
    for _ in range(50):  # visitors, one a second
        now[0] += 1
        keys.append(store.put(dataclasses.replace(analysis)))
        assert len(store) <= 3 and store.held_bytes <= 3 * analysis.nbytes
    assert store.get(keys[-3]) is not None  # the oldest held one, used again: now the most recent
    store.put(dataclasses.replace(analysis))
    with pytest.raises(LaryError, match="no longer holds your latent actions"):
        store.get(keys[-2])
    for key in (keys[-3], keys[-1]):
        store.get(key)
    replaced = store.put(dataclasses.replace(analysis), replaces=keys[-1])
    assert len(store) == 3 and store.held_bytes == 3 * analysis.nbytes
    now[0] += 601
    with pytest.raises(LaryError, match="extract them again"):
        store.get(replaced)
    assert len(store) == 0 and store.held_bytes == 0
    with pytest.raises(LaryError, match="extract the latent actions of a video first"):
        store.get(None)


def test_many_visitors_leave_a_bounded_memory(app, videos):
    """Visitors extracting one after another: the page holds at most its budget of analyses (counted, and every
    `Analysis` alive in the process found), gradio's state holds only their keys, and the first visitor, whose
    analysis went, is asked to extract again."""
    probe = Analyzer(default_model(), LIMITS).analyse(videos["clip"], stride=1, first=0, last=5)
    budget = 3 * probe.nbytes
    del probe
    app.sessions.max_bytes, saved = budget, app.sessions.max_bytes
    try:
        visitors = [client(app) for _ in range(8)]
        for visitor in visitors:
            visitor.predict(handle_file(videos["clip"]), 1, 0, 5, api_name="/extract")
        with pytest.raises(AppError, match="extract them again"):
            visitors[0].predict(0, "0 0 0 0", api_name="/what_if")
        visitors[-1].predict(0, "0 0 0 0", api_name="/what_if")
        gc.collect()
        alive = [thing for thing in gc.get_objects() if type(thing) is Analysis]
        assert len(app.sessions) == 3 and app.sessions.held_bytes <= budget
        assert len(alive) == len(app.sessions), len(alive)
        held = [value for session in app.blocks.state_holder.session_data.values() for value in session.state_data.values()]
        assert all(value is None or isinstance(value, str) for value in held)
        assert app.blocks.state_session_capacity == STATE_SESSIONS  # and gradio keeps that many visitors' state
    finally:
        app.sessions.max_bytes = saved


def test_analysis_is_video_mode_and_the_downloads_are_lary_extract_rows(videos, tmp_path):
    analyzer = Analyzer(default_model(), Limits())
    analysis = analyzer.analyse(videos["clip"], stride=3)
    assert analysis.pairs == 27
    pixels = analyzer.processor(videos=[list(analysis.clip.pixels.permute(0, 2, 3, 1))], stride=3)
    with torch.inference_mode():
        output = analyzer.model(**pixels)
    np.testing.assert_array_equal(analysis.action_indices, output.action_indices[0].numpy())
    np.testing.assert_allclose(analysis.latent_actions, output.latent_actions[0].numpy(), atol=1e-5)

    out = tmp_path / "extract"
    lary_main(["extract", "--model", str(default_model()), "--videos", str(videos["clip"]), "--stride", "3",
               "--out", str(out), "--cpu", "--num-workers", "0"])
    extracted = pq.read_table(next(out.glob("*.parquet"))).sort_by("frame_index")
    ours = pair_table(analysis)
    assert ours.schema.equals(extracted.schema)
    for name in ("id", "frame_index", "next_frame_index", "timestamp", "next_timestamp", "action_indices"):
        assert ours.column(name).to_pylist() == extracted.column(name).to_pylist(), name
    np.testing.assert_allclose(np.array(ours.column("latent_actions").to_pylist()),
                               np.array(extracted.column("latent_actions").to_pylist()), atol=1e-5)


def test_a_range_in_a_long_video_is_read_by_seeking(videos):
    analysis = Analyzer(default_model(), LIMITS).analyse(videos["clip"], stride=1, first=20, last=29)
    assert analysis.clip.frame_indices.tolist() == list(range(20, 30)) and analysis.clip.note == ""
    np.testing.assert_allclose(analysis.clip.times, np.arange(20, 30) / 8)


def test_frame_range_and_codes():
    assert frame_range(100, 0, 0, 24) == (0, 24, "read frames 0 to 23 of 100: at most 24 per request (set the frame "
                                                  "range to see others)")
    assert frame_range(10, 2, None, 24) == (2, 10, "")
    assert frame_range(10, 2, 50, 24) == (2, 10, "the video ends at frame 9")
    with pytest.raises(LaryError, match="last frame 2 must come after first frame 5"):
        frame_range(10, 5, 2, 24)
    assert parse_codes("[3, 1, 0, 7]", 4, 8) == [3, 1, 0, 7]
    with pytest.raises(LaryError, match="codes must be 4 whole numbers from 0 to 7"):
        parse_codes("3 1 0 -1", 4, 8)


def test_lary_app_refuses_a_missing_model_before_serving(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(LaryError, match=f"--model {missing}: no such folder"):
        lary_main(["app", "--model", str(missing)])


def test_the_space_folder_serves_this_page(monkeypatch):
    space = REPO_ROOT / "space"
    card = yaml.safe_load((space / "README.md").read_text().split("---")[1])
    assert (card["sdk"], card["app_file"], card["models"]) == ("gradio", "app.py", ["AGI-Eval/LAPA-DINOv3"])
    assert len(card["short_description"]) <= 60  # the Hub's limit
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert Requirement(extras["app"][0]).specifier.contains(card["sdk_version"])  # the gradio `lary app` runs on
    requirements = [line for line in (space / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert str(Requirement(extras["app"][0])) in requirements  # gradio, with lary's own dependencies (test_space.py)

    monkeypatch.setenv("LARY_MODEL", str(default_model()))
    demo = runpy.run_path(str(space / "app.py"))["demo"]  # built, not launched
    intro = demo.config["components"][0]["props"]["value"]
    assert "tiny-lapa-dinov3" in intro
    assert "**Note:** this page runs the embedded tiny model: its backbone is DINOv3-shaped but randomly initialised" in intro


def test_only_the_embedded_model_is_introduced_as_random(tmp_path):
    model = AutoModel.from_pretrained(default_model())
    copy = export(model, tmp_path / "trained", load_processor(default_model(), model.config.backbone_config.image_size))
    assert "knows nothing of real video" in _intro(Analyzer(default_model()))
    assert "knows nothing of real video" not in _intro(Analyzer(copy)) and "`trained`" in _intro(Analyzer(copy))
