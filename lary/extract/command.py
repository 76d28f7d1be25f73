"""`lary extract`: latent actions (or encoder features) for every row of a dataset, video files or image folders,
sharded over accelerate processes and resumable. See docs/extract.md."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from accelerate import PartialState
from tqdm import tqdm

from . import shards
from .models import DTYPES, EncoderFeatureExtractor, Extractor, LatentActionExtractor, load_model, model_revision
from .sources import DatasetSource, ImageFolderSource, Sample, SampleError, Source, VideoSource

# Arguments that do not change what is written: a rerun may change them and still resume.
RESUMABLE_ARGUMENTS = ("out", "batch_size", "device_map", "cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="LAPA-DINOv3 folder or Hub id: writes latent actions.")
    what.add_argument("--encoder", help="Any 🤗 vision AutoModel (with an image processor): writes patch `features`.")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--dataset", help="Folder or Hub id that datasets.load_dataset reads (e.g. `lary prepare` output).")
    inputs.add_argument("--videos", nargs="+", metavar="FILE_OR_GLOB", help="Video files, one clip (row) each.")
    inputs.add_argument("--images", nargs="+", metavar="DIR", help="Folders of consecutive image files, one clip each.")
    parser.add_argument("--config", help="Dataset config, e.g. `libero` (with --dataset).")
    parser.add_argument("--split", default="validation", help="Dataset split (with --dataset).")
    parser.add_argument("--stride", type=int, default=1, help="Clips: latent actions of frames (t, t + stride).")
    parser.add_argument("--out", required=True, help="Output folder: Parquet shards, manifest.json, errors.jsonl.")
    parser.add_argument("--batch-size", type=int, default=32, help="Frame pairs per forward pass.")
    parser.add_argument("--shard-size", type=int, default=1000, help="Rows per output shard (the unit of resuming).")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="Model weights dtype.")
    parser.add_argument("--device-map", choices=["auto"], help="Shard one big model over all GPUs (one process).")
    parser.add_argument("--cpu", action="store_true", help="Run on CPU, also under `accelerate launch`.")
    parser.add_argument("--limit", type=int, help="Only the first N rows.")


def run_arguments(args: argparse.Namespace, source: Source) -> dict[str, Any]:
    """What identifies a run's output (checked against `run.json` on resume)."""
    arguments = {name: value for name, value in vars(args).items() if name not in RESUMABLE_ARGUMENTS}
    if isinstance(source, VideoSource):
        arguments["videos"] = [str(path) for path in source.paths]
    elif isinstance(source, ImageFolderSource):
        arguments["images"] = [str(path) for path in source.folders]
    return arguments


def make_source(args: argparse.Namespace) -> Source:
    if args.dataset:
        return DatasetSource(args.dataset, args.config, args.split, args.limit)
    if args.videos:
        return VideoSource(args.videos, args.limit)
    return ImageFolderSource(args.images, args.limit)


