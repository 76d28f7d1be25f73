"""The Inference Endpoints handler (`handler.py`, written into every folder `lary.hub.export` makes, shipped with the
embedded model, added by `lary endpoint`): imported and called as the endpoint container does, in a fresh process
where `lary` cannot be imported, and through `curl` against `scripts/serve_endpoint.py`; its codes are those of
`lary extract` on the same video and images; its limits, orientation and refusals. (tests/test_endpoint_toolkit.py
runs it in the container's own server.)"""

from __future__ import annotations

import ast
import base64
import importlib.util
import io
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from lary import runtime
from lary.cli import main as lary_main
from lary.errors import LaryError
from lary.frames import load_processor, read_video
from lary.hub import EMBEDDED_MODEL, ENDPOINT_REQUIREMENTS, export
from lary.synthetic import make_clip, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
ALOHA = REPO_ROOT.parent / "shared" / "robot" / "aloha" / "ep_00.mp4"
# What a Hub file may import (the three code files' rule, with PyAV for videos)
ALLOWED_IMPORTS = {"__future__", "base64", "binascii", "io", "math", "os", "sys", "warnings", "collections", "types",
                   "typing", "av", "numpy", "torch", "PIL", "transformers"}

# A fresh interpreter in which `lary` and `lary_hub` cannot be imported, loading `handler.py` as
# huggingface-inference-toolkit does (a module named `handler.EndpointHandler`, the model folder first on sys.path),
# then answering the requests of a JSON file: {"video": path, "base64": bool} or {"images": [paths]} (as base64) or
# {"data": ...}; a request the handler refuses (ValueError, which the container answers with 400) gives its message.
CALL_AS_THE_ENDPOINT = r"""
import base64, importlib.util, json, sys
sys.modules["lary"] = sys.modules["lary_hub"] = None
model_dir, requests = sys.argv[1], json.load(open(sys.argv[2]))
spec = importlib.util.spec_from_file_location("handler.EndpointHandler", f"{model_dir}/handler.py")
sys.path.insert(0, model_dir)
handler = importlib.util.module_from_spec(spec)
sys.modules["handler.EndpointHandler"] = handler
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
    try:
        answers.append(endpoint(data))
    except ValueError as error:
        answers.append({"refused": str(error)})
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


def test_every_model_folder_has_the_handler_and_its_requirements(model_dir, tmp_path):
    for folder in (model_dir, EMBEDDED_MODEL):
        assert (folder / "handler.py").read_text() == (REPO_ROOT / "handler.py").read_text()
        # only what the stock container lacks: never transformers or torch, whose upgrade stops its toolkit
        assert (folder / "requirements.txt").read_text() == ENDPOINT_REQUIREMENTS
    assert [line for line in ENDPOINT_REQUIREMENTS.splitlines() if not line.startswith("#")] == ["av>=14.1"]
    # the embedded model links the root file, as it links the three code files; its requirements are a real file
    assert os.readlink(EMBEDDED_MODEL / "handler.py") == "../../handler.py"
    assert not (EMBEDDED_MODEL / "requirements.txt").is_symlink()
    imports = set()
    for node in ast.walk(ast.parse((REPO_ROOT / "handler.py").read_text())):
        if isinstance(node, ast.Import):
            imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module.split(".")[0])
    assert imports <= ALLOWED_IMPORTS, imports - ALLOWED_IMPORTS

    # `lary endpoint FOLDER` adds both to a folder saved without them, and refuses what lary did not write
    old = tmp_path / "old"
    shutil.copytree(model_dir, old, ignore=shutil.ignore_patterns("handler.py", "requirements.txt"))
    (old / "requirements.txt").write_text("# what handler.py imports (Inference Endpoints installs it)\ntorch>=2.4\n")
    assert lary_main(["endpoint", str(old)]) == 0
    assert (old / "handler.py").read_text() == (REPO_ROOT / "handler.py").read_text()
    assert (old / "requirements.txt").read_text() == ENDPOINT_REQUIREMENTS  # an older lary's file, replaced
    (old / "handler.py").write_text("class EndpointHandler: ...  # the user's own\n")
    with pytest.raises(LaryError, match="handler.py exists and was not written by lary"):
        lary_main(["endpoint", str(old)])
    assert (old / "handler.py").read_text() == "class EndpointHandler: ...  # the user's own\n"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(LaryError, match="model_type is 'bert', not 'lapa_dinov3'"):
        lary_main(["endpoint", str(tmp_path / "other")])
    assert sorted(path.name for path in (tmp_path / "other").iterdir()) == ["config.json"]


def test_the_endpoint_gives_lary_extracts_codes_without_lary(model_dir, media, tmp_path):
    images = [Path(path) for path in _pngs(media["images"])]
    requests = [
        {"video": str(media["video"]), "base64": False},
        {"video": str(media["video"]), "base64": True, "parameters": {"stride": 3, "return_vectors": True}},
        {"images": [str(path) for path in images], "parameters": {"stride": 2}},
        {"images": _pngs(media["grey16"]), "parameters": {"return_vectors": True}},
        # strides beyond PAIRS_PER_CALL read frames t and t + k with two decoders
        {"video": str(media["video"]), "base64": True, "parameters": {"stride": 33}},
        # seconds as lary extract takes them (the clip is 8 fps: k = round(0.5 x 8) = 4, as in
        # tests/test_extract_stride_seconds.py); as a query parameter it arrives as text
        {"video": str(media["video"]), "base64": True, "parameters": {"stride_seconds": "0.5"}},
        {"video": str(media["video"]), "base64": True, "parameters": {"stride": 4}},
    ]
    if ALOHA.exists():  # real rendered robot video, 480x640 H.264
        requests.append({"video": str(ALOHA), "base64": True, "parameters": {"stride": 2}})
    bad = [
        ({"data": {"inputs": "this is not base64!"}}, "inputs is a string but not base64"),
        ({"data": {"inputs": base64.b64encode(b"a text file").decode()}}, "inputs is not a video file PyAV can read"),
        ({"data": {"inputs": [base64.b64encode(b"not a png").decode()] * 2}}, "inputs[0] is not an image file PIL can read"),
        ({"data": {"inputs": [base64.b64encode(images[0].read_bytes()).decode()]}}, "needs at least 2; got 1"),
        ({"data": {"inputs": base64.b64encode(images[0].read_bytes()).decode()}}, "inputs is a PNG image, not a video"),
        ({"data": {"frames": []}}, 'the request must be an object with "inputs"'),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride": 40}}, "has 40 frame(s); stride 40 needs at least 41"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride": "2"}}, "parameters.stride must be a positive integer"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"strides": 2}}, "unknown parameter 'strides'"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride": 2, "stride_seconds": 1}}, "stride (frames) or stride_seconds, not both"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride_seconds": 0.05}},
         "parameters.stride_seconds 0.05 is 0.40 frames of the video at 8 fps, which rounds to 0: give at least 0.0625 s"),
        ({"video": str(media["video"]), "base64": True, "parameters": {"stride_seconds": "inf"}}, "must be a positive number of seconds"),
        ({"images": [str(path) for path in images], "parameters": {"stride_seconds": 1}}, "images have no frame rate; give stride in frames"),
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
    _same_pairs(answers[4], _extract(["--videos", video], model_dir, tmp_path / "video33", stride=33))
    assert len(answers[4]) == 7
    assert answers[5] == answers[6] and answers[5][0]["next_frame_index"] == 4
    if ALOHA.exists():
        _same_pairs(answers[7], _extract(["--videos", str(ALOHA)], model_dir, tmp_path / "aloha", stride=2))
    for answer, (_, message) in zip(answers[len(requests):], bad):
        assert set(answer) == {"refused"} and message in answer["refused"] and "\n" not in answer["refused"], answer


@pytest.fixture(scope="module")
def endpoint(model_dir):
    """`handler.py` of the exported folder in this process, imported as the container imports it."""
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", model_dir / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _refused(handler, data: dict, message: str) -> None:
    with pytest.raises(ValueError) as refusal:
        handler(data)
    assert message in str(refusal.value) and "\n" not in str(refusal.value), str(refusal.value)


def test_the_endpoints_limits_are_checked_before_the_work(endpoint, model_dir, media, monkeypatch):
    handler = endpoint.EndpointHandler(str(model_dir))
    video = media["video"].read_bytes()  # 40 frames
    raise_it = "(the endpoint's environment variable LARY_ENDPOINT_{} raises it)"
    # a stride beyond the frame limit is refused before anything is decoded, as is a list longer than it (its items
    # are not even base64)
    _refused(handler, {"inputs": b"not read", "parameters": {"stride": 10**9}}, "inputs is not a video file")
    _refused(handler, {"inputs": video, "parameters": {"stride": 10**9}},
             "parameters.stride is 1,000,000,000: pairs that far need more frames than allowed, above the limit of 64 "
             + raise_it.format("MAX_FRAMES"))
    _refused(handler, {"inputs": ["not base64!"] * 10_000}, "inputs has 10,000 images, above the limit of 64")
    _refused(handler, {"inputs": video, "parameters": {"stride_seconds": 1e9}}, "is 8,000,000,000 frames at 8 fps")
    # a frame's size comes from the header: a 12000 x 12000 PNG (a few hundred kB) is never decoded
    png = io.BytesIO()
    Image.new("L", (12000, 12000)).save(png, format="PNG")
    started = time.perf_counter()
    _refused(handler, {"inputs": [png.getvalue()] * 2},
             "inputs[0] is 12000x12000 (144,000,000 pixels), above the limit of 8,294,400 pixels " + raise_it.format("MAX_PIXELS"))
    assert time.perf_counter() - started < 2
    _refused(handler, {"inputs": Image.new("RGB", (8, 8))}, "inputs is one image (an image/* body is one frame)")

    # each limit is the environment's; each refusal names it
    monkeypatch.setenv("LARY_ENDPOINT_MAX_FRAMES", "16")
    monkeypatch.setenv("LARY_ENDPOINT_MAX_INPUT_MB", "0.5")
    monkeypatch.setenv("LARY_ENDPOINT_MAX_ANSWER_MB", "0.02")
    small = endpoint.EndpointHandler(str(model_dir))
    _refused(small, {"inputs": video}, "inputs has 40 frames, above the limit of 16 " + raise_it.format("MAX_FRAMES"))
    _refused(small, {"inputs": base64.b64encode(bytes(600_000)).decode()}, "inputs is 0.572 MB, above the limit of 0.5 MB")
    frames = [path.read_bytes() for path in sorted(media["images"].glob("*.png"))][:10]
    assert len(small({"inputs": frames})) == 9  # 9 pairs of codes: under 20 kB
    _refused(small, {"inputs": frames, "parameters": {"return_vectors": True}},
             "pairs, above the limit of 0.02 MB " + raise_it.format("MAX_ANSWER_MB"))
    monkeypatch.setenv("LARY_ENDPOINT_MAX_FRAMES", "many")
    with pytest.raises(ValueError, match="LARY_ENDPOINT_MAX_FRAMES='many' must be a positive integer"):
        endpoint.EndpointHandler(str(model_dir))


def test_memory_is_bounded_whatever_the_stride(endpoint, model_dir, tmp_path, monkeypatch):
    """A stride of 2000 on a 2100-frame video: at most 2 x PAIRS_PER_CALL frames through the model at once, never
    the 2000 frames between a pair's two."""
    monkeypatch.setenv("LARY_ENDPOINT_MAX_FRAMES", "3000")
    handler = endpoint.EndpointHandler(str(model_dir))
    rng = np.random.default_rng(0)
    video = write_video((rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(2100)), tmp_path / "long.mp4")
    batches = []
    hook = handler.model.backbone.register_forward_hook(
        lambda module, args, kwargs, output: batches.append(len(kwargs["pixel_values"])), with_kwargs=True)
    try:
        answer = handler({"inputs": video.read_bytes(), "parameters": {"stride": 2000}})
    finally:
        hook.remove()
    assert [(pair["frame_index"], pair["next_frame_index"]) for pair in answer] == [(t, t + 2000) for t in range(100)]
    assert max(batches) == 2 * endpoint.PAIRS_PER_CALL and sum(batches) == 200


