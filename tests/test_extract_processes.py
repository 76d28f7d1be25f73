"""`lary extract` as real processes: two accelerate CPU processes equal one, a run killed with SIGKILL resumes into
every id exactly once without rewriting finished shards (also after random kills of one process or of a launcher,
whose ranks end with it), and Ctrl-C or SIGTERM end a run in one line."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import accelerate_launch, free_port
from test_extract import ENV, prepare_lary, read_manifest, read_output, save_tiny_model

from lary.data.loading import load_lary_split
from lary.synthetic import make_clip, write_video

ROWS = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("extract_processes")
    return save_tiny_model(root / "model"), prepare_lary(root, {"libero": ROWS})


def extract_args(model: Path, dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "lary", "extract", "--model", str(model), "--dataset", str(dataset), "--dataset-config", "libero",
            "--split", "validation", "--out", str(out), "--cpu", *extra]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=300)


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(parent) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def lock_holder(out: Path) -> int | None:
    try:
        return json.loads((out / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def wait_for(condition, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_two_processes_equal_one(tmp_path, setup):
    model, dataset = setup
    extra = ("--limit", "20", "--shard-size", "3", "--batch-size", "2")
    one = run(extract_args(model, dataset, tmp_path / "one", *extra))
    assert one.returncode == 0, one.stderr
    two = run([*accelerate_launch(), *extract_args(model, dataset, tmp_path / "two", *extra)])
    assert two.returncode == 0, two.stderr
    assert "extracted 20 rows (20 pairs)" in one.stderr and "extracted 20 rows (20 pairs)" in two.stderr

    single, double = read_output(tmp_path / "one"), read_output(tmp_path / "two")
    assert single.num_rows == 20 and len(set(single.column("id").to_pylist())) == 20
    assert double.equals(single)
    assert read_manifest(tmp_path / "two")["shards"] == read_manifest(tmp_path / "one")["shards"]


def test_killed_run_resumes_with_every_id_once(tmp_path, setup):
    model, dataset = setup
    out = tmp_path / "out"
    args = extract_args(model, dataset, out, "--shard-size", "2", "--batch-size", "1")
    process = subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("*.parquet")}
    assert 0 < len(finished) < ROWS // 2, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"extracted {ROWS - 2 * len(finished)} rows" in resumed.stderr  # finished shards were not recomputed
    for name, stamp in finished.items():
        path = out / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    ids = read_output(out).column("id").to_pylist()
    assert ids == sorted(load_lary_split(str(dataset), "libero", "validation")["id"])
    assert read_manifest(out)["rows"] == ROWS and not list(out.glob(".*.tmp"))

    refused = run(extract_args(model, dataset, out, "--shard-size", "4"))
    assert refused.returncode == 2 and "planned with --shard-size 2, not 4" in refused.stderr
    again = run(args)
    assert again.returncode == 0 and f"everything was already extracted: {out} holds {ROWS} rows" in again.stderr


def launch_on_two_machines(args: list[str], port: int) -> list[subprocess.Popen]:
    """Two `accelerate launch`es as two machines of one process each (ranks 0 and 1, 127.0.0.1), as on a cluster."""
    launches = []
    for rank in (0, 1):
        launch = accelerate_launch("--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                                   port=port)
        launches.append(subprocess.Popen([sys.executable, *launch, *args], env=ENV, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, start_new_session=True))
    return launches


@pytest.mark.slow
def test_two_machines_equal_one_process_and_resume_after_a_kill(tmp_path):
    root = tmp_path / "inputs"
    model = save_tiny_model(root / "model")
    for index in range(6):
        write_video(make_clip(index % 8, num_frames=24, size=48, seed=index).frames, root / f"video_{index}.mkv")
    args = ["-m", "lary", "extract", "--model", str(model), "--videos", str(root / "*.mkv"), "--batch-size", "4",
            "--cpu"]
    one = run([*args, "--out", str(tmp_path / "one"), "--shard-size", "10"])  # the same shards: the same batches
    assert one.returncode == 0, one.stderr

    out = tmp_path / "two"
    killed = launch_on_two_machines([*args, "--out", str(out), "--shard-size", "10"], free_port())
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    ranks = [rank for process in killed for rank in children(process.pid)]
    for process in killed:  # the launchers' process groups go down; their ranks (sessions of their own) end with them
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {path.name: path.stat().st_mtime_ns for path in out.glob("shard-*.parquet")}
    assert 2 <= len(finished) < 14, "the kill should land mid-run"
    assert wait_for(lambda: not any(alive(rank) for rank in ranks), 15), "a rank outlived its launcher"

    for process in launch_on_two_machines([*args, "--out", str(out)], free_port()):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in finished.items())
    assert read_output(out).equals(read_output(tmp_path / "one"))  # the rows of one process, each once
    assert read_manifest(out)["shard_size"] == 10  # the first run's plan, kept by the rerun


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model, and 6 videos of 24 frames (138 pairs)."""
    root = tmp_path_factory.mktemp("videos")
    for index in range(6):
        write_video(make_clip(index % 8, num_frames=24, size=48, seed=index).frames, root / f"video_{index}.mkv")
    return save_tiny_model(root / "model"), root


