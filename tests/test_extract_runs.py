"""`lary extract` runs as a careless or unlucky user has them: a second run into a live run's folder, the same run
given other argument text or a moved folder, damaged shards, a full disk, `-q`, the summary's advice, and batches
that do not move with the shards.
Interrupts, killed launchers and random kills are in test_extract_processes.py."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_extract import ENV, extract, read_output, save_tiny_model
from transformers import AutoModel

from lary import cli
from lary.extract.command import LoopTime
from lary.extract.plan import auto_shard_size
from lary.extract.loader import Batch, UnitStream
from lary.extract.lock import OutputLock
from lary.extract.models import LatentActionExtractor
from lary.extract.plan import WorkUnit, pair_units
from lary.extract.sources import VideoSource
from lary.synthetic import make_clip, write_video


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model, and a folder of 4 videos of 12 frames (44 pairs)."""
    root = tmp_path_factory.mktemp("runs")
    (root / "videos").mkdir()
    for index in range(4):
        write_video(make_clip(index, num_frames=12, size=32, seed=index).frames, root / "videos" / f"clip_{index}.mkv")
    return save_tiny_model(root / "model"), root / "videos"


def args(model: Path, videos: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["--model", str(model), "--videos", f"{videos}/*.mkv", "--out", str(out), "--shard-size", "8",
            "--batch-size", "4", "--num-workers", "0", *extra]


def console(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`lary ARGV` through the console entry point (`cli.run`): its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["lary", *argv])
    sigterm = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.run()
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    return exit_.value.code, capsys.readouterr().err


def test_a_live_run_s_folder_is_refused_naming_it_and_a_dead_one_s_lock_taken_over(tmp_path, inputs):
    model, videos = inputs
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # another run, on this host: it holds the lock until it is killed
        [sys.executable, "-c", "import sys; from pathlib import Path; from lary.extract.lock import OutputLock; "
         f"OutputLock(Path({str(out)!r})).acquire(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline() == "locked\n"
        held = f"{out} is being written by another run (host {socket.gethostname()}, pid {holder.pid}, started "
        with pytest.raises(ValueError, match=re.escape(held) + r".*\): wait for it"):
            extract(*args(model, videos, out))
        assert sorted(path.name for path in out.iterdir()) == [".lock"]  # nothing written beside the live run
    finally:
        holder.kill()
        holder.wait()
    assert f'"pid": {holder.pid}' in (out / ".lock").read_text()  # left behind by the dead run: taken over
    assert extract(*args(model, videos, out)) == 0
    assert read_output(out).num_rows == 44


def test_resuming_compares_resolved_inputs_not_argument_text_and_a_moved_folder_resumes(tmp_path, inputs, monkeypatch,
                                                                                       caplog):
    model, videos = inputs
    monkeypatch.chdir(tmp_path)
    assert extract(*args(model, os.path.relpath(videos), "k7")) == 0  # relative --videos and --out
    first = read_output(tmp_path / "k7")
    moved = tmp_path / "bigger_disk" / "k7"
    shutil.move(tmp_path / "k7", moved)
    last = sorted(moved.glob("shard-*.parquet"))[-1]
    last.unlink()  # as if the run had been killed before its last shard

    monkeypatch.chdir(moved.parent)
    caplog.set_level("INFO", logger="lary.extract.command")
    assert extract(*args(model, videos, moved)) == 0  # absolute paths, the folder moved
    assert any("extracted 4 rows (4 pairs)" in record.getMessage() for record in caplog.records)
    assert read_output(moved).equals(first)
    assert str(tmp_path / "k7") not in (moved / "manifest.json").read_text()  # no path into the folder itself

    (tmp_path / "more").mkdir()
    shutil.copy(videos / "clip_0.mkv", tmp_path / "more" / "clip_0.mkv")
    with pytest.raises(ValueError, match=r"inputs.videos: 4 there, 1 now; item 1: '.*/videos/clip_0.mkv' there, "
                                         r"'.*/more/clip_0.mkv' now"):
        extract(*args(model, tmp_path / "more", moved))
    with pytest.raises(ValueError, match=r"options.stride: 1 there, 2 now"):
        extract(*args(model, videos, moved, "--stride", "2"))


def test_an_output_folder_that_cannot_be_made_is_refused_on_one_line(tmp_path, inputs):
    model, videos = inputs
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"--out .*/a_file: cannot create the folder \(File exists\)"):
        extract(*args(model, videos, tmp_path / "a_file"))


def test_a_lock_that_cannot_be_written_is_refused_on_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()  # (as root, a folder without write permission is writable: this stands for it)
    with pytest.raises(ValueError, match=rf"--out {re.escape(str(tmp_path))}: cannot write there \(Is a directory\)"):
        OutputLock(tmp_path).acquire()


def test_damaged_shards_are_redone_and_named(tmp_path, inputs, caplog):
    model, videos = inputs
    out = tmp_path / "out"
    assert extract(*args(model, videos, out)) == 0
    whole = read_output(out)
    names = sorted(path.name for path in out.glob("shard-*.parquet"))
    assert len(names) == 6
    truncated, emptied, miscounted = (out / name for name in names[1:4])
    truncated.write_bytes(truncated.read_bytes()[:-20])
    emptied.write_bytes(b"")
    sidecar = miscounted.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"rows": 8', '"rows": 9'))
    untouched = {name: (out / name).stat().st_mtime_ns for name in (names[0], *names[4:])}

    caplog.set_level("INFO", logger="lary.extract.command")
    assert extract(*args(model, videos, out)) == 0
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "redid 3 damaged shard file(s)" in messages
    assert f"{truncated.name}: its Parquet footer does not read" in messages
    assert f"{emptied.name}: its Parquet footer does not read" in messages
    assert f"{miscounted.name}: it holds 8 rows, its sidecar says 9" in messages
    assert "extracted 24 rows" in messages and "everything was already extracted" not in messages
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in untouched.items())
    assert sum(pq.read_metadata(out / name).num_rows for name in names) == 44
    assert read_output(out).equals(whole)


