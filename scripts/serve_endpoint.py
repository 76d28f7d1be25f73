"""Serve a model folder's `handler.py` over HTTP on this machine, as Inference Endpoints' container does: try an
endpoint with `curl` before deploying it.

    python scripts/serve_endpoint.py MODEL_DIR [--port 8080] [--host 127.0.0.1]
    curl -s http://127.0.0.1:8080/ -H "Content-Type: application/json" -d '{"inputs": "BASE64_OF_A_VIDEO"}'

Like the container (huggingface-inference-toolkit, task "Custom"), it imports `MODEL_DIR/handler.py` as the module
`handler` with `MODEL_DIR` first on `sys.path`, builds `EndpointHandler(MODEL_DIR)` once, answers `POST /` (and
`/predict`) with a JSON body holding "inputs" by calling the handler with it (query parameters become "parameters"),
and `GET /` (and `/health`) with "Ok". A body it cannot use, or a handler that raises, gets status 400 and
`{"error": "..."}`. It uses only the standard library, never `lary`: what works here works where `lary` is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger("serve_endpoint")


def load_handler(model_dir: Path):
    """`EndpointHandler(model_dir)` from `model_dir/handler.py`, imported as the container imports it."""
    if not (model_dir / "handler.py").is_file():
        raise SystemExit(f"{model_dir / 'handler.py'}: no such file (`lary convert` and `lary train` write it)")
    spec = importlib.util.spec_from_file_location("handler", model_dir / "handler.py")
    sys.path.insert(0, str(model_dir))
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(model_dir))


def _value(text: str):
    """A query parameter as the container reads it: an integer or a boolean where it is one."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return int(text) if text.lstrip("-").isdigit() else text


def make_server(handler, host: str, port: int) -> HTTPServer:
    class Requests(BaseHTTPRequestHandler):
        def _answer(self, status: int, body) -> None:
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
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
                return
            try:
                body = self._body()
            except ValueError as error:
                self._answer(400, {"error": str(error)})
                return
            if url.query and "parameters" not in body:
                body["parameters"] = {key: _value(value) for key, value in parse_qsl(url.query)}
            try:
                answer = handler(body)
            except Exception as error:  # the container's answer to a handler that raises: 400 and the message
                logger.exception("the handler raised")
                self._answer(400, {"error": str(error).splitlines()[0] if str(error) else type(error).__name__})
                return
            self._answer(200, answer)

        def _body(self) -> dict:
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise ValueError("send a JSON body with Content-Type: application/json")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
            except json.JSONDecodeError as error:
                raise ValueError(f"the body is not JSON ({error})") from None
            if not isinstance(body, dict) or "inputs" not in body:
                raise ValueError('the body must be a JSON object with "inputs"')
            return body

        def log_message(self, format: str, *args) -> None:
            logger.info(format, *args)

    return HTTPServer((host, port), Requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a folder with handler.py (a `lary convert` or `lary train` output)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: a free one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = make_server(load_handler(args.model_dir.resolve()), args.host, args.port)
    print(f"serving {args.model_dir} on http://{args.host}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