def video_args(videos: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    model, root = videos
    return ["-m", "lary", "extract", "--model", str(model), "--videos", str(root / "*.mkv"), "--out", str(out),
            "--batch-size", "4", "--cpu", *extra]


@pytest.fixture(scope="module")
def uninterrupted(videos, tmp_path_factory):
    """The rows of one process with the default shards (all 138 rows in one)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    done = run(video_args(videos, out))
    assert done.returncode == 0, done.stderr
    assert read_manifest(out)["shards"] == ["shard-00000-of-00001.parquet"]
    return read_output(out)


@pytest.mark.slow
@pytest.mark.parametrize("processes, kills", [(1, 2), (2, 1)])
def test_random_kills_lose_no_row_and_change_none(tmp_path, videos, uninterrupted, processes, kills):
    """SIGKILL at random (seeded) moments of successive runs, once each has locked the folder: one process is killed
    with its decoding workers; of two, only the launcher, whose ranks (in sessions of their own) must end with it
    within seconds. Then a run to the end: every row once, bit-identical to the uninterrupted run of one process,
    whose one shard of whole batches is cut here into shards of 8 rows (2 batches): the batches, and so the values,
    do not depend on the shards nor on the processes."""
    rng = random.Random(processes)
    out = tmp_path / "out"
    launch = accelerate_launch() if processes == 2 else []
    command = [*launch, *video_args(videos, out, "--shard-size", "8")]  # 18 shards
    landed = []  # whether each kill found the run unfinished
    for _ in range(kills):
        started = len(list(out.glob("shard-*.parquet")))
        process = subprocess.Popen([sys.executable, *command], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        main = [process.pid] if processes == 1 else None
        assert wait_for(lambda: process.poll() is not None or lock_holder(out) in (main or children(process.pid))), \
            "the run never locked its folder"
        more = rng.randint(0, 4)
        wait_for(lambda: process.poll() is not None or len(list(out.glob("shard-*.parquet"))) >= started + more)
        time.sleep(rng.uniform(0, 0.1))
        ranks = children(process.pid)
        if processes == 1:
            with contextlib.suppress(ProcessLookupError):  # (the run may have ended first)
                os.killpg(process.pid, signal.SIGKILL)  # the process and its decoding workers
        else:
            process.kill()  # the launcher alone
        landed.append(len(list(out.glob("shard-*.parquet"))) < 18)
        process.communicate()
        assert wait_for(lambda: not any(alive(rank) for rank in ranks), 15), "a rank outlived its launcher"
    assert any(landed), "no kill landed mid-run"
    finished = run(command)
    assert finished.returncode == 0, finished.stderr
    assert read_output(out).equals(uninterrupted)
    assert read_manifest(out)["rows"] == 138 and not list(out.glob(".*.tmp"))


def test_ctrl_c_and_sigterm_end_in_one_line(tmp_path, videos):
    """Sent once the run has locked its folder, with a second of work ahead (batches of one pair)."""
    for name, sent in (("Ctrl-C", signal.SIGINT), ("SIGTERM", signal.SIGTERM)):
        out = tmp_path / name
        command = video_args(videos, out, "--batch-size", "1")
        process = subprocess.Popen([sys.executable, *command], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        assert wait_for(lambda: process.poll() is not None or lock_holder(out) == process.pid)
        if sent == signal.SIGINT:
            os.killpg(process.pid, sent)  # as the terminal sends it: to the process and its workers
        else:
            process.send_signal(sent)  # as a scheduler or launcher does
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, (name, stderr)
        assert stderr.splitlines()[-1] == "lary extract: interrupted; rerun the same command to resume", (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
