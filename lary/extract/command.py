"""`lary extract`: latent actions (or encoder features) of every dataset row, video, image folder or LeRobot episode,
sharded over accelerate processes, decoded in DataLoader workers, resumable. See docs/extract.md.

The script reads top to bottom: resources, what to read and the model, the plan, the work, the summary.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader
from tqdm import tqdm

from lary import logs
from lary.configs.extract import ExtractConfig
from lary.configs.parser import run_identity
from lary.errors import LaryError, NoSpaceError
from lary.extract import health, plan, rows, shards, strides
from lary.extract.labels import Labels
from lary.extract.loader import UnitEnd, UnitStream, forking_workers, worker_signals
from lary.extract.lock import OutputLock
from lary.extract.memory import PeriodicRelease, keep_freed_memory
from lary.extract.models import EncoderFeatureExtractor, Extractor, LatentActionExtractor, load_model
from lary.extract.sources import (
    DatasetSource,
    ImageFolderSource,
    LeRobotSource,
    Source,
    VideoSource,
)
from lary.frames import video_rotations
from lary.launcher import raise_if_stopped
from lary.parquet_shards import no_space_names
from lary.paths import outside
from lary.processes import process_state
from lary.runtime import (
    available_cores,
    compute_threads,
    decoding_cores,
    exact_float32,
    model_identity,
    resolve_dtype,
)

logger = logging.getLogger(__name__)

MAX_PENDING_WRITES = 8  # computed batches waiting for the writer thread, at most
WAIT_HINT_SHARE = 0.1  # above this share of the loop spent waiting for frames, the summary says what would help
KEPT_ON_NO_SPACE = "the finished shards are kept: free space and rerun"
PREFETCH_BATCHES = 4  # decoded batches each worker keeps ready: smooths decoding's pace when it is close to the model's


def process_cores(state: PartialState) -> int:
    """This process's share of the machine's cores."""
    return max(1, available_cores() // state.num_processes)


def resources(config: ExtractConfig, state: PartialState) -> tuple[int, int]:
    """(decoding workers, torch threads) per process: the cores of the machine split over its processes, and each
    process's share split between its workers and its torch threads (more busy threads than cores makes torch's
    threads wait on each other). A GPU leaves most of the cores to decoding."""
    per_process = process_cores(state)
    on_gpu = state.device.type == "cuda"
    workers = config.num_workers
    if workers is None:
        workers = min(8, per_process - 1) if on_gpu else decoding_cores(state.num_processes)
    return workers, config.threads or compute_threads(workers, state.num_processes)


def make_source(config: ExtractConfig) -> Source:
    if config.dataset:
        return DatasetSource(config.dataset, config.dataset_config, config.split, config.limit, config.revision)
    if config.videos:
        return VideoSource(config.videos, config.limit)
    if config.images:
        return ImageFolderSource(config.images, config.limit)
    return LeRobotSource(config.lerobot, config.revision, config.camera, config.episodes, config.limit)


def make_extractor(config: ExtractConfig, state: PartialState) -> tuple[Extractor, Any]:
    name = config.model or config.encoder
    model = load_model(name, config.dtype, config.device_map, state.device, encoder=config.encoder is not None,
                       allow_missing_weights=config.allow_missing_weights)
    if config.model:
        return LatentActionExtractor(model, name, config.batch_size, compiled=config.compile), model
    return EncoderFeatureExtractor(model, name, config.batch_size), model


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _inputs(source: Source, config: ExtractConfig) -> dict[str, Any]:
    """The resolved inputs: absolute paths of the files and folders (named as given: their names are the rows' ids),
    the dataset and its rows, the episodes."""
    if isinstance(source, VideoSource):
        return {"videos": [os.path.abspath(path) for path in source.paths]}
    if isinstance(source, ImageFolderSource):
        return {"images": [os.path.abspath(folder) for folder in source.folders]}
    if isinstance(source, LeRobotSource):
        return {"lerobot": str(Path(source.root).resolve()), "camera": source.dataset.camera,
                "episodes": [episode.episode_index for episode in source.episodes]}
    local = Path(source.root).expanduser()
    return {"dataset": str(local.resolve()) if local.is_dir() else source.root, "config": config.dataset_config,
            "split": config.split, "revision": config.revision, "rows": len(source)}


def run_record(config: ExtractConfig, source: Source, model: Any) -> dict[str, Any]:
    """What a rerun into the same folder must repeat (`run.json`): the resolved inputs, the model (a local folder by
    its weights, wherever it lies; a Hub id with its commit) and the options that change the rows. Not the text of
    the arguments: `--out k7` and `--out /abs/k7`, relative and absolute `--videos`, are one run, and a folder moved
    elsewhere resumes there."""
    name = config.model or config.encoder
    revision = model_identity(name, model)
    local = Path(name).expanduser().is_dir()
    return {
        "inputs": _inputs(source, config),
        "model": {"kind": "model" if config.model else "encoder", "id": None if local and revision else name,
                  "revision": revision},
        "options": {"layout": source.layout, "stride": config.stride, "stride_seconds": config.stride_seconds,
                    "dtype": config.dtype,
                    "labels": _file_digest(config.labels) if config.labels else None},
    }


def make_plan(outdir: Path, source: Source, config: ExtractConfig, readers: int, labels: Labels | None) -> plan.Plan:
    """The first run's plan (`plan.make`), with each sample's stride in frames for `--stride-seconds`."""
    info = strides.sample_strides(source, config.stride_seconds) if config.stride_seconds is not None else {}
    return plan.make(outdir, source, config.stride, config.shard_size, config.batch_size, readers, labels, info)


class Writers:
    """The open shards of this process; rows are written in a background thread so the model never waits on disk."""

    def __init__(self, outdir: Path, units: list[plan.WorkUnit], schema: pa.Schema, run: str):
        self.outdir, self.units, self.schema, self.run = outdir, units, schema, run
        self.open: dict[int, shards.ShardWriter] = {}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lary-write")
        self.pending: list[Future] = []

    def _writer(self, position: int) -> shards.ShardWriter:
        if position not in self.open:
            unit = self.units[position]
            previous = None
            if unit.attempt:
                previous = shards.finished_attempts(self.outdir, unit.num_shards)[unit.shard][-1]
            self.open[position] = shards.ShardWriter(self.outdir, unit.name, self.schema, self.run, previous)
        return self.open[position]

    def write(self, position: int, make_table, pairs: int) -> None:
        writer = self._writer(position)
        self._submit(lambda: writer.write(make_table(), pairs))

    def close(self, position: int, errors: list[dict[str, Any]]) -> None:
        writer = self._writer(position)
        del self.open[position]
        self._submit(lambda: writer.close(errors))

    def _submit(self, job) -> None:
        while self.pending and (self.pending[0].done() or len(self.pending) >= MAX_PENDING_WRITES):
            self.pending.pop(0).result()  # a failed write raises here; a full queue waits for the oldest
        self.pending.append(self.pool.submit(job))

    def finish(self) -> None:
        self.pool.shutdown(wait=True)
        for future in self.pending:
            future.result()  # a failed write raises here


@dataclass
class LoopTime:
    """Where this process's extraction loop spent its time: until the first batch arrived (forking the workers and
    their first windows), then waiting for decoded batches, out of the whole loop; and the pairs it computed."""

    first_batch: float
    waiting: float
    total: float
    pairs: int

    def describe(self, workers: int, cores: int) -> str | None:
        """The summary's line for a process with `workers` decoding workers on `cores` cores, with advice only where
        it applies: a model that waited for frames more than `WAIT_HINT_SHARE` of the time is fed faster by more
        workers while they have cores of their own (the model keeps one), else only by more cores. None when the
        loop computed nothing (there is nothing to say of its pace)."""
        if self.pairs == 0:
            return None
        share = self.waiting / max(self.total - self.first_batch, 1e-9)
        line = f"first batch after {self.first_batch:.1f} s, then the model waited for frames {100 * share:.0f}% of the time"
        if share <= WAIT_HINT_SHARE:
            return line
        if workers + 1 < cores:
            return f"{line}; more --num-workers (up to {cores - 1} on this process's {cores} cores) would feed it faster"
        return (f"{line}: decoding is the slower side, and this process's {cores} core(s) are all taken (the model "
                f"and {workers} decoding worker(s)); only more cores would feed it faster")


def run_units(units: list[plan.WorkUnit], source: Source, extractor: Extractor, config: ExtractConfig, schema: pa.Schema,
              labels: Labels | None, workers: int, state: PartialState, run: str, sample_strides: int | list[int | None]
              ) -> LoopTime:
    """Decode, compute and write this process's units."""
    stream = UnitStream(source, units, extractor, config.batch_size, sample_strides)
    loader = DataLoader(
        stream, batch_size=None, num_workers=workers, collate_fn=lambda item: item,
        pin_memory=state.device.type == "cuda", prefetch_factor=PREFETCH_BATCHES if workers else None,
        worker_init_fn=worker_signals,
    )
    writers = Writers(config.out, units, schema, run)
    progress = tqdm(total=sum(unit.rows for unit in units), unit="row", desc=f"extract (process 1 of {state.num_processes})",
                    disable=not state.is_main_process or logs.progress_hidden())
    pairs_done, start = 0, time.perf_counter()
    first_batch = None
    release = PeriodicRelease()
    # The workers fork from this process: with its objects frozen, no garbage collection (here or in a worker)
    # writes to their headers, so the pages they share stay shared instead of being copied bit by bit over a long
    # run. With the heap trimmed as well, a 9,000-frame video peaks within 1.2x of a 1,000-frame one (1.8x with
    # neither; benchmarks/bench_long_video.py).
    if workers:
        gc.freeze()
    try:
        with forking_workers():
            items = iter(loader)  # the workers fork here
            keep_freed_memory()  # in this process only (finding the C library starts a process too): the model's
            # batches gain, the workers' decoding does not (2% slower)
        busy = 0.0  # handling batches after the first arrived; the rest of that time the loop waited for one
        for item in items:
            raise_if_stopped()
            began = time.perf_counter()
            if first_batch is None:
                first_batch = began - start
            if isinstance(item, UnitEnd):
                writers.close(item.unit, item.errors)
            else:
                outputs = extractor.compute(item.pieces)
                writers.write(item.unit, lambda item=item, outputs=outputs: rows.batch_table(item, outputs, source, schema, labels),
                              item.pairs)
                pairs_done += item.pairs
                progress.update(item.pairs if source.layout == "pair" else len(item.pieces))
                progress.set_postfix({"pairs/s": f"{pairs_done / max(time.perf_counter() - start, 1e-9):.1f}"})
                release()
            busy += time.perf_counter() - began
    finally:
        gc.unfreeze()
        progress.close()  # also on an error: its line ends before the error's
    total = time.perf_counter() - start
    first_batch = total if first_batch is None else first_batch
    writers.finish()
    return LoopTime(first_batch, total - first_batch - busy, total, pairs_done)


