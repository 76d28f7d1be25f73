"""Which rows each shard of `lary extract` holds: the plan of a run, and what is left to do when it resumes.

A run writes rows of one of two layouts:
- "row": one output row per sample (a dataset's frame pair or clip). Shard `i` holds samples
  `[i * shard_size, (i + 1) * shard_size)`.
- "pair": one output row per frame pair `(t, t + stride)` of each sample (a video, an image folder, a LeRobot
  episode). Samples are laid end to end and cut into shards of `shard_size` pairs: short samples share a shard, a long
  video spans many, so a run killed inside a two-hour video redoes at most one shard of it.

A shard is a list of `Segment`s (a sample, its first pair, how many pairs). The plan is made by the first run (`make`:
each sample's length read from its container, the shard size chosen for the readers) and saved in `plan.json`, so that
a resumed run cuts the work exactly as the first did; each process reads it once (`load`, a `Plan`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from lary import logs
from lary.errors import LaryError, MediaError
from lary.extract import shards

if TYPE_CHECKING:
    from lary.extract.labels import Labels
    from lary.extract.sources import Source

PLAN_FILE = "plan.json"
MAX_AUTO_SHARD_SIZE = 1000


@dataclass(frozen=True)
class Segment:
    """Pairs `first .. first + count - 1` of sample `sample` (row layout: the whole sample, `count` 1).

    `count` None: as many as the sample turns out to have (its length was unknown when planning). `seek_frame` and
    `seek_pts`: a frame at or before `first` and its video timestamp, to seek to (None: decode from the start).
    """

    sample: int
    first: int = 0
    count: int | None = 1
    seek_frame: int = 0
    seek_pts: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.sample, "first": self.first, "count": self.count, "seek_frame": self.seek_frame, "seek_pts": self.seek_pts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        """From `to_json` (row-layout error records have only `index`)."""
        return cls(data["index"], data.get("first", 0), data.get("count", 1), data.get("seek_frame", 0), data.get("seek_pts"))


@dataclass(frozen=True)
class WorkUnit:
    """Shard `shard` of `num_shards`, attempt 0 (all its segments) or a retry of the segments that failed."""

    shard: int
    num_shards: int
    attempt: int
    segments: tuple[Segment, ...]

    @property
    def name(self) -> str:
        return shards.shard_name(self.shard, self.num_shards, self.attempt)

    @property
    def rows(self) -> int:
        """Rows planned (a segment of unknown length counts as one)."""
        return sum(1 if segment.count is None else segment.count for segment in self.segments)


def row_units(num_samples: int, shard_size: int) -> list[list[Segment]]:
    """Row layout: `shard_size` samples per shard."""
    return [
        [Segment(sample) for sample in range(start, min(start + shard_size, num_samples))]
        for start in range(0, max(num_samples, 1), shard_size)
    ]


def pair_units(pair_counts: list[int | None], shard_size: int, frame_pts: list[Any]) -> list[list[Segment]]:
    """Pair layout: samples end to end, cut every `shard_size` pairs. `pair_counts[s]` is None for a sample whose
    length is unknown (it takes one place); `frame_pts[s]` holds its frames' video timestamps (to seek), or None."""
    units: list[list[Segment]] = [[]]
    room = shard_size
    for sample, count in enumerate(pair_counts):
        first, left = 0, 1 if count is None else count
        while left > 0:
            if room == 0:
                units.append([])
                room = shard_size
            take = min(room, left)
            pts = frame_pts[sample]
            seek = (first, int(pts[first])) if pts is not None and first > 0 and count is not None else (0, None)
            units[-1].append(Segment(sample, first, None if count is None else take, *seek))
            first, left, room = first + take, left - take, room - take
    return units


@dataclass(frozen=True)
class Plan:
    """A run's plan, as `plan.json` holds it: its shards' segments and its `info` (`layout`, `samples`, `shard_size`;
    with `--stride-seconds`, `stride_seconds` and each sample's `stride_frames` and `fps`)."""

    shards: list[list[Segment]]
    info: dict[str, Any]

    @property
    def shard_size(self) -> int:
        return self.info["shard_size"]

    def strides(self, stride: int) -> int | list[int | None]:
        """The stride of every sample as planned: `stride` for all, or each sample's with `--stride-seconds`."""
        return self.info.get("stride_frames", stride)

    def check_resumable(self, outdir: Path, shard_size: int | None, num_samples: int) -> None:
        """A rerun must cut its input as the first run did: refused when `--shard-size` or the input's size differ."""
        if shard_size is not None and shard_size != self.shard_size:
            raise LaryError(
                f"{outdir} was planned with --shard-size {self.shard_size}, not {shard_size}: rerun without "
                "--shard-size (or with that value) to resume, or choose another --out"
            )
        if self.info["samples"] != num_samples:
            raise LaryError(f"{outdir} was planned for {self.info['samples']} samples; the input now has {num_samples}")


