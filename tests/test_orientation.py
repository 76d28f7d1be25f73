"""Orientation, as OpenCV (LARYBench's reader) applies it by default: a video's display matrix (a phone's portrait
recording is stored sideways with a -90 degree matrix; `cv2.VideoCapture`'s `CAP_PROP_ORIENTATION_AUTO`) and an image's
EXIF orientation (`cv2.imread`). Frames come out as OpenCV shows them, and `lary extract`, the labeler and the app give
a sideways-stored frame the codes of its upright one; `manifest.json` records what was turned."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from PIL import Image
from test_extract import extract, read_manifest, read_output

from lary import LapaDinov3Processor, LatentActionLabeler
from lary.app.analysis import read_clip
from lary.app.limits import Limits
from lary.frames import decode_video, probe_video, read_image, read_video
from lary.hub import default_model
from lary.synthetic import make_clip

EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """Upright portrait frames (6, 64, 48, 3) with texture and motion: codes that differ when turned."""
    return np.ascontiguousarray(make_clip(2, num_frames=6, size=64, seed=3, background_contrast=1.0).frames[:, :, :48])


def write_turned(upright: np.ndarray, path, degrees: int = -90, hflip: bool = False) -> None:
    """The frames stored turned, with the display matrix (PyAV's `set_display_rotation`: `degrees` counter-clockwise,
    as FFmpeg's `-display_rotation`) that shows them upright, as a phone stores a portrait video."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (PyAV 18 can)")
    stored = np.ascontiguousarray(np.rot90(upright, -degrees // 90, axes=(1, 2)))
    lossless = str(path).endswith(".mkv")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1" if lossless else "libx264", rate=8)
        stream.pix_fmt = "bgr0" if lossless else "yuv420p"
        stream.height, stream.width = stored.shape[1:3]
        stream.set_display_rotation(degrees, hflip=hflip)
        for frame in stored:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def opencv_video(path) -> tuple[np.ndarray, int]:
    """The frames `cv2.VideoCapture` reads (its defaults: orientation applied), RGB, and its orientation metadata."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META))
    capture.release()
    return np.stack(frames), rotation


@pytest.mark.parametrize("name, degrees, hflip", [("phone.mkv", -90, False), ("phone.mp4", -90, False),
                                                  ("left.mkv", 90, False), ("upside.mkv", 180, False),
                                                  ("mirrored.mkv", -90, True), ("tilted.mkv", 45, False)])
def test_a_turned_video_decodes_as_opencv_shows_it(tmp_path, portrait, name, degrees, hflip):
    """Quarter turns are applied; a flip in the matrix and other angles are not, as OpenCV does."""
    path = tmp_path / name
    write_turned(portrait, path, degrees, hflip)
    expected, opencv_rotation = opencv_video(path)
    info = probe_video(path)
    ours = read_video(path)
    assert info.rotation == opencv_rotation % 360 if opencv_rotation % 90 == 0 else info.rotation == 0
    assert (info.height, info.width) == ours.shape[1:3] == expected.shape[1:3]
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= (0 if name.endswith(".mkv") else 2)
    if degrees % 90 == 0 and not hflip and name.endswith(".mkv"):
        np.testing.assert_array_equal(ours, portrait)  # the upright frames, bit for bit
    seeked = [frame.rgb for frame in decode_video(path, 3, 5, start_pts=int(info.pts[3]))]
    np.testing.assert_array_equal(np.stack(seeked), ours[3:5])


def test_extract_the_labeler_and_the_app_give_a_phone_video_the_codes_of_its_upright_frames(tmp_path, portrait):
    upright, phone = tmp_path / "videos" / "upright.mkv", tmp_path / "videos" / "phone.mkv"
    upright.parent.mkdir()
    with av.open(str(upright), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.pix_fmt, (stream.height, stream.width) = "bgr0", portrait.shape[1:3]
        for frame in portrait:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    write_turned(portrait, phone, -90)

    model = default_model()
    out = tmp_path / "out"
    assert extract("--model", str(model), "--videos", str(upright), str(phone), "--out", str(out)) == 0
    table = read_output(out).to_pydict()
    codes = {name: np.array([c for i, c in zip(table["id"], table["action_indices"]) if i == name])
             for name in ("upright.mkv", "phone.mkv")}
    np.testing.assert_array_equal(codes["phone.mkv"], codes["upright.mkv"])
    assert read_manifest(out)["rotation"] == {"phone.mkv": 90}  # only the turned video is named

    labeler = LatentActionLabeler.from_pretrained(model)
    np.testing.assert_array_equal(labeler.label_video(phone)["action_indices"], codes["upright.mkv"])
    sideways = np.rot90(portrait, 1, axes=(1, 2))  # as the frames are stored, which were read before
    assert not np.array_equal(labeler.label_pairs(sideways[:-1], sideways[1:])["action_indices"], codes["upright.mkv"])

    clips = [read_clip(path, labeler.processor, Limits()) for path in (upright, phone)]
    assert (clips[1].width, clips[1].height) == (48, 64)
    assert np.array_equal(clips[0].pixels.numpy(), clips[1].pixels.numpy())


def turned_image(array: np.ndarray, path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(array).save(path, exif=exif, **save)


def test_every_exif_orientation_is_applied_as_opencv_imread_applies_it(tmp_path, portrait):
    """All eight orientations of a PNG (eXIf), 8- and 16-bit, grey, alpha, palette, JPEG and WebP: as `cv2.imread`
    reads them (its default IMREAD_COLOR; IMREAD_UNCHANGED would not turn them)."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        turned_image(stored, tmp_path / f"o{orientation}.png", orientation)
    turned_image(rng.integers(0, 65536, (6, 10), dtype=np.uint16), tmp_path / "grey16.png", 6)
    turned_image(stored[..., 0], tmp_path / "grey.jpg", 6, quality=95)
    turned_image(stored, tmp_path / "colour.jpg", 8, quality=95)
    turned_image(np.dstack([stored, stored[..., :1]]), tmp_path / "alpha.png", 3)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 5
    Image.fromarray(stored).convert("P").save(tmp_path / "palette.png", exif=exif)
    turned_image(stored, tmp_path / "lossless.webp", 7, lossless=True)
    for path in sorted(tmp_path.iterdir()):
        expected = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path), expected, err_msg=path.name)
        with Image.open(path) as image:  # a PIL image given to the processor (the labeler, the pipeline) alike
            np.testing.assert_array_equal(LapaDinov3Processor.to_uint8(image).numpy(), expected, err_msg=path.name)
    assert read_image(tmp_path / "o6.png").shape == (10, 6, 3)
    assert np.array_equal(read_image(tmp_path / "o1.png"), stored)


def test_a_jpeg_turned_by_exif_gets_the_codes_of_its_upright_frames(tmp_path, portrait):
    """A phone's photos stored sideways with EXIF orientation 6: `lary extract --images` and the labeler (files and PIL
    images) give the codes of the frames as `cv2.imread` reads them, upright."""
    phone, upright = tmp_path / "phone", tmp_path / "upright"
    phone.mkdir()
    upright.mkdir()
    for index, frame in enumerate(portrait):
        turned_image(np.ascontiguousarray(np.rot90(frame, 1)), phone / f"{index}.jpg", 6, quality=95)
        read = cv2.cvtColor(cv2.imread(str(phone / f"{index}.jpg")), cv2.COLOR_BGR2RGB)
        assert read.shape == frame.shape
        Image.fromarray(read).save(upright / f"{index}.png")
    model = default_model()
    for folder in (phone, upright):
        assert extract("--model", str(model), "--images", str(folder), "--out", str(tmp_path / f"out-{folder.name}")) == 0
    codes = [np.array(read_output(tmp_path / f"out-{name}").column("action_indices").to_pylist())
             for name in ("phone", "upright")]
    np.testing.assert_array_equal(codes[0], codes[1])

    labeler = LatentActionLabeler.from_pretrained(model)
    files = sorted(phone.iterdir(), key=lambda path: int(path.stem))
    images = [Image.open(path) for path in files]
    np.testing.assert_array_equal(labeler.label_pairs(images[:-1], images[1:])["action_indices"], codes[1])
    stored = [np.asarray(image) for image in images]  # the pixels as stored: sideways, other codes
    assert not np.array_equal(labeler.label_pairs(stored[:-1], stored[1:])["action_indices"], codes[1])
