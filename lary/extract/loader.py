"""Decoding and resizing for `lary extract`, in DataLoader worker processes while the model computes.

Each worker takes whole shards (`WorkUnit`s): worker `w` of `W` the units `w, w + W, ...` of this process. It decodes a
unit's samples in order, prepares their frames (`extractor.prepare`: the resize to model size on CPU, or nothing
when the model resizes on the GPU) and yields `Batch`es of at most `batch_size` pairs, then a `UnitEnd` with the
unit's unreadable samples. A batch belongs to one unit and its composition depends only on the unit and
`batch_size`, so the rows written do not depend on the number of workers.

Pair rows are batched on a grid: batch `b` of a unit holds its rows `b * batch_size .. (b + 1) * batch_size - 1`,
whichever samples they come from. Shards of a multiple of `batch_size` rows start on the same grid (the default
shard size is one), so the batches, and the values computed, do not depend on how many processes share the shards.
(Dataset rows, one piece each, fill batches in turn: the same grid for pairs, whole clips for clips.)

Long samples are cut into windows of at most `batch_size` pairs, at the grid's lines; consecutive windows share
`stride` frames (`Piece.carried`), so every pair `(t, t + stride)` is computed once, every frame is decoded once
and goes through the backbone once (the extractor keeps the shared frames' features). Memory is bounded
by the windows in flight, not by the length of a video.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from lary.errors import LaryError
from lary.extract.memory import PeriodicRelease
from lary.extract.plan import Segment, WorkUnit
from lary.extract.sources import Source


class Preparer(Protocol):
    """What an extractor does to frames in the workers (see `lary.extract.models`)."""

    resize_on_device: bool  # `prepare` leaves frames at their size; the model's device resizes them

    def prepare(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        """(H, W, 3) uint8 frames -> the model's input for each (or the frames as tensors, to resize on device)."""

    def resize(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        """(H, W, 3) uint8 frames of any sizes -> the model's input for each, always on the CPU."""


@dataclass
class Piece:
    """Consecutive frames of one sample in a batch, and their pairs `(i, i + stride)` (row layout: the row's frames)."""

    sample: int
    frame_indices: np.ndarray  # the frames' indices in the sample
    times: np.ndarray  # their times in seconds (NaN where unknown)
    pixels: torch.Tensor  # prepared frames
    resized: bool  # False: the frames at their own size, for the model's device to resize
    stride: int
    passthrough: dict[str, Any] = field(default_factory=dict)  # row layout: the row's pass-through values
    carried: int = 0  # its first frames, the previous window's last: their features are computed there

    @property
    def pairs(self) -> int:
        return len(self.frame_indices) - self.stride


@dataclass
class Batch:
    unit: int  # position of the unit in this process's list
    pieces: list[Piece]

    @property
    def pairs(self) -> int:
        return sum(piece.pairs for piece in self.pieces)

    def pin_memory(self) -> Batch:
        for piece in self.pieces:
            piece.pixels = piece.pixels.pin_memory()
        return self


@dataclass
class UnitEnd:
    unit: int
    errors: list[dict[str, Any]]


STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def forking_workers() -> Iterator[None]:
    """Around the start of the workers (or any other process): Ctrl-C and SIGTERM are noted, then handled once the
    workers have started. During a fork Python may run their handler in an at-fork hook, which swallows its
    KeyboardInterrupt (the run went on to the end); a handler that only notes the signal loses nothing there, and
    the workers start with it (until `worker_signals`)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received[:1]:
            signal.raise_signal(number)


def worker_signals(worker_id: int) -> None:
    """A worker's `worker_init_fn`: Ctrl-C, which the terminal sends to every process of the run, is the main
    process's to handle (it ends the workers); SIGTERM ends a worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stack(frames: list[torch.Tensor]) -> torch.Tensor:
    """The frames of a piece in one tensor, the only copy a worker makes of them: in a DataLoader worker it is written
    straight into shared memory (`default_collate`), which the main process maps instead of receiving a copy."""
    return default_collate(frames)


def _error(source: Source, segment: Segment, reason: str) -> dict[str, Any]:
    return {"id": source.sample_id(segment.sample), **segment.to_json(), "reason": reason}


class UnitStream(IterableDataset):
    """This process's units as batches of prepared frames (see the module docstring)."""

    def __init__(self, source: Source, units: list[WorkUnit], preparer: Preparer, batch_size: int,
                 stride: int | Sequence[int | None]):
        """`stride`: one for every sample, or each sample's (`--stride-seconds`; None where its rate was unreadable
        when the run was planned)."""
        self.source, self.units, self.preparer = source, units, preparer
        self.batch_size, self.stride = batch_size, stride

    def _stride(self, sample: int) -> int | None:
        return self.stride if isinstance(self.stride, int) else self.stride[sample]

    def __iter__(self) -> Iterator[Batch | UnitEnd]:
        worker = get_worker_info()
        positions = range(len(self.units)) if worker is None else range(worker.id, len(self.units), worker.num_workers)
        release = PeriodicRelease()
        for position in positions:
            for item in self._unit(position):
                yield item
                if worker is not None:
                    release()

    def _unit(self, position: int) -> Iterator[Batch | UnitEnd]:
        errors: list[dict[str, Any]] = []
        pending: list[Piece] = []
        pending_pairs, pending_cell = 0, None
        pieces = self._row_pieces if self.source.layout == "row" else self._pair_pieces
        offset = 0  # the segment's first row in the unit, as planned
        for segment in self.units[position].segments:
            for cell, piece in pieces(segment, offset, errors):
                if pending and (cell != pending_cell or pending_pairs + piece.pairs > self.batch_size):
                    yield Batch(position, pending)
                    pending, pending_pairs = [], 0
                pending.append(piece)
                pending_pairs, pending_cell = pending_pairs + piece.pairs, cell
                if pending_pairs == self.batch_size:  # full: sent now, not after the next piece
                    yield Batch(position, pending)
                    pending, pending_pairs = [], 0
            offset += 1 if segment.count is None else segment.count
        if pending:
            yield Batch(position, pending)
        yield UnitEnd(position, errors)

    def _row_pieces(self, segment: Segment, offset: int, errors: list[dict[str, Any]]) -> Iterator[tuple[None, Piece]]:
        """The row's frames as one piece: a pair (1 pair) or a clip (its pairs at `stride`); no grid cell."""
        try:
            frames, passthrough = self.source.row(segment.sample)
            stride = 1 if self.source.kind == "pair" else self.stride
            if len(frames) <= stride:
                raise LaryError(f"{len(frames)} frames; stride {stride} needs at least {stride + 1}")
            if len({frame.shape for frame in frames}) == 1:
                pixels, resized = _stack(self.preparer.prepare(frames)), not self.preparer.resize_on_device
            else:  # a row's frames in different sizes: resized here (the device resizes a batch of one size)
                pixels, resized = _stack(self.preparer.resize(frames)), True
        except LaryError as error:  # MediaError included
            errors.append({"id": self.source.sample_id(segment.sample), "index": segment.sample, "reason": str(error)})
            return
        count = len(frames)
        yield None, Piece(segment.sample, np.arange(count), np.full(count, np.nan), pixels, resized, stride, passthrough)

    def _pair_pieces(self, segment: Segment, offset: int, errors: list[dict[str, Any]]) -> Iterator[tuple[int, Piece]]:
        """Windows over the segment's frames `first .. first + count - 1 + stride`, cut at the grid's lines (the
        segment's first pair is row `offset` of its unit), each with its grid cell."""
        stride, cell = self._stride(segment.sample), offset // self.batch_size
        if stride is None:
            errors.append(_error(self.source, segment, "unreadable when the run was planned, so its frame rate (and "
                                                       "stride) is unknown: extract it into another folder"))
            return
        window = self.batch_size - offset % self.batch_size + stride  # frames up to the next line
        stop = None if segment.count is None else segment.first + segment.count + stride
        carried: list[tuple[int, float, torch.Tensor]] = []  # the last `stride` frames of the previous window
        fresh: list[tuple[int, float, np.ndarray]] = []
        seen = 0  # frames read from `first` on
        try:
            if segment.count is None:  # unreadable when planned: the same checks again, now reported
                self.source.length(segment.sample)
            for frame in self.source.frames(segment, stop):
                if frame.index < segment.first:
                    continue
                fresh.append((frame.index, frame.time, frame.rgb))
                seen += 1
                if len(carried) + len(fresh) == window:
                    piece, carried = self._piece(segment.sample, carried, fresh, stride)
                    fresh = []
                    yield cell, piece
                    cell, window = cell + 1, self.batch_size + stride
            if len(carried) + len(fresh) > stride:
                yield cell, self._piece(segment.sample, carried, fresh, stride)[0]
        except LaryError as error:  # MediaError included: the pairs not yet computed fail
            done = max(0, seen - len(fresh) - stride)
            errors.append(_error(self.source, self._rest(segment, done), str(error)))
            return
        expected = None if segment.count is None else segment.count + stride
        if expected is not None and seen < expected:
            done = max(0, seen - stride)
            reason = f"ended after frame {segment.first + seen - 1}; the plan expected frames up to {stop - 1}"
            errors.append(_error(self.source, self._rest(segment, done), reason))
        elif expected is None and seen <= stride:
            errors.append(_error(self.source, segment, f"{seen} frames; stride {stride} needs at least {stride + 1}"))

    @staticmethod
    def _rest(segment: Segment, done: int) -> Segment:
        """What is left of `segment` after its first `done` pairs (seeking where the segment did)."""
        count = None if segment.count is None else segment.count - done
        return Segment(segment.sample, segment.first + done, count, segment.seek_frame, segment.seek_pts)

    def _piece(self, sample: int, carried: list, fresh: list, stride: int) -> tuple[Piece, list]:
        """A piece from the carried (prepared) frames and the fresh (decoded) ones; returns it and the frames the next
        window carries."""
        prepared = self.preparer.prepare([rgb for _, _, rgb in fresh])
        frames = carried + [(index, time, pixels) for (index, time, _), pixels in zip(fresh, prepared)]
        piece = Piece(
            sample,
            np.asarray([index for index, _, _ in frames]),
            np.asarray([time for _, time, _ in frames], dtype=np.float64),
            _stack([pixels for _, _, pixels in frames]),
            not self.preparer.resize_on_device,
            stride,
            carried=len(carried),
        )
        return piece, frames[len(frames) - stride :]