def list_array(rows: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    """Per-row arrays with equal trailing shapes (the first axis may vary) -> a nested `list<...>` array."""
    values = pa.array(np.concatenate([row.reshape(-1) for row in rows]), type=value_type)
    for size in reversed(rows[0].shape[1:]):
        values = pa.ListArray.from_arrays(pa.array(np.arange(0, len(values) + 1, size, dtype=np.int32)), values)
    offsets = np.concatenate([[0], np.cumsum([row.shape[0] for row in rows])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _innermost(data_type: pa.DataType) -> pa.DataType:
    while pa.types.is_list(data_type):
        data_type = data_type.value_type
    return data_type


class UnitExtractor:
    """Loads a unit's samples, batches them (pairs: `batch_size` pairs; clips: equal-length clips up to
    `batch_size` pairs, longer clips in windows of `batch_size` pairs) and writes each batch's rows."""

    def __init__(self, source: Source, extractor: Extractor, schema: pa.Schema, batch_size: int, stride: int):
        self.source, self.extractor, self.schema = source, extractor, schema
        self.batch_size, self.stride = batch_size, stride
        self.clip = source.kind == "clip"
        self.pairs_done = 0

    def pairs_of(self, sample: Sample) -> int:
        return len(sample.pixels) - self.stride if self.clip else 1

    def fits(self, batch: list[Sample], sample: Sample) -> bool:
        if not self.clip:
            return len(batch) < self.batch_size
        same_length = len(sample.pixels) == len(batch[0].pixels)
        return same_length and (len(batch) + 1) * self.pairs_of(sample) <= self.batch_size

    def compute(self, batch: list[Sample]) -> dict[str, list[np.ndarray]]:
        if not self.clip:
            outputs = self.extractor.pairs(torch.stack([sample.pixels for sample in batch]))
            return {name: list(values) for name, values in outputs.items()}
        if len(batch) > 1 or self.pairs_of(batch[0]) <= self.batch_size:
            outputs = self.extractor.clips(torch.stack([sample.pixels for sample in batch]), self.stride)
            return {name: list(values) for name, values in outputs.items()}
        pixels, pairs = batch[0].pixels, self.pairs_of(batch[0])
        windows = [
            self.extractor.clips(pixels[None, start : min(start + self.batch_size, pairs) + self.stride], self.stride)
            for start in range(0, pairs, self.batch_size)
        ]
        return {name: [np.concatenate([window[name][0] for window in windows])] for name in windows[0]}

    def table(self, batch: list[Sample]) -> pa.Table:
        columns: dict[str, pa.Array] = {"id": pa.array([sample.id for sample in batch], pa.string())}
        for name, rows in self.compute(batch).items():
            columns[name] = list_array(rows, _innermost(self.schema.field(name).type))
        for name in self.source.passthrough_types:
            columns[name] = pa.array([sample.passthrough[name] for sample in batch], self.schema.field(name).type)
        return pa.Table.from_pydict(columns, schema=self.schema)

    def run(self, writer: shards.ShardWriter, unit: shards.WorkUnit, progress: tqdm | None) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        batch: list[Sample] = []

        def flush() -> None:
            if batch:
                pairs = sum(self.pairs_of(sample) for sample in batch)
                writer.write(self.table(batch), pairs)
                self.pairs_done += pairs
                if progress is not None:
                    progress.update(len(batch))
                    elapsed = max(progress.format_dict["elapsed"], 1e-9)
                    progress.set_postfix({"pairs/s": f"{self.pairs_done / elapsed:.1f}"})
                batch.clear()

        for index in unit.indices:
            try:
                sample = self.source.load(index, self.extractor.to_pixels)
                if self.clip and len(sample.pixels) <= self.stride:
                    raise SampleError(f"{len(sample.pixels)} frames; stride {self.stride} needs at least {self.stride + 1}")
            except SampleError as error:
                errors.append({"id": self.source.sample_id(index), "index": index, "reason": str(error)})
                if progress is not None:
                    progress.update(1)
                continue
            if batch and not self.fits(batch, sample):
                flush()
            batch.append(sample)
        flush()
        return errors


def main(args: argparse.Namespace) -> int:
    for name in ("batch_size", "shard_size", "stride"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
    if args.dataset is None and args.config is not None:
        raise ValueError("--config goes with --dataset")
    state = PartialState(cpu=args.cpu)
    if args.device_map and state.num_processes > 1:
        raise ValueError("--device-map auto spreads one model over all GPUs: run it as a single process")
    outdir = Path(args.out)
    with state.main_process_first():  # the main process builds the datasets cache first
        source = make_source(args)
    arguments = run_arguments(args, source)
    if state.is_main_process:
        outdir.mkdir(parents=True, exist_ok=True)
        shards.record_run(outdir, arguments)
        shards.remove_temporary_files(outdir)
    state.wait_for_everyone()
    shards.check_run(outdir, arguments)
    units = shards.plan(outdir, len(source), args.shard_size)
    state.wait_for_everyone()  # every process has planned before any writes

    name = args.model or args.encoder
    model = load_model(name, args.dtype, args.device_map, state.device, encoder=args.encoder is not None)
    extractor = LatentActionExtractor(model) if args.model else EncoderFeatureExtractor(model, name)
    clip = source.kind == "clip"
    schema = pa.schema(
        [("id", pa.string()), *extractor.columns(clip).items(), *source.passthrough_types.items()]
    )
    unit_extractor = UnitExtractor(source, extractor, schema, args.batch_size, args.stride)
    mine = units[state.process_index :: state.num_processes]
    start = time.perf_counter()
    progress = None
    if state.is_main_process:
        progress = tqdm(total=sum(len(unit.indices) for unit in mine), unit="row", desc=f"extract (process 1 of {state.num_processes})")
    for unit in mine:
        writer = shards.ShardWriter(outdir, unit, schema)
        writer.close(unit_extractor.run(writer, unit, progress))
    if progress is not None:
        progress.close()
    state.wait_for_everyone()
    seconds = time.perf_counter() - start

    summary = shards.summarize(outdir, len(source), args.shard_size)
    if state.is_main_process:
        done = [shards.sidecar(outdir, outdir / f"{unit.name}.parquet") for unit in units]
        rows, pairs = sum(info["rows"] for info in done), sum(info["pairs"] for info in done)
        manifest = {
            "model": name,
            "model_revision": model_revision(name, model),
            "dataset": args.dataset or str(source.root),
            "config": args.config,
            "split": args.split if args.dataset else None,
            "kind": source.kind,
            "stride": args.stride if clip else None,
            "rows": summary["rows"],
            "pairs": summary["pairs"],
            "shards": summary["shards"],
            "errors": len(summary["errors"]),
            "arguments": arguments,
            "feature_columns": list(extractor.columns(clip)),
        }
        if source.label_names is not None:
            manifest["label_names"] = source.label_names
        shards.write_errors(outdir, summary["errors"])
        shards.write_manifest(outdir, manifest)
        print(f"extracted {rows} rows ({pairs} pairs) in {seconds:.1f} s: {pairs / max(seconds, 1e-9):.2f} pairs/s")
        if summary["errors"]:
            print(f"{len(summary['errors'])} row(s) could not be read: see {outdir / shards.ERRORS_FILE}; rerun to retry them")
    return 1 if summary["errors"] else 0
