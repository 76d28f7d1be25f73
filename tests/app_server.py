"""The `lary app` page launched on a free localhost port, for the client and browser tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from conftest import free_port  # noqa: E402

from lary.app.analysis import Analyzer  # noqa: E402
from lary.app.limits import Limits  # noqa: E402
from lary.app.page import build_app, launch  # noqa: E402
from lary.app.sessions import SessionStore  # noqa: E402
from lary.demo import default_model  # noqa: E402


@dataclass
class Served:
    url: str
    analyzer: Analyzer
    blocks: Any  # gradio's Blocks

    @property
    def sessions(self) -> SessionStore:
        """The visitors' analyses."""
        return self.blocks.lary_sessions


@contextmanager
def served_app(limits: Limits) -> Iterator[Served]:
    """The page with the embedded model and `limits`, served until the block ends."""
    analyzer = Analyzer(default_model(), limits)
    blocks = build_app(analyzer)
    port = free_port()
    launch(blocks, limits, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Served(f"http://127.0.0.1:{port}/", analyzer, blocks)
    finally:
        blocks.close()
