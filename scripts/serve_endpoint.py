"""Serve a model folder's `handler.py` over HTTP on this machine, as Inference Endpoints' container does: try an
endpoint with `curl` before deploying it.

    python scripts/serve_endpoint.py MODEL_DIR [--port 8080] [--host 127.0.0.1]
    curl -s http://127.0.0.1:8080/ -H "Content-Type: application/json" -d '{"inputs": "BASE64_OF_A_VIDEO"}'

It follows the container's rules (huggingface-inference-toolkit 0.5.6, `webservice_starlette.py`): it imports
`MODEL_DIR/handler.py` as the module `handler.EndpointHandler` with `MODEL_DIR` first on `sys.path` and builds
`EndpointHandler(MODEL_DIR)` once; `POST /` (and `/predict`) turns the body into the handler's `data` by its exact
Content-Type (`application/json` is parsed; `image/png`, `image/jpeg`, ... become `{"inputs": PIL image}`; `audio/*`
become `{"inputs": bytes}`; anything else, `video/*` and `application/octet-stream` among them, is refused); query
parameters become `"parameters"` (digits as integers, `true`/`false` as booleans) only when the body has none (they
are then ignored, as the container ignores them: this server says so in its log and in the answer's
`X-Ignored-Query-Parameters` header); one request runs the handler at a time; a body without "inputs", or a handler
that raises, gets status 400 and `{"error": message}`. `GET /` (and `/health`) answers "Ok".

Beyond the container, for a server on a shared machine: bodies larger than `--max-body-mb` are refused (413) before
they are read, and a connection idle for `--timeout` seconds is closed; each connection has its own thread, so an idle
one blocks no one. It uses only the standard library (and PIL, for image bodies), never `lary`: what works here works
where `lary` is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger("serve_endpoint")

# The container's Content-Type table (huggingface_inference_toolkit/serialization/base.py): matched exactly
JSON_TYPES = {"application/json", "application/json; charset=UTF-8"}
IMAGE_TYPES = {f"image/{kind}" for kind in ("png", "jpeg", "jpg", "tiff", "bmp", "gif", "webp", "x-image")}
AUDIO_TYPES = {f"audio/{kind}" for kind in ("x-flac", "flac", "mpeg", "x-mpeg-3", "wave", "wav", "x-wav", "ogg",
                                             "x-audio", "webm", "webm;codecs=opus", "AMR", "amr", "AMR-WB", "AMR-WB+",
                                             "m4a", "x-m4a")}
TEXT_TYPES = {"text/csv", "text/plain"}  # listed by the container without a reader: refused there too
DEFAULT_MAX_BODY_MB = 300  # a 200 MB video (the handler's default input limit) is ~267 MB as base64 JSON
DEFAULT_TIMEOUT_S = 60
MEGABYTE = 2**20


class BodyError(ValueError):
    """A body the container would refuse (400), or one too large for this server (413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def load_handler(model_dir: Path):
    """`EndpointHandler(model_dir)` from `model_dir/handler.py`, imported as the container imports it."""
    if not (model_dir / "handler.py").is_file():
        raise SystemExit(f"{model_dir / 'handler.py'}: no such file (`lary endpoint {model_dir}` adds it)")
    name = "handler.EndpointHandler"  # the container's module name (HF_MODULE_NAME)
    spec = importlib.util.spec_from_file_location(name, model_dir / "handler.py")
    sys.path.insert(0, str(model_dir))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(model_dir))


def query_parameters(query: str) -> dict[str, Any]:
    """Query parameters as the container reads them (`convert_params_to_int_or_bool`): digits become integers,
    `true` and `false` booleans, the rest stays text."""
    values: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    for key, text in values.items():
        values[key] = int(text) if text.isnumeric() else {"true": True, "false": False}.get(text, text)
    return values


