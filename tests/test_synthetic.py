"""The synthetic clips: shapes, reproducibility, balanced directions, ground-truth motion and video round trip."""

import math

import av
import numpy as np
import pytest

from lary.synthetic import (
    DIRECTIONS,
    direction_vector,
    make_clip,
    make_clips,
    write_video,
)


def test_clip_shape_and_reproducibility():
    clip = make_clip(2, num_frames=5, size=48, seed=3)
    assert clip.frames.shape == (5, 48, 48, 3) and clip.frames.dtype == np.uint8
    assert clip.direction == 2
    np.testing.assert_array_equal(clip.frames, make_clip(2, num_frames=5, size=48, seed=3).frames)
    assert not np.array_equal(clip.frames, make_clip(2, num_frames=5, size=48, seed=4).frames)


def test_directions_are_balanced_and_velocity_matches():
    clips = make_clips(16, seed=0)
    assert [clip.direction for clip in clips] == [i % 8 for i in range(16)]
    for clip in clips:
        dx, dy = direction_vector(clip.direction)
        speed = math.hypot(*clip.velocity)
        assert 6 <= speed <= 10
        assert clip.velocity[0] == pytest.approx(dx * speed) and clip.velocity[1] == pytest.approx(dy * speed)
    assert direction_vector(DIRECTIONS.index("up")) == pytest.approx((0, -1))


def test_frames_change_over_time():
    frames = make_clip(0, jitter=0, seed=1).frames.astype(int)
    assert np.abs(frames[1:] - frames[:-1]).mean() > 1


def test_invalid_direction():
    with pytest.raises(ValueError, match="direction"):
        make_clip(8)


def test_lossless_video_round_trip(tmp_path):
    clip = make_clip(5, num_frames=4, size=32, seed=0)
    path = write_video(clip.frames, tmp_path / "clip.mkv")
    with av.open(str(path)) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    np.testing.assert_array_equal(decoded, clip.frames)


def test_background_contrast_and_distractor_options():
    plain = make_clip(0, distractor=False, background_contrast=0, seed=1).frames.astype(int)
    background = (plain == 128).all(-1)
    assert background.mean() > 0.7  # only the main shape (about 13% of the frame) is not the flat grey
    moved = np.abs(plain[1:] - plain[:-1]).sum(-1) > 0
    assert not (moved & background[1:] & background[:-1]).any()  # nothing but the shape changes
    textured = make_clip(0, background_contrast=0.5, seed=1).frames.astype(int)
    assert (textured == 128).all(-1).mean() < 0.5
    assert textured.std() > make_clip(0, background_contrast=0.1, seed=1).frames.std()
    flat_shape = make_clip(0, distractor=False, background_contrast=0, shape_contrast=0, seed=1).frames
    assert len(np.unique(flat_shape[0].reshape(-1, 3), axis=0)) == 2  # grey and the shape's colour