def pair_counts(source: Source, stride: int | list[int | None], labels: Labels | None) -> tuple[list[int | None], list[Any]]:
    """Pair counts and frame timestamps of every sample, from their containers (nothing is decoded); a sample that
    cannot be read or is too short gets no count (it is tried, and reported, when its shard runs). `stride`: one for
    all samples, or each sample's (`--stride-seconds`; None for a sample whose rate could not be read)."""
    counts, frame_pts = [], []
    for index in tqdm(range(len(source)), desc="plan: read lengths", unit="sample",
                      disable=len(source) < 50 or logs.progress_hidden()):
        sample_stride = stride if isinstance(stride, int) else stride[index]
        try:
            length, pts = source.length(index) if sample_stride is not None else (0, None)
        except MediaError:
            length, pts = 0, None
        if length == 0:
            counts.append(None)
            frame_pts.append(None)
            continue
        if labels is not None:
            labels.check_frames(source.sample_id(index), length, sample_stride)
        counts.append(length - sample_stride if length > sample_stride else None)
        frame_pts.append(pts)
    return counts, frame_pts


def auto_shard_size(total: int, readers: int, batch_size: int) -> int:
    """Rows per shard for `total` rows read by `readers` (processes x decoding workers) in batches of `batch_size`.

    Shards are whole batches: every shard starts on the grid of `batch_size` rows that the loader cuts batches on, so
    the batches, and so the values computed, are those of one process however many read. Of those sizes (up to
    `MAX_AUTO_SHARD_SIZE` rows, or one batch), the one whose last round of shards ends first when every reader takes
    the next shard, the largest of equals: no reader is left alone with the last shards (10 shards for 8 workers
    leave 2 of them decoding the last 2 while 6 wait)."""
    batches = -(-max(total, 1) // batch_size)

    def finish(per_shard: int) -> int:  # batches read by the busiest reader
        return -(-(-(-batches // per_shard)) // readers) * per_shard

    per_shard = min(range(1, max(1, MAX_AUTO_SHARD_SIZE // batch_size) + 1), key=lambda size: (finish(size), -size))
    return per_shard * batch_size


def make(outdir: Path, source: Source, stride: int, shard_size: int | None, batch_size: int, readers: int,
         labels: Labels | None, info: dict[str, Any]) -> Plan:
    """The first run's plan, saved to `plan.json`: the shard size (`shard_size`, or `auto_shard_size` over the
    `readers`, processes x decoding workers, so that every one gets an equal share), and for the pair layout the
    shards' segments. `info`: what the plan keeps besides (`--stride-seconds`' strides, which replace `stride`)."""
    info = {"layout": source.layout, "samples": len(source), **info}
    if source.layout == "row":
        counts, frame_pts = [], []
        total = len(source)
    else:
        counts, frame_pts = pair_counts(source, info.get("stride_frames", stride), labels)
        total = sum(count or 1 for count in counts)
    shard_size = shard_size or auto_shard_size(total, readers, batch_size)
    units = pair_units(counts, shard_size, frame_pts) if source.layout == "pair" else []
    save(outdir, units, {**info, "shard_size": shard_size})
    return load(outdir)


def save(outdir: Path, units: list[list[Segment]], info: dict[str, Any]) -> None:
    data = {**info, "shards": [[[s.sample, s.first, s.count, s.seek_frame, s.seek_pts] for s in unit] for unit in units]}
    shards.write_atomic(outdir / PLAN_FILE, json.dumps(data))


def load(outdir: Path) -> Plan | None:
    """The saved plan (row layout: `shard_size` samples per shard), or None when this folder has none yet."""
    path = outdir / PLAN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        units = [[Segment(*segment) for segment in unit] for unit in data.pop("shards")]
        lacking = sorted({"layout", "samples", "shard_size"} - set(data))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        lacking = [f"{type(error).__name__}: {error}"]
    if lacking:
        raise LaryError(f"{path} is damaged (lacking or unreadable: {', '.join(lacking)}): restore it, or start again "
                        "in another --out")
    if data["layout"] == "row":
        units = row_units(data["samples"], data["shard_size"])
    return Plan(units, data)


def remaining(outdir: Path, units: list[list[Segment]]) -> list[WorkUnit]:
    """What is left: shards never completed, and retries of the segments that failed in a shard's latest attempt."""
    num_shards = len(units)
    done = shards.finished_attempts(outdir, num_shards)
    work = []
    for shard, segments in enumerate(units):
        if shard not in done:
            work.append(WorkUnit(shard, num_shards, 0, tuple(segments)))
            continue
        failed = shards.sidecar(outdir, done[shard][-1])["errors"]
        if failed:
            retry = tuple(Segment.from_json(error) for error in failed)
            work.append(WorkUnit(shard, num_shards, len(done[shard]), retry))
    return work
