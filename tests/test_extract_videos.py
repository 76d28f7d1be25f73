"""`lary extract` on videos and image folders: one row per frame pair, windows and shards inside long videos,
decoding in worker processes, unreadable files retried, and resuming inside a long video."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from lary_tree import write_clip
from PIL import Image
from test_extract import ENV, extract, read_manifest, read_output, save_tiny_model
from torch.utils.data import DataLoader
from transformers import AutoModel

from lary import LapaDinov3Processor
from lary.errors import LaryError
from lary.extract.loader import Batch, UnitStream
from lary.extract.models import LatentActionExtractor
from lary.extract.plan import WorkUnit, pair_units
from lary.extract.sources import VideoSource
from lary.frames import read_video
from lary.hub import default_model
from lary.synthetic import make_clip, write_video

LATENT_COLUMNS = ["action_indices", "latent_actions", "continuous_latent_actions"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModel.from_pretrained(tiny_model).eval()


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """90 frames (64x64, lossless FFV1) of shapes moving in changing directions."""
    frames = np.concatenate([make_clip(d % 8, num_frames=15, size=64, seed=d).frames for d in range(6)])
    return write_video(frames, tmp_path_factory.mktemp("long") / "long.mkv", fps=30)


def whole_video_unit(source: VideoSource) -> WorkUnit:
    """The first video of `source` as one work unit, as `lary extract` plans it (one shard)."""
    length, pts = source.length(0)
    return WorkUnit(0, 1, 0, tuple(pair_units([length - 1], 100, [pts])[0]))


@torch.inference_mode()
def expected_pairs(model, frames: np.ndarray, stride: int) -> dict[str, np.ndarray]:
    """The model on the whole clip at once (video mode): (pairs, ...) per output."""
    output = model(**LapaDinov3Processor()(videos=[list(frames)], stride=stride))
    return {name: output[name][0].numpy() for name in LATENT_COLUMNS}


def assert_rows_equal(table, expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(np.array(table.column("action_indices").to_pylist()), expected["action_indices"])
    for name in ("latent_actions", "continuous_latent_actions"):
        np.testing.assert_allclose(np.array(table.column(name).to_pylist()), expected[name], atol=1e-5)


def test_one_row_per_pair_and_an_unreadable_video_retried(tmp_path, tiny_model, model):
    videos = tmp_path / "videos"
    write_clip(videos / "a.mp4", num_frames=5)
    write_clip(videos / "sub" / "b.mp4", num_frames=7)
    (videos / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    args = ["--model", str(tiny_model), "--videos", str(videos / "**" / "*.mp4"), "--stride", "2",
            "--batch-size", "2", "--shard-size", "2", "--out", str(out)]
    assert extract(*args) == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [error["id"] for error in errors] == ["broken.mp4"] and "unreadable video" in errors[0]["reason"]

    table = read_output(out)
    assert table.column("id").to_pylist() == ["a.mp4"] * 3 + ["sub/b.mp4"] * 5  # (frames - stride) pairs each
    assert table.column("frame_index").to_pylist() == [0, 1, 2, 0, 1, 2, 3, 4]
    assert table.column("next_frame_index").to_pylist() == [2, 3, 4, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(table.column("timestamp").to_pylist()[3:], [0.0, 0.1, 0.2, 0.3, 0.4])  # 10 fps
    np.testing.assert_allclose(table.column("next_timestamp").to_pylist()[3:], [0.2, 0.3, 0.4, 0.5, 0.6])
    assert table.schema.field("action_indices").type.value_type.bit_width == 64  # (n,) per row: no pair axis
    # windows of `--batch-size` pairs, in shards of `--shard-size` pairs, give what the whole clip gives at once
    assert_rows_equal(table.slice(3), expected_pairs(model, read_video(videos / "sub" / "b.mp4"), stride=2))
    manifest = read_manifest(out)
    assert (manifest["layout"], manifest["rows"], manifest["pairs"], manifest["errors"]) == ("pair", 8, 8, 1)
    assert manifest["processor"] == {"size": 224, "resample": "bicubic"}

    finished = {path.name: path.stat().st_mtime_ns for path in out.glob("*.parquet")}
    assert extract(*args) == 1  # still broken: no new (empty) retry shard
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.parquet")} == finished
    shutil.copy(videos / "a.mp4", videos / "broken.mp4")  # fixed: the rerun retries only that video
    assert extract(*args) == 0
    retried = {path.name for path in out.glob("*.parquet")} - set(finished)
    assert retried == {"shard-00001-of-00005.retry-1.parquet"}
    assert all(out.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in finished.items())
    assert read_output(out).column("id").to_pylist() == ["a.mp4"] * 3 + ["broken.mp4"] * 3 + ["sub/b.mp4"] * 5
    assert not (out / "errors.jsonl").exists() and read_manifest(out)["rows"] == 11


def test_image_folders_equal_their_video_and_mixed_sizes_are_refused(tmp_path, tiny_model, model):
    frames = make_clip(2, num_frames=6, size=48, seed=3).frames
    folder = tmp_path / "frames" / "episode_0"
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{index}.png")
    mixed = tmp_path / "frames" / "episode_1"
    mixed.mkdir()
    Image.fromarray(frames[0]).save(mixed / "frame_0.png")
    Image.fromarray(frames[1][:40]).save(mixed / "frame_1.png")
    out = tmp_path / "out"
    assert extract("--model", str(tiny_model), "--images", str(folder), str(mixed), "--out", str(out)) == 1
    table = read_output(out)
    assert table.column("id").to_pylist() == ["episode_0"] * 5
    assert table.column("timestamp").null_count == 5  # image files have no times
    assert_rows_equal(table, expected_pairs(model, frames, stride=1))
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert errors[0]["id"] == "episode_1" and "48x48 (frame_0.png), 48x40 (frame_1.png)" in errors[0]["reason"]


def test_any_number_of_workers_writes_the_same_rows(tmp_path, tiny_model, long_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(long_video, videos / "long.mkv")
    write_clip(videos / "short.mp4", num_frames=6)
    outputs = {}
    for workers in (0, 2):
        out = tmp_path / f"out-{workers}"
        assert extract("--model", str(tiny_model), "--videos", str(videos / "*"), "--stride", "3", "--batch-size", "8",
                       "--shard-size", "20", "--num-workers", str(workers), "--out", str(out)) == 0
        outputs[workers] = {path.name: pq.read_table(path) for path in sorted(out.glob("*.parquet"))}
    assert list(outputs[0]) == [f"shard-0000{i}-of-00005.parquet" for i in range(5)]
    assert list(outputs[0]) == list(outputs[2])
    for name, table in outputs[0].items():
        assert table.equals(outputs[2][name]), name  # same rows, same order, same values


def test_a_shard_s_batches_are_written_as_row_groups_of_a_thousand_rows(tmp_path, tiny_model, long_video, monkeypatch):
    from lary import parquet_shards

    def row_groups(out: Path) -> list[list[int]]:
        files = [pq.ParquetFile(path).metadata for path in sorted(out.glob("*.parquet"))]
        return [[file.row_group(index).num_rows for index in range(file.num_row_groups)] for file in files]

    arguments = ["--model", str(tiny_model), "--videos", str(long_video), "--batch-size", "8", "--shard-size", "40",
                 "--num-workers", "0"]
    assert extract(*arguments, "--out", str(tmp_path / "out")) == 0
    assert row_groups(tmp_path / "out") == [[40], [40], [9]]  # five batches of 8 in one group, not five groups
    monkeypatch.setattr(parquet_shards, "ROW_GROUP_BYTES", 1)  # rows too large for a group of more than one batch
    assert extract(*arguments, "--out", str(tmp_path / "small")) == 0
    assert row_groups(tmp_path / "small") == [[8] * 5, [8] * 5, [8, 1]]
    assert read_output(tmp_path / "small").equals(read_output(tmp_path / "out"))


def test_a_full_batch_leaves_before_the_next_window_is_decoded(tiny_model, model, long_video):
    """The first batch reaches the model after one window of frames, not two (a worker's first batch is the wait
    before anything is computed)."""
    source, pulled = VideoSource([str(long_video)]), []
    frames = source.frames
    source.frames = lambda segment, stop: (pulled.append(frame.index) or frame for frame in frames(segment, stop))
    stream = iter(UnitStream(source, [whole_video_unit(source)], LatentActionExtractor(model, str(tiny_model), 8), 8, 1))
    first = next(stream)
    assert isinstance(first, Batch) and first.pairs == 8
    assert len(pulled) == 9  # frames 0..8: the batch's 8 pairs
    batches = [first, *(item for item in stream if isinstance(item, Batch))]
    assert [batch.pairs for batch in batches] == [8] * 11 + [1]  # 89 pairs, cut as before


def test_frames_left_for_the_device_to_resize_give_the_same_latent_actions(tiny_model, model, long_video):
    """What the workers do for a model on a GPU (frames sent at their own size, resized where the model is), here on the
    CPU: the same batches and latent actions as frames resized in the workers."""
    source = VideoSource([str(long_video)])
    units = [whole_video_unit(source)]
    outputs = {}
    for on_device in (False, True):
        extractor = LatentActionExtractor(model, str(tiny_model), 8)
        extractor.resize_on_device = on_device
        stream = UnitStream(source, units, extractor, 8, 1)
        loader = DataLoader(stream, batch_size=None, num_workers=1, collate_fn=lambda item: item)
        batches = [item for item in loader if isinstance(item, Batch)]
        sizes = {tuple(piece.pixels.shape[1:]) for batch in batches for piece in batch.pieces}
        assert sizes == {(64, 64, 3) if on_device else (3, 224, 224)}
        outputs[on_device] = [extractor.compute(batch.pieces) for batch in batches]
    for resized_here, resized_there in zip(*outputs.values(), strict=True):
        for here, there in zip(resized_here, resized_there, strict=True):
            np.testing.assert_array_equal(here["action_indices"], there["action_indices"])
            np.testing.assert_allclose(here["continuous_latent_actions"], there["continuous_latent_actions"], atol=1e-6)


def test_a_long_video_gives_the_pairs_of_the_same_frames_cut_into_clips(tmp_path, tiny_model, long_video):
    stride = 2
    frames = read_video(long_video)
    clips = tmp_path / "clips"
    clips.mkdir()
    for start in range(0, 88, 22):  # clips of 24 frames overlapping by `stride`: together, every pair once
        write_video(frames[start : start + 22 + stride], clips / f"clip_{start:02d}.mkv", fps=30)
    long_out, clips_out = tmp_path / "long", tmp_path / "clips_out"
    assert extract("--model", str(tiny_model), "--videos", str(long_video), "--stride", str(stride),
                   "--batch-size", "7", "--shard-size", "25", "--out", str(long_out)) == 0
    assert extract("--model", str(tiny_model), "--videos", str(clips / "*.mkv"), "--stride", str(stride),
                   "--out", str(clips_out)) == 0
    long_rows, clip_rows = read_output(long_out), read_output(clips_out)
    assert long_rows.num_rows == clip_rows.num_rows == 88 and len(list(long_out.glob("*.parquet"))) == 4
    offsets = {f"clip_{start:02d}.mkv": start for start in range(0, 88, 22)}
    clip_frames = [offsets[i] + t for i, t in zip(clip_rows.column("id").to_pylist(), clip_rows.column("frame_index").to_pylist())]
    assert clip_frames == long_rows.column("frame_index").to_pylist() == list(range(88))
    assert long_rows.column("action_indices").to_pylist() == clip_rows.column("action_indices").to_pylist()
    for name in ("latent_actions", "continuous_latent_actions"):
        np.testing.assert_allclose(np.array(long_rows.column(name).to_pylist()), np.array(clip_rows.column(name).to_pylist()), atol=1e-5)


def test_a_run_killed_inside_a_long_video_redoes_at_most_one_shard(tmp_path, tiny_model, long_video):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lary", "extract", "--model", str(tiny_model), "--videos", str(long_video),
               "--batch-size", "4", "--shard-size", "10", "--num-workers", "1", "--cpu", "--out", str(out)]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*.parquet"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()
    process.wait()
    before = {path.name: path.stat().st_mtime_ns for path in out.glob("shard-*.parquet")}
    assert 3 <= len(before) < 9, "the run was to be killed midway"
    subprocess.run(command, env=ENV, check=True, capture_output=True, timeout=300)
    after = {path.name: path.stat().st_mtime_ns for path in out.glob("shard-*.parquet")}
    assert len(after) == 9 and all(after[name] == mtime for name, mtime in before.items())  # kept, not redone
    assert read_output(out).column("frame_index").to_pylist() == list(range(89))  # every pair exactly once
    assert not list(out.glob(".*.tmp"))


def test_defaults_share_the_cores_and_give_every_process_work(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lary.configs.extract import ExtractConfig
    from lary.extract import plan
    from lary.extract.command import make_plan, resources
    from lary.extract.plan import auto_shard_size
    from lary.extract.sources import VideoSource

    config = ExtractConfig(model="m", videos=[str(tmp_path / "*.mp4")], out=tmp_path / "out", batch_size=3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    cpu, gpu = SimpleNamespace(num_processes=2, device=torch.device("cpu")), SimpleNamespace(num_processes=2, device=torch.device("cuda"))
    assert resources(config, cpu) == (4, 4)  # (decoding workers, torch threads) per process: 8 cores each
    assert resources(config, gpu) == (7, 1)  # a GPU leaves the cores to decoding
    for index in range(3):
        write_clip(tmp_path / f"{index}.mp4", num_frames=8)  # 7 pairs each
    config.out.mkdir()
    make_plan(config.out, VideoSource(config.videos), config, 4, None)
    planned = plan.load(config.out)
    assert planned.shard_size == 6 and len(planned.shards) == 4  # 21 pairs over 4 processes: every process gets a shard
    # 9,584 rows: 10 shards of at most 1,000 for one reader; for 8 workers 16, so none is left with the last ones alone
    assert [auto_shard_size(9584, readers, 32) for readers in (1, 8)] == [960, 608]


KEPT_MEMORY = """
import ctypes, ctypes.util, sys
from lary.extract.memory import keep_freed_memory, release_free_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    keep_freed_memory()
blocks = [libc.malloc(2**20) for _ in range(20)]  # a batch's activations, freed together at its end
for block in blocks:
    libc.free(block)