def test_a_full_disk_ends_in_one_line_with_its_exit_code_and_keeps_the_finished_shards(tmp_path, inputs, monkeypatch,
                                                                                      capsys):
    model, videos = inputs
    out = tmp_path / "out"
    write_table, written = pq.ParquetWriter.write_table, []

    def fill_up(self, table, *rest, **options):  # the third shard's rows find the disk full, as pyarrow reports it
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        written.append(table.num_rows)
        return write_table(self, table, *rest, **options)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fill_up)
    code, stderr = console(["extract", *args(model, videos, out), "--cpu"], monkeypatch, capsys)
    monkeypatch.undo()
    assert code == cli.EXIT_NO_SPACE == 3
    last = stderr.strip().splitlines()[-1]
    assert last == (f"lary extract: error: no space left writing {out / 'shard-00002-of-00006.parquet'}; the finished "
                    "shards are kept: free space and rerun"), stderr
    assert "Traceback" not in stderr
    finished = {path.name: path.stat().st_mtime_ns for path in out.glob("shard-*.parquet")}
    assert sorted(finished) == ["shard-00000-of-00006.parquet", "shard-00001-of-00006.parquet"]

    assert extract(*args(model, videos, out)) == 0  # space freed: the rerun does the rest
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in finished.items())
    assert read_output(out).num_rows == 44


def test_quiet_hides_the_progress_bars(tmp_path, inputs, capsys, monkeypatch):
    """Ours and transformers' ("Loading weights"), in this process (which has imported transformers) and as a
    command (`python -m lary`, which imports it later); not the result line. Bars need a terminal: a redirected
    stderr (the command's pipe) gets none, -q or not."""
    model, videos = inputs
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr, as a terminal
    assert cli.main(["extract", *args(model, videos, tmp_path / "shown"), "--cpu"]) == 0
    shown = capsys.readouterr().err
    assert "extract (process 1 of 1)" in shown and "Loading weights" in shown and "waited for frames" in shown
    assert cli.main(["extract", *args(model, videos, tmp_path / "quiet"), "--cpu", "-q"]) == 0
    command = subprocess.run([sys.executable, "-m", "lary", "extract", *args(model, videos, tmp_path / "command"),
                              "--cpu", "-q"], capture_output=True, text=True, env=ENV, timeout=300)
    assert command.returncode == 0, command.stderr
    for quiet in (capsys.readouterr().err, command.stderr):
        assert not any(text in quiet for text in ("extract (process", "Loading weights", "waited for frames")), quiet
        assert re.search(r"extracted \d+ rows \(\d+ pairs\) in .* pairs/s", quiet), quiet
    redirected = subprocess.run([sys.executable, "-m", "lary", "extract", *args(model, videos, tmp_path / "log"),
                                 "--cpu"], capture_output=True, text=True, env=ENV, timeout=300)
    assert redirected.returncode == 0, redirected.stderr
    assert "\r" not in redirected.stderr and "extract (process" not in redirected.stderr
    assert "Loading weights" not in redirected.stderr and "pairs/s" in redirected.stderr


