"""Latent actions with LAPA-DINOv3 and the LARY benchmark.

Importing `lary` registers LAPA-DINOv3 with the transformers Auto classes, so saved models load without
`trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from lary_hub.configuration_lapa_dinov3 import LapaDinov3Config
from lary_hub.modeling_lapa_dinov3 import LapaDinov3Model, LapaDinov3Output
from lary_hub.processing_lapa_dinov3 import LapaDinov3Processor

__version__ = "0.1.0"

AutoConfig.register(LapaDinov3Config.model_type, LapaDinov3Config, exist_ok=True)
AutoModel.register(LapaDinov3Config, LapaDinov3Model, exist_ok=True)
AutoProcessor.register(LapaDinov3Config, LapaDinov3Processor, exist_ok=True)

__all__ = ["LapaDinov3Config", "LapaDinov3Model", "LapaDinov3Output", "LapaDinov3Processor"]
