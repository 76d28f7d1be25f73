"""`lary extract --encoder` with SigLIP2 (NaFlex) and V-JEPA2: tiny random models saved with their processor configs,
the real CLI on LARY pairs and image-folder clips, and the features checked against the transformers models called
directly on independently preprocessed inputs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import siglip2_image_processor
from PIL import Image
from test_extract import extract, prepare_lary, read_output
from transformers import (
    AutoImageProcessor,
    AutoModel,
    Dinov2Config,
    DINOv3ViTConfig,
    Siglip2VisionConfig,
    VJEPA2Config,
)
from transformers.image_transforms import center_crop, normalize, rescale, resize
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.models.vjepa2.video_processing_vjepa2 import VJEPA2VideoProcessor

from lary.data.loading import load_lary_split
from lary.encoders import EncoderTransform, encode_frames, processor_config
from lary.errors import LaryError
from lary.evaluation.features import load_split

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8)
TINY_VJEPA2 = dict(TINY, mlp_ratio=2.0, crop_size=32, frames_per_clip=2, pred_hidden_size=16,
                   pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1)
VJEPA2_MEAN, VJEPA2_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]  # not the defaults: the saved config must be read
VJEPA2_TOKENS = (32 // 8) ** 2  # one tubelet of 4 x 4 patches per pair


def saved(folder: Path, model: torch.nn.Module, processor) -> Path:
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def own_datasets_cache(tmp_path_factory):
    """`datasets` caches a local folder by its name and card, not its files: another `prepared/` folder with the
    same configs (another test run's) would be served from ~/.cache instead of this module's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("datasets_cache")))
        yield


@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = AutoModel.from_config(Siglip2VisionConfig(**TINY, intermediate_size=64, num_patches=16))
    return saved(tmp_path_factory.mktemp("siglip2"), model, siglip2_image_processor(patch_size=8, max_num_patches=16))


@pytest.fixture(scope="module")
def vjepa2_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = AutoModel.from_config(VJEPA2Config(**TINY_VJEPA2))
    processor = VJEPA2VideoProcessor(crop_size=32, image_mean=VJEPA2_MEAN, image_std=VJEPA2_STD)
    return saved(tmp_path_factory.mktemp("vjepa2"), model, processor)


