"""Which rows each shard of `lary extract` holds: the plan of a run, and what is left to do when it resumes.

A run writes rows of one of two layouts:
- "row": one output row per sample (a dataset's frame pair or clip). Shard `i` holds samples
  `[i * shard_size, (i + 1) * shard_size)`.
- "pair": one output row per frame pair `(t, t + stride)` of each sample (a video, an image folder, a LeRobot
  episode). Samples are laid end to end and cut into shards of `shard_size` pairs: short samples share a shard, a long
  video spans many, so a run killed inside a two-hour video redoes at most one shard of it.

A shard is a list of `Segment`s (a sample, its first pair, how many pairs). The plan is fixed by the first run and
saved in `plan.json` (pair layout), so that a resumed run cuts the work exactly as the first did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lary.errors import LaryError
from lary.extract import shards

PLAN_FILE = "plan.json"


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


def save(outdir: Path, units: list[list[Segment]], info: dict[str, Any]) -> None:
    data = {**info, "shards": [[[s.sample, s.first, s.count, s.seek_frame, s.seek_pts] for s in unit] for unit in units]}
    shards.write_atomic(outdir / PLAN_FILE, json.dumps(data))


def load(outdir: Path) -> tuple[list[list[Segment]], dict[str, Any]] | None:
    """The saved plan and its info, or None when this folder has none yet."""
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
    return units, data


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
