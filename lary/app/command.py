"""`lary app`: the Space's page on this machine, offline with the embedded model by default."""

from __future__ import annotations

from lary.app.analysis import Analyzer
from lary.app.limits import Limits
from lary.configs.app import AppConfig
from lary.hub import default_model


def app(config: AppConfig) -> int:
    """Load the model (a bad `--model` fails here, before Gradio is imported), then serve the page until Ctrl+C."""
    limits = Limits(max_frames=config.max_frames, max_pixels=config.max_pixels, max_file_mb=config.max_file_mb)
    analyzer = Analyzer(config.model or default_model(), limits, allow_missing_weights=config.allow_missing_weights)
    analyzer.load()
    from lary.app.page import build_app, launch

    launch(build_app(analyzer), limits, server_name=config.host, server_port=config.port, share=config.share)
    return 0
