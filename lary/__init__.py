"""Latent actions with LAPA-DINOv3 and the LARY benchmark.

Importing `lary` registers LAPA-DINOv3 with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoProcessor`), so saved folders load without `trust_remote_code` (see `lary.registration`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lary import registration

__version__ = "0.1.0"

# public name -> the Hub module that defines it
_HUB_CLASSES = {
    "LapaDinov3Config": "lary_hub.configuration_lapa_dinov3",
    "LapaDinov3Model": "lary_hub.modeling_lapa_dinov3",
    "LapaDinov3Output": "lary_hub.modeling_lapa_dinov3",
    "LapaDinov3Processor": "lary_hub.processing_lapa_dinov3",
}
# public name -> the lary module that defines it (imported on first use: they load torch and the extract code)
_LARY_CLASSES = {"LatentActionLabeler": "lary.labeler", "LatentActionTokens": "lary.tokens"}

if TYPE_CHECKING:
    from lary_hub.configuration_lapa_dinov3 import LapaDinov3Config
    from lary_hub.modeling_lapa_dinov3 import LapaDinov3Model, LapaDinov3Output
    from lary_hub.processing_lapa_dinov3 import LapaDinov3Processor

    from lary.labeler import LatentActionLabeler
    from lary.tokens import LatentActionTokens

if not registration.launched_as_cli():
    registration.register()


def __getattr__(name: str):
    if name in _HUB_CLASSES:
        return getattr(importlib.import_module(_HUB_CLASSES[name]), name)
    if name in _LARY_CLASSES:
        return getattr(importlib.import_module(_LARY_CLASSES[name]), name)
    raise AttributeError(f"module 'lary' has no attribute {name!r}")


__all__ = [
    "LapaDinov3Config",
    "LapaDinov3Model",
    "LapaDinov3Output",
    "LapaDinov3Processor",
    "LatentActionLabeler",
    "LatentActionTokens",
]