def extract(config: ExtractConfig) -> int:
    """Run `lary extract`; returns the exit code (1 when some samples could not be read)."""
    # 1. Processes, torch threads and decoding workers.
    state = process_state(config.cpu)
    if config.device_map and state.num_processes > 1:
        raise LaryError("--device-map auto spreads one model over all GPUs: run it as a single process")
    workers, threads = resources(config, state)
    torch.set_num_threads(threads)
    config.dtype = resolve_dtype(config.dtype, state.device)  # a run records, and resumes with, what "auto" chose
    outdir = config.out
    logger.debug("%d process(es), %d torch thread(s) and %d decoding worker(s) each", state.num_processes, threads, workers)

    # 2. What to read, and the model. Nothing is written before both have loaded.
    with state.main_process_first():  # the main process builds the datasets cache first
        source = make_source(config)
    check_out(outdir, source)
    labels = Labels(config.labels) if config.labels else None
    if labels is not None:
        labels.check_ids([source.sample_id(index) for index in range(len(source))], complete=config.limit is None)
    extractor, model = make_extractor(config, state)
    schema = rows.output_schema(source, extractor, labels)

    # 3. The plan, under the folder's lock (one live run per folder): the first run records what it reads and cuts the
    #    work into shards; a rerun must read the same and does what is left (missing shards, damaged ones, and what
    #    failed in the others).
    record = run_record(config, source, model)
    with OutputLock(outdir) as lock, no_space_names(outdir, KEPT_ON_NO_SPACE):
        the_plan, damaged, run = plan_folder(outdir, source, config, record, state, workers, labels, lock)
        todo = plan.remaining(outdir, the_plan.shards)
        state.wait_for_everyone()  # every process has planned before any writes

        # 4. The work: this process's shards, decoded by the workers, computed here, written by a background thread.
        before = shards.summarize(outdir, len(the_plan.shards))
        start = time.perf_counter()
        mine = todo[state.process_index :: state.num_processes]
        with exact_float32(extractor.device, extractor.dtype):
            loop = (run_units(mine, source, extractor, config, schema, labels, workers, state, run,
                              the_plan.strides(config.stride)) if mine else None)
        state.wait_for_everyone()
        seconds = time.perf_counter() - start

        # 5. The summary: manifest.json, errors.jsonl (what still could not be read), and lines for the user.
        totals = shards.summarize(outdir, len(the_plan.shards))
        if state.is_main_process:
            shards.write_errors(outdir, totals["errors"])
            manifest = make_manifest(config, source, extractor, labels, record, totals, the_plan)
            if config.stride_seconds is not None:
                manifest.update(strides.manifest_record(the_plan, [source.sample_id(i) for i in range(len(source))]))
            if isinstance(extractor, LatentActionExtractor):  # codes to judge: the report covers every shard
                manifest["label_health"] = health.folder_report(outdir, totals["shards"], model.config.codebook_size)
            shards.write_manifest(outdir, manifest)
            lines = summary_lines(outdir, totals, before, seconds, bool(todo), damaged)
            if manifest.get("label_health"):
                lines.append(health.summary_line(manifest["label_health"]))
            for line in lines:  # what the run did: shown with -q too
                logger.log(logs.RESULT, "%s", line)
            if loop is not None and (pace := loop.describe(workers, process_cores(state))) is not None:
                logger.info("process 1 of %d: %s", state.num_processes, pace)
            for warning in (manifest.get("label_health") or {}).get("warnings", []):
                logger.warning("%s (see docs/extract.md, \"Label health\")", warning)
            if totals["errors"]:
                logger.warning("%d sample(s) could not be read: see %s; rerun to retry them", len(totals["errors"]),
                               outdir / shards.ERRORS_FILE)
    return 1 if totals["errors"] else 0