def test_the_endpoint_turns_a_portrait_video_upright_as_opencv_reads_it(endpoint, model_dir, media, tmp_path):
    """A phone's portrait video (stored sideways with a -90 degree display matrix): the codes of the upright frames."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (PyAV 18 can)")
    handler = endpoint.EndpointHandler(str(model_dir))
    frames = read_video(media["video"])[:12, :, 8:72]  # 96 x 64: sideways is another shape
    files = {}
    for name, stored, rotation in (("upright", frames, 0), ("portrait", np.rot90(frames, 1, axes=(1, 2)), -90)):
        with av.open(str(tmp_path / f"{name}.mp4"), "w") as container:  # lossless: the same pixels either way
            stream = container.add_stream("libx264", rate=8, options={"qp": "0"})
            stream.width, stream.height, stream.pix_fmt = stored.shape[2], stored.shape[1], "yuv444p"
            if rotation:
                stream.set_display_rotation(rotation)
            for frame in stored:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
        files[name] = (tmp_path / f"{name}.mp4").read_bytes()
    upright = handler({"inputs": files["upright"]})
    assert handler({"inputs": files["portrait"]}) == upright
    _same_pairs(upright, _extract(["--videos", str(tmp_path / "portrait.mp4")], model_dir, tmp_path / "out", stride=1))


def test_the_endpoint_turns_images_upright_by_their_exif_orientation(endpoint, model_dir, media):
    """PNGs whose EXIF orientation turns them: the codes of the upright images."""
    handler = endpoint.EndpointHandler(str(model_dir))
    frames = read_video(media["video"])[:4, :, 8:72]
    pngs = {"upright": [], "exif": []}
    for frame in frames:
        for name, image, orientation in (("upright", frame, 1), ("exif", np.rot90(frame, -1), 8)):
            exif = Image.Exif()
            exif[0x0112] = orientation  # 8: the stored image turns 90 degrees counterclockwise to be seen
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", exif=exif)
            pngs[name].append(buffer.getvalue())
    assert handler({"inputs": pngs["exif"]}) == handler({"inputs": pngs["upright"]})


def test_a_model_whose_weights_do_not_fit_is_refused(endpoint, model_dir, tmp_path):
    broken = Path(shutil.copytree(model_dir, tmp_path / "broken"))
    weights = load_file(broken / "model.safetensors")
    codebook = weights.pop("quantizer.codebook")
    save_file({**weights, "quantizer.spare": codebook}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"broken: missing weights quantizer.codebook; unexpected weights "
                                         r"quantizer.spare; its weights do not fit its config.json"):
        endpoint.EndpointHandler(str(broken))
    save_file({**weights, "quantizer.codebook": codebook[:, :-1].contiguous()}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"broken: mis-shaped weights quantizer.codebook \(checkpoint \(8, 3\), model \(8, 4\)\); its weights do not fit"):
        endpoint.EndpointHandler(str(broken))
    codebook[0, 0] = float("nan")
    save_file({**weights, "quantizer.codebook": codebook}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"broken: weights quantizer.codebook hold NaN or infinity; a model whose "
                                         r"training diverged"):
        endpoint.EndpointHandler(str(broken))


def test_the_handler_chooses_torch_threads_as_lary_extract_does(endpoint, model_dir, monkeypatch, tmp_path):
    handler = endpoint.EndpointHandler(str(model_dir))
    modeling = sys.modules[type(handler.model).__module__]  # the rule is the model's, which lary.runtime imports
    cores = len(os.sched_getaffinity(0))
    assert modeling.compute_threads() == max(1, cores - min(4, cores // 2))
    # a container's CPU quota (cgroup v2) counts, as in lary's rule: 16 cores of affinity, 3 of quota, 1 decoding
    (tmp_path / "cpu.max").write_text("300000 100000\n")
    with monkeypatch.context() as patched:
        patched.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
        for module in {modeling, sys.modules[runtime.compute_threads.__module__]}:  # remote code, lary_hub's
            patched.setattr(module, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
        assert modeling.compute_threads() == 2 == runtime.compute_threads(workers=1) == runtime.compute_threads()
        threads = modeling.compute_threads()
        before = torch.get_num_threads()
        try:
            monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
            endpoint.EndpointHandler(str(model_dir))
            assert torch.get_num_threads() == threads
            torch.set_num_threads(3)
            monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the deployer's own setting stays
            endpoint.EndpointHandler(str(model_dir))
            assert torch.get_num_threads() == 3
        finally:
            torch.set_num_threads(before)


def _serve(model_dir: Path, tmp_path: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`scripts/serve_endpoint.py` on a free port of 127.0.0.1 (lary not importable), and its URL."""
    script = REPO_ROOT / "scripts" / "serve_endpoint.py"
    runner = (f"import runpy, sys; sys.modules['lary'] = sys.modules['lary_hub'] = None; "
              f"sys.argv = [{str(script)!r}, {str(model_dir)!r}, '--port', '0', *{list(options)!r}]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
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
    inputs = base64.b64encode(media["video"].read_bytes()).decode()
    request.write_text(json.dumps({"inputs": inputs, "parameters": {"stride": 2}}))
    json_body = ("-H", "Content-Type: application/json")
    server, url = _serve(model_dir, tmp_path, "--max-body-mb", "1", "--timeout", "2")
    host, port = url.removeprefix("http://").strip("/").split(":")
    try:
        idle = socket.create_connection((host, int(port)))  # says nothing: must block no one
        assert _curl(url + "health") == (200, "Ok")
        status, body = _curl(url, *json_body, "--data-binary", f"@{request}")
        by_query = _curl(url + "?stride=2", *json_body, "-d", json.dumps({"inputs": inputs}))
        seconds = _curl(url + "?stride_seconds=0.25", *json_body, "-d", json.dumps({"inputs": inputs}))
        # the container ignores query parameters beside a body's "parameters": so does this server, visibly
        both = subprocess.run(["curl", "-sS", "-D", "-", url + "?stride=3", *json_body, "--data-binary", f"@{request}"],
                              capture_output=True, text=True, timeout=120).stdout
        bad_input = _curl(url, *json_body, "-d", '{"inputs": "not base64!"}')
        no_inputs = _curl(url, *json_body, "-d", '{"input": []}')
        video_body = _curl(url, "-H", "Content-Type: video/mp4", "--data-binary", f"@{media['video']}")
        octets = _curl(url, "-H", "Content-Type: application/octet-stream", "--data-binary", f"@{media['video']}")
        image_body = _curl(url, "-H", "Content-Type: image/png", "--data-binary", f"@{media['images'] / 'frame_0.png'}")
        too_big = _curl(url, *json_body, "--data-binary", "@" + str(_file(tmp_path / "big.json", 2**20 + 1)))
        idle.settimeout(10)
        assert idle.recv(1) == b""  # closed by the server after --timeout seconds of silence
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert status == 200
    _same_pairs(json.loads(body), _extract(["--videos", str(media["video"])], model_dir, tmp_path / "out", stride=2))
    assert by_query == (200, body)  # query parameters become "parameters", as in the container
    assert seconds == (200, body)  # 0.25 s at 8 fps: 2 frames (text, as the container passes "0.25")
    assert "x-ignored-query-parameters: stride" in both.lower() and both.endswith(body)
    assert bad_input[0] == 400 and "not base64" in json.loads(bad_input[1])["error"]  # the handler raised
    assert no_inputs[0] == 400 and json.loads(no_inputs[1]) == {"error": 'the body must be a JSON object with "inputs"'}
    for refused, content_type in ((video_body, "video/mp4"), (octets, "application/octet-stream")):
        assert refused[0] == 400 and f"Content type '{content_type}': not supported" in json.loads(refused[1])["error"]
    assert image_body[0] == 400 and "inputs is one image (an image/* body is one frame)" in json.loads(image_body[1])["error"]
    assert too_big[0] == 413 and "above this server's limit of 1 MB (--max-body-mb raises it)" in json.loads(too_big[1])["error"]


def _file(path: Path, size: int) -> Path:
    path.write_bytes(b" " * size)
    return path