def test_the_summary_advises_only_where_it_applies():
    """The share of the loop spent waiting for frames, from given times (not measured: no test depends on pace)."""
    waited = LoopTime(first_batch=1.0, waiting=4.5, total=10.0, pairs=100)  # 50% of the 9 s after the first batch
    line = waited.describe(workers=1, cores=8)
    assert line == ("first batch after 1.0 s, then the model waited for frames 50% of the time; more --num-workers "
                    "(up to 7 on this process's 8 cores) would feed it faster")
    busy = waited.describe(workers=1, cores=2)  # every core already works: more workers would only share them
    assert busy.endswith(": decoding is the slower side, and this process's 2 core(s) are all taken (the model and 1 "
                         "decoding worker(s)); only more cores would feed it faster")
    assert "--num-workers" not in waited.describe(workers=7, cores=8)
    fed = LoopTime(first_batch=1.0, waiting=0.9, total=10.0, pairs=100)  # 10%: the model sets the pace
    assert fed.describe(workers=1, cores=8) == "first batch after 1.0 s, then the model waited for frames 10% of the time"
    assert LoopTime(first_batch=3.0, waiting=0.0, total=3.0, pairs=0).describe(workers=1, cores=8) is None  # no rows


def test_default_shards_are_whole_batches_and_keep_every_reader_busy():
    """Shards start on the batch grid (so batches, and values, do not depend on the number of processes), and the
    last round of shards is as short as the grid allows."""
    for total, readers, batch_size in ((9584, 1, 32), (9584, 8, 32), (9584, 8, 256), (21, 4, 3), (20, 2, 32), (1, 3, 7)):
        size = auto_shard_size(total, readers, batch_size)
        assert size % batch_size == 0 and size <= max(1000, batch_size), (total, readers, batch_size, size)
    assert auto_shard_size(9584, 8, 256) == 256  # 38 shards: 5 rounds of 8; larger shards would need 6 batches' time
    assert auto_shard_size(21, 4, 3) == 6  # 4 shards, one for each reader


def test_batches_do_not_depend_on_how_the_rows_are_cut_into_shards(inputs):
    """The loader's batches (which pairs of which videos go through the model together) for the 44 pairs planned as
    one shard, or as shards of whole batches of 4, are the same: the rows of a batch (and so their values, where a
    batch's size and make-up change the model's arithmetic) do not depend on how many processes share the shards."""
    model, videos = inputs
    source = VideoSource([f"{videos}/*.mkv"])
    lengths = [source.length(index) for index in range(len(source))]
    extractor = LatentActionExtractor(AutoModel.from_pretrained(model).eval(), str(model), 4)

    def batches(shard_size: int) -> list[list[tuple[int, int, int]]]:
        cut = pair_units([length - 1 for length, _ in lengths], shard_size, [pts for _, pts in lengths])
        units = [WorkUnit(shard, len(cut), 0, tuple(segments)) for shard, segments in enumerate(cut)]
        stream = UnitStream(source, units, extractor, batch_size=4, stride=1)
        return [[(piece.sample, int(piece.frame_indices[0]), piece.pairs) for piece in item.pieces]
                for item in stream if isinstance(item, Batch)]

    whole = batches(44)
    assert [sum(pairs for _, _, pairs in batch) for batch in whole] == [4] * 11
    assert (0, 8, 3) in whole[2] and (1, 0, 1) in whole[2]  # a batch goes on into the next video
    assert batches(8) == batches(12) == whole
    assert batches(6) != whole  # shards off the grid cut batches