def check_out(outdir: Path, source: Source) -> None:
    """`--out` must not be inside what the run reads (it would change: a dataset's or LeRobot dataset's files, an
    image folder's), nor a folder of the input videos, symlinks resolved. Checked before the model loads."""
    if isinstance(source, VideoSource):
        for folder in sorted({path.parent for path in source.paths}):
            if outdir.resolve() == folder.resolve():
                raise LaryError(f"--out {outdir} is the folder of the input videos {folder}: write the output elsewhere")
    elif isinstance(source, ImageFolderSource):
        for folder in source.folders:
            outside(outdir, folder, "the image folder")
    elif isinstance(source, LeRobotSource):
        outside(outdir, source.root, "the LeRobot dataset")
    elif Path(source.root).expanduser().is_dir():
        outside(outdir, Path(source.root).expanduser(), "the dataset")


def plan_folder(outdir: Path, source: Source, config: ExtractConfig, record: dict[str, Any], state: PartialState,
                workers: int, labels: Labels | None, lock: OutputLock) -> tuple[plan.Plan, list[str], str]:
    """The main process checks that the folder is new, empty or ours (`shards.check_folder`, before anything is
    written there), locks it, checks or records the run, plans it and removes our leftovers and damaged shards; what
    it finds wrong ends every process (refused before the run is recorded, it removes the lock file and the folders
    it made). Returns the plan (read once by each process), the damaged files removed and
    the run's id."""
    outcome: list[Any] = [[], None]
    planned = None
    if state.is_main_process:
        made = [folder for folder in (outdir, *outdir.parents) if not folder.exists()]  # what mkdir makes, deepest first
        try:
            shards.check_folder(outdir)
            try:
                outdir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise
                raise LaryError(f"--out {outdir}: cannot create the folder ({error.strerror})") from None
            lock.acquire()
            if shards.read_run(outdir) is not None:
                shards.check_run(outdir, record)
            planned = plan.load(outdir) or make_plan(outdir, source, config, state.num_processes * max(workers, 1), labels)
            planned.check_resumable(outdir, config.shard_size, len(source))
            outcome[1] = shards.record_run(outdir, record)
            shards.remove_temporary_files(outdir)
            num_shards = len(planned.shards)
            shards.check_shards(outdir, num_shards, outcome[1])
            outcome[0] = shards.drop_damaged(outdir, num_shards)
            for line in outcome[0]:
                logger.warning("damaged shard, redone: %s", line)
        except (LaryError, NoSpaceError) as error:
            outcome[0] = error
            if outcome[1] is None:  # refused before recording the run: leave no lock file, nor folders, of ours
                lock.discard()
                for folder in made:
                    try:
                        folder.rmdir()  # only while empty
                    except OSError:
                        break
    broadcast_object_list(outcome)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return planned or plan.load(outdir), outcome[0], outcome[1]  # the other processes read what the main one wrote


