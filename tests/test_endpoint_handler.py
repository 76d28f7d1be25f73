"""The Inference Endpoints handler (`handler.py`, written into every folder `lary.hub.export` makes): imported and
called as the endpoint container does, in a fresh process where `lary` cannot be imported, and through `curl`
against `scripts/serve_endpoint.py`; its codes are those of `lary extract` on the same video and images."""

from __future__ import annotations

import ast
import base64
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from transformers import AutoModel

from lary.cli import main as lary_main
from lary.frames import load_processor, read_video
from lary.hub import EMBEDDED_MODEL, export
from lary.synthetic import make_clip, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
ALOHA = REPO_ROOT.parent / "shared" / "robot" / "aloha" / "ep_00.mp4"
# What a Hub file may import (the three code files' rule, with PyAV for videos)
ALLOWED_IMPORTS = {"__future__", "base64", "binascii", "io", "collections", "typing", "av", "numpy", "torch", "PIL",
                   "transformers"}

# A fresh interpreter in which `lary` and `lary_hub` cannot be imported, loading `handler.py` as
# huggingface-inference-toolkit does (a module named `handler`, the model folder first on sys.path), then answering
# the requests of a JSON file: {"video": path, "base64": bool} or {"images": [paths]} (as base64) or {"data": ...}.
CALL_AS_THE_ENDPOINT = r"""
import base64, importlib.util, json, sys
sys.modules["lary"] = sys.modules["lary_hub"] = None
model_dir, requests = sys.argv[1], json.load(open(sys.argv[2]))
spec = importlib.util.spec_from_file_location("handler", f"{model_dir}/handler.py")
sys.path.insert(0, model_dir)
handler = importlib.util.module_from_spec(spec)
sys.modules["handler"] = handler
spec.loader.exec_module(handler)
endpoint = handler.EndpointHandler(model_dir)
encode = lambda path: base64.b64encode(open(path, "rb").read()).decode()
answers = []
for request in requests:
    if "video" in request:
        data = {"inputs": encode(request["video"]) if request["base64"] else open(request["video"], "rb").read()}
    elif "images" in request:
        data = {"inputs": [encode(path) for path in request["images"]]}
    else:
        data = request["data"]
    data.update({"parameters": request["parameters"]} if "parameters" in request else {})
    answers.append(endpoint(data))
print(json.dumps({"answers": answers, "model_module": type(endpoint.model).__module__,
                  "lary_imported": any(name.startswith("lary") and sys.modules[name] for name in sys.modules)}))
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The embedded model exported as `lary convert` and `lary train` export theirs."""
    model = AutoModel.from_pretrained(EMBEDDED_MODEL)
    processor = load_processor(EMBEDDED_MODEL, model.config.backbone_config.image_size)
    return export(model, tmp_path_factory.mktemp("export") / "model", processor)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A generated H.264 video (40 frames: two calls of 32 pairs) and its frames as a folder of PNG files."""
    folder = tmp_path_factory.mktemp("media")
    video = write_video(make_clip(2, num_frames=40, size=96, speed=(4.0, 6.0), seed=3).frames, folder / "clip.mp4",
                        pix_fmt="yuv420p")
    images = folder / "frames"
    images.mkdir()
    grey16 = folder / "grey16"  # 16-bit grey PNG frames, which PIL's own conversion would clip to white
    grey16.mkdir()
    for index, frame in enumerate(read_video(video)[:12]):
        Image.fromarray(frame).save(images / f"frame_{index}.png")
        if index < 5:
            Image.fromarray(frame.mean(axis=2).astype(np.uint16) * 257).save(grey16 / f"frame_{index}.png")
    return {"video": video, "images": images, "grey16": grey16}


def _pngs(folder: Path) -> list[str]:
    return [str(path) for path in sorted(folder.glob("*.png"), key=lambda path: int(path.stem.split("_")[1]))]


def _extract(source: list[str], model_dir: Path, out: Path, stride: int) -> list[dict]:
    lary_main(["extract", "--model", str(model_dir), *source, "--stride", str(stride), "--out", str(out), "--cpu",
               "--num-workers", "0"])
    table = pq.read_table(sorted(out.glob("*.parquet"))).sort_by("frame_index")
    return table.select(["frame_index", "next_frame_index", "timestamp", "next_timestamp", "action_indices",
                         "latent_actions"]).to_pylist()


def _same_pairs(answer: list[dict], rows: list[dict], vectors: bool = False) -> None:
    assert [pair["frame_index"] for pair in answer] == [row["frame_index"] for row in rows]
    for pair, row in zip(answer, rows):
        assert pair["next_frame_index"] == row["next_frame_index"]
        assert pair["action_indices"] == row["action_indices"], pair["frame_index"]
        if row["timestamp"] is not None:  # videos; image folders have no times
            assert (pair["timestamp"], pair["next_timestamp"]) == pytest.approx((row["timestamp"], row["next_timestamp"]))
        if vectors:
            np.testing.assert_allclose(pair["latent_actions"], row["latent_actions"], atol=1e-5)


def test_every_exported_folder_has_the_handler_and_its_requirements(model_dir):
    assert (model_dir / "handler.py").read_text() == (REPO_ROOT / "handler.py").read_text()
    requirements = [line for line in (model_dir / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert sorted(line.split("<")[0].split(">")[0] for line in requirements) == ["av", "numpy", "pillow", "torch", "transformers"]
    imports = set()
    for node in ast.walk(ast.parse((REPO_ROOT / "handler.py").read_text())):
        if isinstance(node, ast.Import):
            imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module.split(".")[0])
    assert imports <= ALLOWED_IMPORTS, imports - ALLOWED_IMPORTS


def test_the_endpoint_gives_lary_extracts_codes_without_lary(model_dir, media, tmp_path):
    images = [Path(path) for path in _pngs(media["images"])]
    requests = [
        {"video": str(media["video"]), "base64": False},
        {"video": str(media["video"]), "base64": True, "parameters": {"stride": 3, "return_vectors": True}},
        {"images": [str(path) for path in images], "parameters": {"stride": 2}},
        {"images": _pngs(media["grey16"]), "parameters": {"return_vectors": True}},
    ]
    if ALOHA.exists():  # real rendered robot video, 480x640 H.264
        requests.append({"video": str(ALOHA), "base64": True, "parameters": {"stride": 2}})
    bad = [
        ({"data": {"inputs": "this is not base64!"}}, "inputs is a string but not base64"),
        ({"data": {"inputs": base64.b64encode(b"a text file").decode()}}, "inputs is not a video file PyAV can read"),
        ({"data": {"inputs": [base64.b64encode(b"not a png").decode()] * 2}}, "inputs[0] is not an image file PIL can read"),
        ({"data": {"inputs": [base64.b64encode(images[0].read_bytes()).decode()]}}, "needs at least 2; got 1"),
        ({"data": {"frames": []}}, 'the request must be an object with "inputs"'),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride": 40}}, "has 40 frame(s); stride 40 needs at least 41"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride": "2"}}, "parameters.stride must be a positive integer"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"strides": 2}}, "unknown parameter 'strides'"),
    ]
    (tmp_path / "requests.json").write_text(json.dumps(requests + [request for request, _ in bad]))
    result = subprocess.run([sys.executable, "-c", CALL_AS_THE_ENDPOINT, str(model_dir), str(tmp_path / "requests.json")],
                            capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    called = json.loads(result.stdout.splitlines()[-1])
    assert not called["lary_imported"] and called["model_module"].startswith("transformers_modules.")
    answers = called["answers"]

    video = str(media["video"])
    _same_pairs(answers[0], _extract(["--videos", video], model_dir, tmp_path / "video1", stride=1))
    assert set(answers[0][0]) == {"frame_index", "next_frame_index", "timestamp", "next_timestamp", "action_indices"}
    _same_pairs(answers[1], _extract(["--videos", video], model_dir, tmp_path / "video3", stride=3), vectors=True)
    config = json.loads((model_dir / "config.json").read_text())
    assert np.asarray(answers[1][0]["continuous_latent_actions"]).shape == (config["code_seq_len"], config["quant_dim"])
    _same_pairs(answers[2], _extract(["--images", str(media["images"])], model_dir, tmp_path / "images", stride=2))
    assert len(answers[2]) == 10 and answers[2][0]["timestamp"] is None
    _same_pairs(answers[3], _extract(["--images", str(media["grey16"])], model_dir, tmp_path / "grey16", stride=1),
                vectors=True)
    if ALOHA.exists():
        _same_pairs(answers[4], _extract(["--videos", str(ALOHA)], model_dir, tmp_path / "aloha", stride=2))
    for answer, (_, message) in zip(answers[len(requests):], bad):
        assert set(answer) == {"error"} and message in answer["error"] and "\n" not in answer["error"], answer


def _serve(model_dir: Path, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """`scripts/serve_endpoint.py` on a free port of 127.0.0.1 (lary not importable), and its URL."""
    script = REPO_ROOT / "scripts" / "serve_endpoint.py"
    runner = (f"import runpy, sys; sys.modules['lary'] = sys.modules['lary_hub'] = None; "
              f"sys.argv = [{str(script)!r}, {str(model_dir)!r}, '--port', '0']; runpy.run_path(sys.argv[0], run_name='__main__')")
    server = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=_env(tmp_path))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        if select.select([server.stdout], [], [], 1.0)[0]:
            line = server.stdout.readline()
            if "serving" in line:
                return server, line.split(" on ")[-1].strip()
    server.kill()
    raise AssertionError(f"the endpoint server did not start (exit code {server.poll()})")


def _curl(url: str, *args: str) -> tuple[int, str]:
    result = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args, url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    return int(status), body


def test_curl_against_a_local_endpoint_server(model_dir, media, tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": base64.b64encode(media["video"].read_bytes()).decode(),
                                   "parameters": {"stride": 2}}))
    json_body = ("-H", "Content-Type: application/json")
    server, url = _serve(model_dir, tmp_path)
    try:
        assert _curl(url + "health") == (200, "Ok")
        status, body = _curl(url, *json_body, "--data-binary", f"@{request}")
        by_query = _curl(url + "?stride=2", *json_body, "-d", json.dumps({"inputs": json.loads(request.read_text())["inputs"]}))
        bad_input = _curl(url, *json_body, "-d", '{"inputs": "not base64!"}')
        no_inputs = _curl(url, *json_body, "-d", '{"input": []}')
        not_json = _curl(url, "-H", "Content-Type: video/mp4", "--data-binary", f"@{media['video']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert status == 200
    _same_pairs(json.loads(body), _extract(["--videos", str(media["video"])], model_dir, tmp_path / "out", stride=2))
    assert by_query == (200, body)  # query parameters become "parameters", as in the container
    assert bad_input[0] == 200 and "not base64" in json.loads(bad_input[1])["error"]  # the handler's answer
    assert no_inputs[0] == 400 and json.loads(no_inputs[1]) == {"error": 'the body must be a JSON object with "inputs"'}
    assert not_json[0] == 400 and "Content-Type: application/json" in json.loads(not_json[1])["error"]
