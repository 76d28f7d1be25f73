"""An exported folder served by Inference Endpoints' own server: huggingface-inference-toolkit 0.5.6 (its unmodified
source, tests/endpoint_toolkit/) with the default container's transformers 4.51.3 and huggingface_hub 0.30.2 and the
folder's `requirements.txt`, in an environment of their own, on this environment's torch and on the container's own
torch 2.5.1 (`-m torch_floors`). `uvicorn webservice_starlette:app` loads `handler.py`
with the toolkit's loader and answers real HTTP requests on 127.0.0.1: its codes are `lary extract`'s; the bodies it
refuses, and the handler's refusals, are 400 `{"error": ...}`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from lary.hub import ENDPOINT_REQUIREMENTS
from conftest import free_port
from other_envs import python_with, python_with_torch, run_python
from test_endpoint_handler import _extract, _pngs, _same_pairs, media, model_dir  # noqa: F401 (fixtures)

pytestmark = pytest.mark.envs  # builds other environments from the package index: `pytest -m envs`

TOOLKIT = Path(__file__).resolve().parent / "endpoint_toolkit"
# The default container's pins (the toolkit's setup.py 0.5.6), its web server as of that release, and the folder's
# requirements.txt, which the container installs before it starts
CONTAINER = ["transformers==4.51.3", "huggingface_hub==0.30.2", "starlette==0.47.3", "uvicorn==0.35.0", "orjson",
             *(line for line in ENDPOINT_REQUIREMENTS.splitlines() if not line.startswith("#"))]
STARTUP_TIMEOUT_S = 180


# The container's torch is 2.5.1, below our floor: a CUDA build of a few GB from the package index, marked
# torch_floors as well (`pytest -m torch_floors` runs it alone); the local CPU torch runs with the other environments
CONTAINER_TORCH = "2.5.1"
TORCH_VERSIONS = [None, pytest.param(CONTAINER_TORCH, marks=pytest.mark.torch_floors, id=f"torch-{CONTAINER_TORCH}")]


@pytest.fixture(scope="module", params=TORCH_VERSIONS, ids=lambda torch: torch or "local-torch")
def container(request) -> Path:
    return python_with_torch(CONTAINER, request.param) if request.param else python_with(CONTAINER)


def _environment(model_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODEL_DIR": str(model_dir), "PYTHONPATH": str(TOOLKIT),
            "HF_MODULES_CACHE": str(tmp_path / "modules")}


def _post(url: str, body: bytes, content_type: str) -> tuple[int, object]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_toolkits_server_answers_with_lary_extracts_codes(container, model_dir, media, tmp_path):
    # the container's layout: webservice_starlette.py beside the app, the toolkit importable
    app = tmp_path / "app"
    app.mkdir()
    shutil.copyfile(TOOLKIT / "huggingface_inference_toolkit" / "webservice_starlette.py", app / "webservice_starlette.py")
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(container), "-m", "uvicorn", "webservice_starlette:app", "--host", "127.0.0.1",
                               "--port", str(port)], cwd=app, env=_environment(model_dir, tmp_path), stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    video = base64.b64encode(media["video"].read_bytes()).decode()
    frames = [base64.b64encode(Path(path).read_bytes()).decode() for path in _pngs(media["images"])]
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while server.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "health", timeout=5) as answer:
                    assert answer.read() == b"Ok"
                    break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError(f"the toolkit's server did not start:\n{(tmp_path / 'server.log').read_text()[-4000:]}")
        answers = {
            "video": _post(url, json.dumps({"inputs": video, "parameters": {"stride": 2}}).encode(), "application/json"),
            "query": _post(url + "?stride=2", json.dumps({"inputs": video}).encode(), "application/json"),
            "seconds": _post(url + "?stride_seconds=0.25", json.dumps({"inputs": video}).encode(), "application/json"),
            "ignored": _post(url + "?stride=5", json.dumps({"inputs": video, "parameters": {"stride": 2}}).encode(),
                             "application/json"),
            "images": _post(url, json.dumps({"inputs": frames}).encode(), "application/json"),
            "image": _post(url, (media["images"] / "frame_0.png").read_bytes(), "image/png"),
            "video/mp4": _post(url, media["video"].read_bytes(), "video/mp4"),
            "octets": _post(url, media["video"].read_bytes(), "application/octet-stream"),
            "bad": _post(url, json.dumps({"inputs": video, "parameters": {"stride": 10**9}}).encode(), "application/json"),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    status, pairs = answers["video"]
    assert status == 200, pairs
    _same_pairs(pairs, _extract(["--videos", str(media["video"])], model_dir, tmp_path / "video", stride=2))
    # query parameters become "parameters" when the body has none ("0.25" arrives as text: 2 frames at 8 fps), and
    # are ignored when it has them
    assert answers["query"] == answers["seconds"] == answers["ignored"] == (200, pairs)
    assert answers["images"][0] == 200
    _same_pairs(answers["images"][1], _extract(["--images", str(media["images"])], model_dir, tmp_path / "images", stride=1))
    assert answers["image"][0] == 400 and "inputs is one image (an image/* body is one frame)" in answers["image"][1]["error"]
    for name in ("video/mp4", "octets"):
        assert answers[name][0] == 400 and "not supported" in answers[name][1]["error"]
    assert answers["bad"] == (400, {"error": "parameters.stride is 1,000,000,000: pairs that far need more frames than "
                                             "allowed, above the limit of 64 (the endpoint's environment variable "
                                             "LARY_ENDPOINT_MAX_FRAMES raises it)"})


def test_the_toolkits_loader_refuses_weights_that_do_not_fit(container, model_dir, tmp_path):
    """On transformers 4.51.3, as on 5.x: a missing or mis-shaped codebook is refused when the endpoint starts, on one
    line naming it, never served."""
    weights = load_file(model_dir / "model.safetensors")
    codebook = weights.pop("quantizer.codebook")
    folders = []
    for name, changed in (("missing", weights), ("misshaped", {**weights, "quantizer.codebook": codebook[:, :-1].contiguous()})):
        folders.append(Path(shutil.copytree(model_dir, tmp_path / name)))
        save_file(changed, folders[-1] / "model.safetensors", metadata={"format": "pt"})
    code = f"""
from huggingface_inference_toolkit.handler import get_inference_handler_either_custom_or_default_handler

for folder in {[str(folder) for folder in folders]!r}:
    try:
        get_inference_handler_either_custom_or_default_handler(folder)
    except ValueError as error:
        print("refused:", error)
"""
    refusals = run_python(container, code, env=_environment(folders[0], tmp_path)).stdout
    assert f"refused: {folders[0]}: missing weights quantizer.codebook; its weights do not fit its config.json" in refusals
    # (4.51.3's report names the key without its shapes)
    assert f"refused: {folders[1]}: mis-shaped weights quantizer.codebook; its weights do not fit its config.json" in refusals
