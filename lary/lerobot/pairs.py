"""The frame pairs `(t, t + K)` of a LeRobot episode and their regression targets (the robot's own actions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lary.errors import LaryError
from lary.frames import stride_frames

from .dataset import Episode


@dataclass(frozen=True, eq=False)
class FramePairs:
    """The pairs `(t, t + stride)` of one episode, `t = 0 .. length - stride - 1` (row positions; P pairs).

    `frame_index`, `next_frame_index` and `timestamp` are the table's values at rows t and t + stride. Targets, in
    LeRobot's convention that `action[t]` is the command sent at frame t:
    - `action` (P, stride, action_dim): rows t .. t + stride - 1, the commands that take frame t to frame t + stride
      (LARY's `(stride, dof)` action chunk);
    - `state` (P, stride + 1, state_dim): `observation.state` rows t .. t + stride, both ends.
    Either is None when the dataset has no such feature.
    """

    episode_index: int
    stride: int
    positions: np.ndarray
    frame_index: np.ndarray
    next_frame_index: np.ndarray
    timestamp: np.ndarray
    action: np.ndarray | None
    state: np.ndarray | None

    def __len__(self) -> int:
        return len(self.positions)


def frame_pairs(episode: Episode, stride: int | None = None, *, stride_seconds: float | None = None,
                fps: float | None = None) -> FramePairs:
    """The episode's pairs `(t, t + stride)` and their targets; none for an episode of `stride` frames or fewer.

    Instead of `stride`, `stride_seconds` S with the dataset's `fps` (`LeRobotFolder.fps`): k = round(S x fps) frames,
    refused when that is 0 (`lary.frames.stride_frames`)."""
    if (stride is None) == (stride_seconds is None):
        raise LaryError("give a stride in frames or stride_seconds (with fps), one of them")
    if stride_seconds is not None:
        stride = stride_frames(stride_seconds, fps or 0.0, f"episode {episode.episode_index}")
    if stride < 1:
        raise LaryError(f"stride must be at least 1; got {stride}")
    columns = episode.columns
    first = np.arange(max(0, episode.length - stride))
    action = columns.get("action")
    state = columns.get("observation.state")
    return FramePairs(
        episode_index=episode.episode_index,
        stride=stride,
        positions=first,
        frame_index=columns["frame_index"][first],
        next_frame_index=columns["frame_index"][first + stride],
        timestamp=columns["timestamp"][first],
        action=None if action is None else action[first[:, None] + np.arange(stride)],
        state=None if state is None else state[first[:, None] + np.arange(stride + 1)],
    )
