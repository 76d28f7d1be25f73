"""The frames layer against LARYBench's preprocessing: OpenCV (`cv2.resize(..., INTER_CUBIC)`, `cv2.VideoCapture`) is
the independent reference; the golden model's codes on real robot video; decoding with seeking."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path
from test_extract import extract, read_manifest, read_output, save_tiny_model
from test_extract_videos import whole_video_unit
from transformers import AutoModel, DINOv3ViTConfig

from lary import LapaDinov3Processor
from lary.checkpoint import convert_checkpoint
from lary.errors import MediaError
from lary.extract.sources import VideoSource
from lary.frames import decode_video, load_processor, probe_video, read_video
from lary.synthetic import make_clip, make_clips, write_video
from lary.training.probe import latent_actions


def opencv_pixels(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """LARYBench's LAPA-DINOv3 preprocessing: cv2 INTER_CUBIC on 8-bit RGB, /255, then 2x - 1 (the model's input)."""
    resized = np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC) for frame in frames])
    return torch.from_numpy(resized).permute(0, 3, 1, 2).float().div(255).mul(2).sub(1)




@pytest.mark.parametrize("height, width", [(480, 640), (720, 1280), (256, 256), (200, 300), (100, 50)])
@pytest.mark.parametrize("texture", ["noise", "smooth"])
def test_the_resize_agrees_with_opencv_within_one_grey_level(height, width, texture):
    rng = np.random.default_rng(height * width)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if texture == "smooth":
        frame = cv2.GaussianBlur(frame, (0, 0), 4)
    expected = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_CUBIC).astype(int)
    ours = LapaDinov3Processor().resize(torch.from_numpy(frame)[None])[0].permute(1, 2, 0).numpy().astype(int)
    difference = np.abs(ours - expected)
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.01  # OpenCV's fixed-point rounding: a handful of values, never more than 1
    pixels = LapaDinov3Processor()(images=[[frame, frame]])["pixel_values"][0, 0]
    assert (pixels - opencv_pixels(frame[None])[0]).abs().max() <= 2 / 255 + 1e-6  # one level, in [-1, 1] units


def test_frames_at_the_model_size_are_not_resampled():
    frame = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert np.array_equal(LapaDinov3Processor().resize(torch.from_numpy(frame)[None])[0].permute(1, 2, 0).numpy(), frame)


def test_the_golden_model_gives_the_reference_codes_on_real_robot_video(golden_dir):
    laq = json.loads((golden_dir / "laq_config.json").read_text())
    backbone = json.loads((golden_dir / "backbone_config.json").read_text())
    backbone.pop("transformers_version")
    model = convert_checkpoint(golden_dir / "laq_dinov3.pt", laq, DINOv3ViTConfig(**backbone))
    frames = read_video(shared_path("robot", "aloha", "ep_00.mp4"))  # 50 frames, 480 x 640 H.264

    @torch.no_grad()
    def codes(pixels: torch.Tensor) -> torch.Tensor:
        return model(pixel_values_videos=pixels[None]).action_indices[0]

    reference = codes(opencv_pixels(frames))
    ours = codes(LapaDinov3Processor()(videos=[list(frames)])["pixel_values_videos"][0])
    antialiased = codes(LapaDinov3Processor(resample="pil_bicubic_antialias")(videos=[list(frames)])["pixel_values_videos"][0])
    assert reference.numel() == 49 * 16
    assert (ours == reference).float().mean() >= 0.99  # measured 99.7% (2 of 784 codes differ)
    assert (antialiased == reference).float().mean() < 0.95  # measured 90.3%: why the option is not the default


def test_pyav_decodes_what_opencv_decodes(tmp_path):
    """LARYBench decodes with `cv2.VideoCapture` (then BGR -> RGB); we decode with PyAV."""
    textured = np.concatenate([make_clip(d, num_frames=4, size=720, seed=d, background_contrast=1.0).frames for d in range(3)])
    wide = np.ascontiguousarray(np.concatenate([textured, textured[:, :, :560]], axis=2))  # 720 x 1280
    synthetic = write_video(wide, tmp_path / "wide.mp4", fps=25)  # H.264
    for path in (shared_path("robot", "aloha", "ep_00.mp4"), synthetic):
        capture = cv2.VideoCapture(str(path))
        opencv = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            opencv.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
        ours = read_video(path)
        assert ours.shape == np.stack(opencv).shape
        assert np.abs(ours.astype(int) - np.stack(opencv).astype(int)).max() <= 2, path  # measured: identical


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc (Linux)")
def test_extract_workers_decode_on_their_own_thread_with_pyav_default_pixels(tmp_path):
    """A `lary extract` worker uses one core: FFmpeg starts no threads of its own for it (PyAV's default starts some
    per video to decode, and more per frame to convert to RGB). The pixels are those of PyAV's default decoding, which
    `read_video` keeps for everything else (faster on free cores)."""
    frames = np.concatenate([make_clip(d, num_frames=6, size=240, seed=d).frames for d in range(2)])
    path = write_video(np.ascontiguousarray(np.concatenate([frames, frames[:, :, :80]], axis=2)), tmp_path / "v.mp4", fps=25)
    with av.open(str(path)) as container:
        default = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    read_video(path)  # FFmpeg's first use may start a thread of its own, once
    source = VideoSource([str(path)])
    segment = whole_video_unit(source).segments[0]

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = threads()
    decoded = [(threads(), frame.rgb) for frame in source.frames(segment, None)]
    assert {count for count, _ in decoded} == {before}
    assert np.array_equal(np.stack([rgb for _, rgb in decoded]), default)
    assert np.array_equal(read_video(path), default)


def test_the_resample_option_is_saved_with_the_model_and_read_back(tmp_path):
    LapaDinov3Processor(size=64, resample="pil_bicubic_antialias").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["resample"] == "pil_bicubic_antialias"
    processor = load_processor(tmp_path, image_size=224)
    assert (processor.size, processor.resample) == (64, "pil_bicubic_antialias")
    frame = np.random.default_rng(1).integers(0, 256, (1, 200, 300, 3), dtype=np.uint8)
    antialiased = processor.resize(torch.from_numpy(frame))
    assert not torch.equal(antialiased, LapaDinov3Processor(size=64).resize(torch.from_numpy(frame)))
    with pytest.raises(ValueError, match="resample='nearest' is not one of"):
        LapaDinov3Processor(resample="nearest")


def test_decoding_seeks_to_any_frame_of_a_long_video(tmp_path):
    frames = np.concatenate([make_clip(d % 8, num_frames=40, size=48, seed=d).frames for d in range(8)])
    path = write_video(frames, tmp_path / "long.mp4", fps=30)  # H.264: keyframes far apart, B-frames
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (320, 30.0, 48, 48)
    every = read_video(path)
    for start in (1, 150, 251, 319):
        got = list(decode_video(path, start, start + 5, int(info.pts[start])))
        assert [frame.index for frame in got] == list(range(start, min(start + 5, 320)))
        assert all(np.array_equal(frame.rgb, every[frame.index]) for frame in got)
        np.testing.assert_allclose([frame.time for frame in got], info.times[start : start + 5])
    with pytest.raises(MediaError, match="missing"):
        probe_video(tmp_path / "nothing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(MediaError, match="unreadable video"):
        list(decode_video(tmp_path / "text.mp4"))


def test_a_resample_saved_with_the_model_reaches_extract_and_the_probes(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    antialiased = LapaDinov3Processor(resample="pil_bicubic_antialias")
    antialiased.save_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    clips = make_clips(2, num_frames=3, size=96)  # not the model's 224: the resample changes the pixels
    with torch.no_grad():
        expected, default = (
            model(**processor(videos=[list(clip.frames) for clip in clips])).continuous_latent_actions.flatten(0, 1)
            for processor in (antialiased, LapaDinov3Processor())
        )
    assert not torch.allclose(expected, default, atol=1e-4)

    probed, _, _ = latent_actions(model, clips)
    torch.testing.assert_close(probed["continuous_latent_actions"], expected.flatten(1))

    (tmp_path / "videos").mkdir()
    for index, clip in enumerate(clips):
        write_video(clip.frames, tmp_path / "videos" / f"{index}.mkv")  # lossless: the clip's own pixels
    assert extract("--model", str(folder), "--videos", str(tmp_path / "videos" / "*.mkv"), "--out", str(tmp_path / "out")) == 0
    assert read_manifest(tmp_path / "out")["processor"] == {"size": 224, "resample": "pil_bicubic_antialias"}
    rows = np.array(read_output(tmp_path / "out").column("continuous_latent_actions").to_pylist())
    np.testing.assert_allclose(rows, expected.numpy(), atol=1e-5)


def test_images_of_every_mode_read_as_opencv_reads_them(tmp_path):
    """16-bit frames keep their high byte, as OpenCV's `imread` (LARYBench's reader) gives them, not PIL's clipping
    (which made 99.6% of a 16-bit frame white); alpha is dropped; palettes and 1-bit images are expanded."""
    from PIL import Image

    from lary.frames import read_image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    files = {"grey16.png": rng.integers(0, 65536, (6, 7), dtype=np.uint16),
             "rgb16.png": rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16),
             "bgra.png": rng.integers(0, 256, (6, 7, 4), dtype=np.uint8),
             "grey16.tif": rng.integers(0, 65536, (6, 7), dtype=np.uint16)}
    for name, array in files.items():
        cv2.imwrite(str(tmp_path / name), array)
    Image.fromarray(np.stack([grey, grey[::-1]], axis=-1), "LA").save(tmp_path / "la.png")
    Image.fromarray(grey > 128).save(tmp_path / "bits.png")
    palette = Image.fromarray(grey % 4).convert("P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    palette.save(tmp_path / "palette.png", transparency=bytes([0, 128, 255, 255]))
    for path in sorted(tmp_path.iterdir()):
        expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path), expected, err_msg=f"{path.name}: {Image.open(path).mode}")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"

    deep = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    high = np.array([[0, 0, 1, 156, 255]], dtype=np.uint8)
    for image in (Image.frombytes("I;16B", (5, 1), deep.astype(">u2").tobytes()), Image.fromarray(deep.astype(np.int32))):
        np.testing.assert_array_equal(read_image(image), np.repeat(high[..., None], 3, axis=-1), err_msg=image.mode)
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32))  # F: 0..1
    np.testing.assert_array_equal(read_image(floats)[..., 0], [[0, 128, 255, 255]])
    assert read_image(Image.new("CMYK", (2, 2), (0, 255, 0, 0))).tolist() == [[[255, 0, 255]] * 2] * 2


def test_an_image_is_not_taken_for_a_one_frame_video(tmp_path):
    from PIL import Image

    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    for name, image_format in (("a.mp4", "PNG"), ("b.mp4", "JPEG"), ("c.png", "PNG")):
        Image.fromarray(frame).save(tmp_path / name, format=image_format)
        with pytest.raises(MediaError, match=f"{name}: a {image_format} image, not a video"):
            probe_video(tmp_path / name)
        with pytest.raises(MediaError, match="image, not a video"):
            next(decode_video(tmp_path / name))