def read_body(content_type: str | None, body: bytes) -> dict[str, Any]:
    """The handler's `data` from a body, by its Content-Type, as the container makes it."""
    if content_type in JSON_TYPES:
        try:
            data = json.loads(body)
        except ValueError as error:
            raise BodyError(f"the body is not JSON ({error})") from None
    elif content_type in IMAGE_TYPES:
        from PIL import Image

        try:
            data = {"inputs": Image.open(io.BytesIO(body)).convert("RGB")}
        except Exception as error:  # the container answers whatever PIL raises with 400
            raise BodyError(f"the {content_type} body is not an image PIL can read ({error})") from None
    elif content_type in AUDIO_TYPES:
        data = {"inputs": body}
    else:
        readable = "the container lists it but reads no such body" if content_type in TEXT_TYPES else "not supported"
        raise BodyError(f"Content type {content_type!r}: {readable}; send application/json (a video as base64, or a "
                        "list of images as base64) or one image as image/png, image/jpeg, ...")
    if not isinstance(data, dict) or ("inputs" not in data and "instances" not in data):
        raise BodyError('the body must be a JSON object with "inputs"')
    return data


def make_server(handler, host: str, port: int, max_body_mb: float = DEFAULT_MAX_BODY_MB,
                timeout: float = DEFAULT_TIMEOUT_S) -> ThreadingHTTPServer:
    one_at_a_time = threading.Lock()  # the container runs one request through the handler at a time

    class Requests(BaseHTTPRequestHandler):
        def setup(self) -> None:
            self.timeout = timeout  # the connection's socket: reading a request line or body waits this long
            super().setup()

        def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if urlsplit(self.path).path in ("/", "/health"):
                self._answer(200, b"Ok")
            else:
                self._answer(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path not in ("/", "/predict"):
                self._answer(404, {"error": f"no such path {url.path}"})
                self.close_connection = True  # its body was not read
                return
            headers = {}
            try:
                data = read_body(self.headers.get("Content-Type"), self._body())
                if url.query and "parameters" not in data:
                    data["parameters"] = query_parameters(url.query)
                elif url.query:  # the container's rule: the body's parameters win
                    ignored = ", ".join(query_parameters(url.query))
                    logger.warning("query parameters %s ignored: the body has \"parameters\"", ignored)
                    headers["X-Ignored-Query-Parameters"] = ignored
                accept = self.headers.get("Accept")
                if accept not in (None, "*/*", *JSON_TYPES):
                    raise BodyError(f"Accept type {accept!r} not supported; the answer is application/json")
                with one_at_a_time:
                    answer = handler(data)
            except BodyError as error:
                self._answer(error.status, {"error": str(error)})
                self.close_connection = error.status == 413
                return
            except Exception as error:  # the container's answer to a handler that raises: 400 and the message
                logger.exception("the handler raised")
                self._answer(400, {"error": str(error) or type(error).__name__})
                return
            self._answer(200, answer, headers)

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise BodyError("send the body with a Content-Length", 411)
            if int(length) > max_body_mb * MEGABYTE:
                raise BodyError(f"the body is {int(length) / MEGABYTE:.1f} MB, above this server's limit of "
                                f"{max_body_mb:g} MB (--max-body-mb raises it)", 413)
            return self.rfile.read(int(length))

        def log_message(self, format: str, *args) -> None:
            logger.info(format, *args)

    server = ThreadingHTTPServer((host, port), Requests)
    server.daemon_threads = True  # a connection left open never keeps the server from stopping
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a folder with handler.py (`lary endpoint MODEL_DIR` adds it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: a free one)")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                        help=f"larger bodies are refused before they are read (default: {DEFAULT_MAX_BODY_MB})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds a connection may wait idle, or between the parts of a body (default: {DEFAULT_TIMEOUT_S:g})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = make_server(load_handler(args.model_dir.resolve()), args.host, args.port, args.max_body_mb, args.timeout)
    print(f"serving {args.model_dir} on http://{args.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