@pytest.fixture(scope="module")
def libero(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A prepared LARY pair config (32 x 32 images) and its first 3 rows."""
    folder = prepare_lary(tmp_path_factory.mktemp("lary"), {"libero": 3})
    return folder, list(load_lary_split(str(folder), "libero", split="validation"))


def image_folder(folder: Path, num_frames: int, height: int, width: int) -> list[np.ndarray]:
    """Random non-square frames `frame_0.png ...` (so resizing and cropping matter); returns them."""
    folder.mkdir(parents=True)
    frames = list(np.random.default_rng(num_frames).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8))
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{index}.png")
    return frames


def features(outdir: Path) -> list[np.ndarray]:
    return [np.array(row, dtype=np.float32) for row in read_output(outdir).column("features").to_pylist()]


def pair_images(libero: tuple[Path, list[dict]], outdir: Path) -> list[list[np.ndarray]]:
    """The frames of each output row's pair, in output order."""
    by_id = {row["id"]: row for row in libero[1]}
    rows = [by_id[i] for i in read_output(outdir).column("id").to_pylist()]
    return [[np.asarray(row["source_image"]), np.asarray(row["target_image"])] for row in rows]


@torch.no_grad()
def siglip2_tokens(folder: Path, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Patch tokens per image as transformers documents SigLIP2: `model(**processor(images=...))`, minus padding."""
    inputs = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")
    hidden = AutoModel.from_pretrained(folder).eval()(**inputs).last_hidden_state
    return [tokens[mask.bool()] for tokens, mask in zip(hidden, inputs["pixel_attention_mask"])]


def vjepa2_frame(frame: np.ndarray) -> torch.Tensor:
    """V-JEPA2 eval preprocessing with transformers' numpy transforms: shortest edge to int(32 * 256 / 224) = 36,
    center crop 32, rescale 1/255, normalize with the saved mean/std -> (3, 32, 32)."""
    height, width = frame.shape[:2]
    size = (36, int(36 * width / height)) if height <= width else (int(36 * height / width), 36)
    image = resize(frame, size, resample=PILImageResampling.BILINEAR, input_data_format=ChannelDimension.LAST)
    image = center_crop(image, (32, 32), input_data_format=ChannelDimension.LAST)
    image = normalize(rescale(image.astype(np.float32), 1 / 255), VJEPA2_MEAN, VJEPA2_STD,
                      input_data_format=ChannelDimension.LAST)
    return torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)


@torch.no_grad()
def vjepa2_tokens(folder: Path, pairs: list[list[np.ndarray]]) -> torch.Tensor:
    """`VJEPA2Model(pixel_values_videos=(B, 2, 3, 32, 32), skip_predictor=True).last_hidden_state`."""
    videos = torch.stack([torch.stack([vjepa2_frame(frame) for frame in pair]) for pair in pairs])
    return AutoModel.from_pretrained(folder).eval()(pixel_values_videos=videos, skip_predictor=True).last_hidden_state


def test_siglip2_pairs_equal_the_model_on_its_processor_output(tmp_path, siglip2_dir, libero):
    out = tmp_path / "out"
    assert extract("--encoder", str(siglip2_dir), "--dataset", str(libero[0]), "--dataset-config", "libero",
                   "--out", str(out)) == 0
    tokens = siglip2_tokens(siglip2_dir, [frame for pair in pair_images(libero, out) for frame in pair])
    rows = features(out)
    assert len(rows) == 3
    for index, row in enumerate(rows):
        expected = torch.cat(tokens[2 * index : 2 * index + 2])
        assert row.shape == expected.shape == (2 * 16, 32)  # 32 x 32 frames: 4 x 4 patches each
        np.testing.assert_allclose(row, expected.numpy(), atol=1e-5)
    assert load_split(out).features.shape == (3, 2 * 16, 32)


def test_siglip2_clip_keeps_the_aspect_ratio_and_one_grid_per_run(tmp_path, siglip2_dir):
    frames = image_folder(tmp_path / "frames" / "episode", num_frames=5, height=24, width=40)
    out = tmp_path / "out"
    assert extract("--encoder", str(siglip2_dir), "--images", str(tmp_path / "frames" / "episode"),
                   "--stride", "2", "--out", str(out)) == 0
    clip = np.stack(features(out))  # one row per pair
    tokens = siglip2_tokens(siglip2_dir, frames)
    patches = len(tokens[0])
    assert patches == 15  # 3 x 5 patches: the largest grid with the 24:40 aspect ratio within 16 patches
    assert clip.shape == (3, 2 * patches, 32)
    for t in range(3):
        np.testing.assert_allclose(clip[t], torch.cat((tokens[t], tokens[t + 2])).numpy(), atol=1e-5)

    image_folder(tmp_path / "frames" / "tall", num_frames=3, height=40, width=24)
    with pytest.raises(LaryError, match=r"frames of different shapes to 40x24 and 24x40 pixels"):
        extract("--encoder", str(siglip2_dir), "--images", str(tmp_path / "frames" / "episode"),
                str(tmp_path / "frames" / "tall"), "--out", str(tmp_path / "mixed"))


def test_vjepa2_pairs_are_one_tubelet_each(tmp_path, vjepa2_dir, libero):
    out = tmp_path / "out"
    assert extract("--encoder", str(vjepa2_dir), "--dataset", str(libero[0]), "--dataset-config", "libero",
                   "--out", str(out)) == 0
    expected = vjepa2_tokens(vjepa2_dir, pair_images(libero, out))
    assert expected.shape == (3, VJEPA2_TOKENS, 32)
    np.testing.assert_allclose(np.stack(features(out)), expected.numpy(), atol=1e-5)
    assert load_split(out).features.shape == (3, VJEPA2_TOKENS, 32)


def test_vjepa2_clip_pairs_in_windows(tmp_path, vjepa2_dir):
    frames = image_folder(tmp_path / "episode", num_frames=6, height=40, width=56)
    out = tmp_path / "out"
    assert extract("--encoder", str(vjepa2_dir), "--images", str(tmp_path / "episode"), "--stride", "2",
                   "--batch-size", "3", "--out", str(out)) == 0  # 4 pairs in windows of 3 pairs
    clip = np.stack(features(out))  # one row per pair
    expected = vjepa2_tokens(vjepa2_dir, [[frames[t], frames[t + 2]] for t in range(4)])
    assert clip.shape == (4, VJEPA2_TOKENS, 32)
    np.testing.assert_allclose(clip, expected.numpy(), atol=1e-5)


def test_vjepa2_without_a_processor_config_uses_the_defaults_at_the_model_crop_size(tmp_path):
    model = AutoModel.from_config(VJEPA2Config(**TINY_VJEPA2))
    transform = EncoderTransform.from_config(processor_config(tmp_path, model))
    assert (transform.crop, transform.size) == ((32, 32), {"shortest_edge": 36})
    assert transform.mean.tolist() == np.float32([0.485, 0.456, 0.406]).tolist() and transform.rescale == 1 / 255
    assert transform(np.zeros((2, 40, 60, 3), np.uint8)).shape == (2, 3, 32, 32)


DINOV3_HUB_CONFIG = {  # facebook/dinov3-*-pretrain-lvd1689m: a torchvision-only ("Fast") processor
    "crop_size": None, "data_format": "channels_first", "default_to_square": True, "do_center_crop": None,
    "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "DINOv3ViTImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225], "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"height": 32, "width": 32},
}
DINOV2_HUB_CONFIG = {  # facebook/dinov2-base, at 1/7 of its sizes (shortest edge 256 -> 36, crop 224 -> 32)
    "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 36},
}


@pytest.mark.parametrize("name", ["dinov3", "dinov2"])
def test_hub_processor_configs_are_applied_without_torchvision(tmp_path, name):
    """The processor configs as the Hub ships them; the pixels checked against transformers' numpy transforms."""
    torch.manual_seed(0)
    folder = tmp_path / name
    if name == "dinov3":
        config, hub = DINOv3ViTConfig(**TINY, intermediate_size=64, image_size=32, num_register_tokens=4), DINOV3_HUB_CONFIG
    else:
        config, hub = Dinov2Config(**TINY, intermediate_size=64, image_size=32), DINOV2_HUB_CONFIG
    AutoModel.from_config(config).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(hub))
    frames = image_folder(tmp_path / "frames" / "clip", num_frames=3, height=40, width=56)
    out = tmp_path / "out"
    assert extract("--encoder", str(folder), "--images", str(tmp_path / "frames" / "clip"), "--out", str(out)) == 0

    def pixels(frame: np.ndarray) -> torch.Tensor:
        if name == "dinov3":
            image = resize(frame, (32, 32), resample=PILImageResampling.BILINEAR, input_data_format=ChannelDimension.LAST)
        else:  # shortest edge 36 (56 x 40 -> 50 x 36), then the 32 x 32 center
            image = resize(frame, (36, 50), resample=PILImageResampling.BICUBIC, input_data_format=ChannelDimension.LAST)
            image = center_crop(image, (32, 32), input_data_format=ChannelDimension.LAST)
        image = normalize(rescale(image.astype(np.float32), 1 / 255), hub["image_mean"], hub["image_std"],
                          input_data_format=ChannelDimension.LAST)
        return torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)

    expected = encode_frames(AutoModel.from_pretrained(folder).eval(), torch.stack([pixels(frame) for frame in frames]))
    rows = np.stack(features(out))  # pairs (0, 1) and (1, 2)
    np.testing.assert_allclose(rows, torch.stack([torch.cat((expected[t], expected[t + 1])) for t in range(2)]).numpy(), atol=1e-4)
