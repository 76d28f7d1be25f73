"""Registering LAPA-DINOv3 with transformers' Auto classes, so saved folders load without `trust_remote_code`.

`import lary` registers at once, which imports transformers and torch (seconds). The `lary` command line is the one
exception: it parses its arguments first, so that `lary --help` and argument errors answer at once, and registers
just before the command runs (`lary.cli`).
"""

from __future__ import annotations

import sys
from pathlib import Path


def register() -> None:
    """`AutoConfig`, `AutoModel` and `AutoProcessor` learn `model_type: lapa_dinov3` (idempotent)."""
    from lary_hub.configuration_lapa_dinov3 import LapaDinov3Config
    from lary_hub.modeling_lapa_dinov3 import LapaDinov3Model
    from lary_hub.processing_lapa_dinov3 import LapaDinov3Processor
    from transformers import AutoConfig, AutoModel, AutoProcessor

    AutoConfig.register(LapaDinov3Config.model_type, LapaDinov3Config, exist_ok=True)
    AutoModel.register(LapaDinov3Config, LapaDinov3Model, exist_ok=True)
    AutoProcessor.register(LapaDinov3Config, LapaDinov3Processor, exist_ok=True)


def launched_as_cli() -> bool:
    """Whether this interpreter was started as the `lary` console script or as `python [options] -m lary`."""
    argv = getattr(sys, "orig_argv", [])
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "-m":
            return argv[index + 1 : index + 2] == ["lary"]
        if arg in ("-X", "-W"):  # interpreter options with a value
            index += 2
        elif arg.startswith("-"):
            index += 1
        else:  # the script
            return Path(arg).name == "lary"
    return False