def make_manifest(config: ExtractConfig, source: Source, extractor: Extractor, labels: Labels | None,
                  record: dict[str, Any], totals: dict[str, Any], the_plan: plan.Plan) -> dict[str, Any]:
    """`manifest.json`: what the folder holds and how it was made (paths in it are the inputs'; the folder's own
    files by name, so it can be moved)."""
    manifest = {
        "model": config.model or config.encoder,
        "model_revision": record["model"]["revision"],
        "dataset": config.dataset or config.lerobot or source.root,
        "config": config.dataset_config,
        "split": config.split if config.dataset else None,
        "layout": source.layout,
        "kind": source.kind,
        "stride": config.stride if source.layout == "pair" or source.kind == "clip" else None,
        "rows": totals["rows"],
        "pairs": totals["pairs"],
        "shard_size": the_plan.shard_size,
        "shards": totals["shards"],
        "errors": len(totals["errors"]),
        "arguments": given_arguments(config),
        "feature_columns": list(extractor.columns(False)),
    }
    if isinstance(extractor, LatentActionExtractor):
        manifest["processor"] = {"size": extractor.processor.size, "resample": extractor.processor.resample}
    if isinstance(source, VideoSource) and any(turned := video_rotations(source.paths)):  # as lary.frames decoded them
        manifest["rotation"] = {source.sample_id(i): degrees for i, degrees in enumerate(turned) if degrees}
    names = labels.names if labels is not None else source.label_names
    if names is not None:
        manifest["label_names"] = names
    return manifest