kept = libc.mallinfo2().fordblks
release_free_memory()
print(kept >> 20, libc.mallinfo2().fordblks >> 20)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="mallinfo2 needs glibc >= 2.33")
def test_keep_freed_memory_holds_a_batch_s_freed_heap_until_the_release():
    def free_megabytes(mode: str) -> list[int]:  # (free in the heap after the batch, after the release), in MiB
        done = subprocess.run([sys.executable, "-c", KEPT_MEMORY, mode], capture_output=True, text=True, check=True)
        return [int(value) for value in done.stdout.split()]

    assert free_megabytes("default") == [0, 0]  # glibc hands the blocks back at once: the next batch faults them in
    assert free_megabytes("keep") == [20, 0]  # kept for the next batch, then released


def test_compile_is_refused_on_a_torch_whose_compiler_fails(tmp_path, long_video, monkeypatch):
    from lary.configs import extract as extract_config

    monkeypatch.setattr(extract_config, "version", lambda name: "2.6.0+cu124")
    with pytest.raises(LaryError, match=r"^--compile needs torch >= 2.7; this is torch 2.6.0\+cu124, whose compiler"):
        extract("--model", str(default_model()), "--videos", str(long_video), "--compile", "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two compilations of the embedded model: about 3 minutes on 2 cores
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own compiler
def test_compile_writes_the_rows_of_the_eager_model(tmp_path, long_video):
    """`--compile`: compiled at the first batch (32 pairs) and once more for the last (25 pairs); the same rows, of the
    embedded model, whose codes vary (torch 2.6-2.7's inductor turned its quant_dim-4 argmin into code 0 everywhere)."""
    tables = {}
    for flags in ((), ("--compile",)):
        out = tmp_path / ("compiled" if flags else "eager")
        assert extract("--model", str(default_model()), "--videos", str(long_video), "--batch-size", "32", *flags,
                       "--out", str(out)) == 0
        tables[bool(flags)] = pq.read_table(sorted(out.glob("*.parquet")))
    eager, compiled = tables[False], tables[True]
    assert compiled.num_rows == eager.num_rows == 89
    assert len({tuple(codes) for codes in eager["action_indices"].to_pylist()}) > 10  # rows that can differ
    assert compiled.select(["id", "frame_index", "action_indices"]).equals(eager.select(["id", "frame_index", "action_indices"]))
    for column in ("latent_actions", "continuous_latent_actions"):
        np.testing.assert_allclose(np.asarray(compiled[column].to_pylist()), np.asarray(eager[column].to_pylist()), atol=1e-5)
