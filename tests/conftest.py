"""Shared test fixtures: the read-only `../shared` folder beside the checkout; `lary evaluate`'s cache out of `~`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def lary_cache(tmp_path_factory) -> Path:
    """`lary evaluate`'s feature cache (`$LARY_CACHE/features`) in this session's temp folder, not `~/.cache/lary`."""
    os.environ.setdefault("LARY_CACHE", str(tmp_path_factory.mktemp("lary_cache")))
    return Path(os.environ["LARY_CACHE"])


def shared_path(*parts: str) -> Path:
    """A path in ../shared, or a skip saying it is absent (it is present in CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures live beside the checkout (present in CI)")
    return path


@pytest.fixture
def golden_dir() -> Path:
    """The tiny reference checkpoint and the reference's outputs on fixed frames."""
    return shared_path("golden", "lapa_dinov3_tiny")


@pytest.fixture
def vitl_manifest() -> Path:
    """Every key and shape of the released LAPA-DINOv3 checkpoint."""
    return shared_path("golden", "laq_dinov3_vitl_manifest.json")


@pytest.fixture
def lary_metadata_dir() -> Path:
    """Real LARY metadata CSVs (media not included)."""
    return shared_path("lary", "metadata")


def free_port() -> int:
    """A localhost port nothing listens on now: for the app's server and `accelerate launch`'s rendezvous (its default,
    29500, would be shared by every launch that runs at once or is still closing)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(*options: str, port: int | None = None) -> list[str]:
    """Python arguments that run a script or module under `accelerate launch` as 2 CPU processes, with `options` (one
    machine unless they say otherwise), meeting at `port` (a free one by default)."""
    machines = options or ("--num_machines", "1")
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port or free_port()), *machines]


def siglip2_image_processor(**kwargs):
    """transformers' `Siglip2ImageProcessorPil(**kwargs)`, the reference our Siglip2 preprocessing is checked against;
    the test skips, naming torchvision, where that transformers (5.4's does) declares torchvision and it is absent."""
    import importlib.util

    import transformers

    try:
        return transformers.Siglip2ImageProcessorPil(**kwargs)
    except ImportError:
        if importlib.util.find_spec("torchvision") is not None:
            raise
        pytest.skip(f"transformers {transformers.__version__}'s Siglip2ImageProcessorPil, the reference, needs "
                    "torchvision, which is not installed")