def given_arguments(config: ExtractConfig) -> dict[str, Any]:
    """The options that made the rows, as given, without `--out` and without those that do not apply (`--split`
    without `--dataset`, `--stride` beside `--stride-seconds`, unset ones)."""
    inapplicable = {"out"}
    if config.dataset is None:
        inapplicable.add("split")
    if config.stride_seconds is not None:
        inapplicable.add("stride")
    return {name: value for name, value in run_identity(config).items() if name not in inapplicable and value is not None}


def summary_lines(outdir: Path, totals: dict[str, Any], before: dict[str, Any], seconds: float, worked: bool,
                  damaged: list[str]) -> list[str]:
    """The run's story for the user, a line each: what it did (or that nothing was left), what it redid."""
    if not worked:
        lines = [f"everything was already extracted: {outdir} holds {totals['rows']} rows ({totals['pairs']} pairs)"]
    else:
        new_rows, pairs = totals["rows"] - before["rows"], totals["pairs"] - before["pairs"]
        lines = [f"extracted {new_rows} rows ({pairs} pairs) in {seconds:.1f} s: {pairs / max(seconds, 1e-9):.2f} "
                 f"pairs/s; {outdir} holds {totals['rows']} rows"]
    if damaged:
        lines.append(f"redid {len(damaged)} damaged shard file(s): " + "; ".join(damaged))
    return lines
