"""`lary extract --stride-seconds S`: each sample's pairs `(t, t + k)` with k = round(S x fps) frames of its own rate
(a video's, from its header; a video of variable frame rate is refused) or its dataset's (LeRobot's info.json), fixed in `plan.json` by the first run (a resumed
run keeps them) and recorded in `manifest.json`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lary.errors import LaryError, MediaError
from lary.extract import plan
from lary.extract.sources import LeRobotSource, VideoSource
from lary.frames import VideoInfo, probe_video, stride_frames


def sample_strides(source: VideoSource | LeRobotSource, seconds: float) -> dict[str, list]:
    """Each sample's `stride_frames` and `fps`; None for a video whose header cannot be read (it fails, and is
    reported, when its shard runs). An S that is 0 frames of some sample is refused, naming it and its rate."""
    strides: list[int | None] = []
    rates: list[float | None] = []
    for index in range(len(source)):
        where = str(source.paths[index]) if isinstance(source, VideoSource) else f"the LeRobot dataset {source.root}"
        try:
            fps = source.fps(index)
            if isinstance(source, VideoSource):  # LeRobot's videos are encoded at its fps
                check_constant_rate(probe_video(source.paths[index]), seconds, where)
        except MediaError:
            strides.append(None)
            rates.append(None)
            continue
        strides.append(stride_frames(seconds, fps, where))
        rates.append(fps)
    return {"stride_seconds": seconds, "stride_frames": strides, "fps": rates}


def check_constant_rate(video: VideoInfo, seconds: float, where: str) -> None:
    """k = round(S x fps) frames are S seconds only at a constant rate: a video whose frames' timestamps are not
    evenly spaced (a phone's variable frame rate; some interval off the median one by more than half of it) is
    refused, naming the intervals and the header's rate, rather than given a stride of the nominal rate."""
    intervals = np.diff(video.pts) * float(video.time_base)
    if len(intervals) < 2:
        return
    median = float(np.median(intervals))
    if np.abs(intervals - median).max() > median / 2:
        raise LaryError(
            f"--stride-seconds {seconds:g}: {where} has a variable frame rate (frames {1000 * intervals.min():.1f} to "
            f"{1000 * intervals.max():.1f} ms apart; its header says {video.fps:g} fps), so no number of frames is "
            f"{seconds:g} s throughout: give --stride in frames, or re-encode it at a constant rate "
            "(ffmpeg -i IN -fps_mode cfr -r FPS OUT)"
        )


def manifest_record(planned: plan.Plan, ids: list[str]) -> dict[str, Any]:
    """`manifest.json`'s record of a `--stride-seconds` run: `stride_seconds`, `stride` (the frames when every sample
    has the same, else None), and by sample id its `fps` and `stride_frames`."""
    info = planned.info
    frames = [k for k in info["stride_frames"] if k is not None]
    return {
        "stride_seconds": info["stride_seconds"],
        "stride": frames[0] if frames and len(set(frames)) == 1 else None,
        "fps": dict(zip(ids, info["fps"])),
        "stride_frames": dict(zip(ids, info["stride_frames"])),
    }
