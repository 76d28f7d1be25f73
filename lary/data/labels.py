"""LARY class names: the sorted `action` values of each classification track's metadata CSVs."""

from __future__ import annotations

# LIBERO image-pair classification: 28 end-effector motion and gripper classes.
LIBERO_CLASSES: tuple[str, ...] = (
    "Backward",
    "Backward_Down",
    "Backward_Left",
    "Backward_Left_Down",
    "Backward_Left_Up",
    "Backward_Right",
    "Backward_Right_Down",
    "Backward_Right_Up",
    "Backward_Up",
    "Close",
    "Down",
    "Forward",
    "Forward_Down",
    "Forward_Left",
    "Forward_Left_Down",
    "Forward_Left_Up",
    "Forward_Right",
    "Forward_Right_Down",
    "Forward_Right_Up",
    "Forward_Up",
    "Left",
    "Left_Down",
    "Left_Up",
    "Open",
    "Right",
    "Right_Down",
    "Right_Up",
    "Up",
)

# Tracks whose names are stored here; the clip tracks (human_1st: 123, robot_1st: 54) take theirs
# from their train and validation CSVs at build time, and must find exactly this many.
CLASS_NAMES: dict[str, tuple[str, ...]] = {"libero": LIBERO_CLASSES}
NUM_CLASSES: dict[str, int] = {"libero": 28, "human_1st": 123, "robot_1st": 54}
