"""Configuration of LAPA-DINOv3: a frozen DINOv3 ViT and a LAPA latent action quantizer on its patch features."""

from __future__ import annotations

import copy
import dataclasses

# The Hub files run on transformers 4.51 to 5.x (tests/test_transformers_versions.py): what differs is detected here.
try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers 4
    from transformers import PretrainedConfig as PreTrainedConfig
try:  # later transformers 5 (not 5.5): sub-configs with their defaults
    from transformers.configuration_utils import SubConfigSpec
except ImportError:
    SubConfigSpec = None

# transformers 5's configs are `@strict` dataclasses, checked when built; 4's take `__init__` keyword arguments.
STRICT_DATACLASSES = dataclasses.is_dataclass(PreTrainedConfig)
if STRICT_DATACLASSES:
    from huggingface_hub.dataclasses import strict
else:

    def strict(cls):
        """transformers 4: no `@strict`; the config's `__init__` calls `validate_architecture` itself."""
        return cls


# DINOv3 ViT's fields and defaults, as transformers' `DINOv3ViTConfig` has them.
DINOV3_DEFAULTS = {
    "patch_size": 16,
    "hidden_size": 384,
    "intermediate_size": 1536,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "hidden_act": "gelu",
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "rope_theta": 100.0,
    "image_size": 224,
    "num_channels": 3,
    "query_bias": True,
    "key_bias": False,
    "value_bias": True,
    "proj_bias": True,
    "mlp_bias": True,
    "layerscale_value": 1.0,
    "drop_path_rate": 0.0,
    "use_gated_mlp": False,
    "num_register_tokens": 0,
    "pos_embed_shift": None,
    "pos_embed_jitter": None,
    "pos_embed_rescale": 2.0,
}

try:
    from transformers import DINOv3ViTConfig
except ImportError:  # transformers < 4.56 has no DINOv3; modeling_lapa_dinov3.py brings the ViT too

    class DINOv3ViTConfig(PreTrainedConfig):
        """DINOv3 ViT's configuration where transformers has none: its fields, other keys kept as attributes."""

        model_type = "dinov3_vit"

        def __init__(self, **kwargs):
            for name, default in DINOV3_DEFAULTS.items():
                setattr(self, name, kwargs.pop(name, default))
            super().__init__(**kwargs)

# DINOv3 ViT-L/16 (the backbone of the released `AGI-Eval/LAPA-DINOv3` weights).
DINOV3_VITL16 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_register_tokens": 4,
    "patch_size": 16,
    "image_size": 224,
}

# The pipeline that every config names, so that every saved folder serves `pipeline(model=FOLDER,
# trust_remote_code=True)`: its code is in processing_lapa_dinov3.py, which a save copies beside the model's (it is a
# relative import of modeling_lapa_dinov3.py).
PIPELINE_TASK = "latent-action-extraction"
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": "processing_lapa_dinov3.LapaDinov3LatentActionPipeline", "pt": ["AutoModel"], "type": "image"}
}

# code_seq_len -> the quantizer's downsampling convs as (kernel, stride, padding); ReLU between convs.
# These are the reference's stacks; which one fits depends on the backbone's patch grid (14x14 at 224/16 fits
# 16, 49 and 64).
DOWNSAMPLE_STACKS: dict[int, tuple[tuple[int | tuple[int, int], int, int], ...]] = {
    1: ((3, 2, 1), (4, 1, 0)),
    2: ((3, 2, 1), ((3, 4), 1, 0)),
    4: ((3, 2, 1), (3, 1, 0)),
    16: ((3, 2, 1), (3, 2, 1)),
    49: ((3, 2, 1),),
    64: ((2, 2, 1),),
    256: ((3, 2, 1),),
}


# The values a config may hold, [low, high]: generous, but what a machine can allocate. A config is checked when it is
# built (`validate_architecture`, part of `@strict`), so a negative width or 10^7 layers is named before the model
# allocates anything.
RANGES: dict[str, tuple[float, float]] = {
    "quant_dim": (1, 65536),
    "codebook_size": (1, 2**20),
    "spatial_depth": (1, 256),
    "temporal_depth": (1, 256),
    "decoder_depth": (1, 256),
    "dim_head": (1, 4096),
    "heads": (1, 1024),
    "ff_mult": (1, 64),
    "attention_scale": (1e-6, 1e6),
    "num_null_kv": (0, 1024),
    "position_bias_depth": (1, 64),
    "discarding_threshold": (0, 1),
    "initializer_range": (0, 1e3),
}
# Each size in range can still multiply into a model no machine holds (a 65536-wide backbone of 256 layers): the
# estimated parameter count is bounded too, 20 billion (80 GB in float32; the released model has 0.47 billion).
MAX_PARAMETERS = 2 * 10**10
BACKBONE_RANGES: dict[str, tuple[int, int]] = {
    "hidden_size": (1, 65536),
    "intermediate_size": (1, 262144),
    "num_hidden_layers": (1, 256),
    "num_attention_heads": (1, 1024),
    "num_register_tokens": (0, 1024),
    "patch_size": (1, 1024),
    "image_size": (1, 16384),
}


def check_range(name: str, value, low: float, high: float) -> None:
    """`value` (or each of a tuple's) lies in [low, high]; a ValueError names `name` and the value otherwise."""
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if not low <= item <= high:  # also False for NaN
            raise ValueError(f"{name}={value!r} is out of range: it must be in [{low}, {high}]")


def downsampled_grid(grid: tuple[int, int], code_seq_len: int) -> tuple[int, int]:
    """The (h, w) grid of action codes that the quantizer's conv stack makes from a patch grid."""
    height, width = grid
    for kernel, stride, padding in DOWNSAMPLE_STACKS[code_seq_len]:
        kernel_h, kernel_w = kernel if isinstance(kernel, tuple) else (kernel, kernel)
        height = (height + 2 * padding - kernel_h) // stride + 1
        width = (width + 2 * padding - kernel_w) // stride + 1
    return height, width


@strict
class LapaDinov3Config(PreTrainedConfig):
    r"""
    Configuration of [`LapaDinov3Model`]. Defaults are the released `AGI-Eval/LAPA-DINOv3` model.

    Args:
        backbone_config (`dict` or `DINOv3ViTConfig`, *optional*):
            The frozen DINOv3 ViT. Its `hidden_size` is also the width of the latent action transformers.
        quant_dim (`int`, defaults to 32):
            Width of the NSVQ codebook vectors (the "continuous" latent action space).
        codebook_size (`int`, defaults to 8):
            Number of codebook entries.
        code_seq_len (`int`, defaults to 16):
            Number of action codes per frame pair; selects the quantizer's downsampling stack.
        spatial_depth (`int`, defaults to 4):
            Layers of the encoder's spatial transformer.
        temporal_depth (`int`, defaults to 4):
            Layers of the encoder's temporal transformer.
        decoder_depth (`int`, defaults to 4):
            Layers of the decoder (forward dynamics) transformer.
        dim_head (`int`, defaults to 64), heads (`int`, defaults to 16):
            Attention head width and count of the latent action transformers.
        ff_mult (`int`, defaults to 4):
            GEGLU feed-forward width multiplier (inner width `int(ff_mult * 2/3 * dim)`).
        attention_scale (`float`, defaults to 8.0):
            Logit scale of the l2-normalised (cosine) attention.
        num_null_kv (`int`, defaults to 2):
            Learned null key/value pairs of the decoder's cross-attention.
        position_bias_depth (`int`, defaults to 2):
            Hidden layers of the continuous spatial position bias MLP.
        discarding_threshold (`float`, defaults to 0.1):
            NSVQ dead-code replacement: codes used less than this fraction of a batch are replaced in training.
        initializer_range (`float`, defaults to 0.02):
            Std of the normal initialisation of fresh (untrained) weights.
    """

    model_type = "lapa_dinov3"
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "backbone_config": SubConfigSpec(config_class=DINOv3ViTConfig, init_kwargs=DINOV3_VITL16),
        }
    else:
        sub_configs = {"backbone_config": DINOv3ViTConfig}

    backbone_config: dict | PreTrainedConfig | None = None
    quant_dim: int = 32
    codebook_size: int = 8
    code_seq_len: int = 16
    spatial_depth: int = 4
    temporal_depth: int = 4
    decoder_depth: int = 4
    dim_head: int = 64
    heads: int = 16
    ff_mult: int = 4
    attention_scale: float = 8.0
    num_null_kv: int = 2
    position_bias_depth: int = 2
    discarding_threshold: float = 0.1
    initializer_range: float = 0.02

    if not STRICT_DATACLASSES:

        def __init__(self, **kwargs):
            """transformers 4: the fields from keyword arguments (else the defaults above), then as in 5."""
            for name in LapaDinov3Config.__annotations__:
                setattr(self, name, kwargs.pop(name, getattr(LapaDinov3Config, name)))
            self.__post_init__(**kwargs)

    def __post_init__(self, **kwargs):
        if isinstance(self.backbone_config, dict):
            self.backbone_config = DINOv3ViTConfig(**{**DINOV3_VITL16, **self.backbone_config})
        elif self.backbone_config is None:
            self.backbone_config = DINOv3ViTConfig(**DINOV3_VITL16)
        kwargs.setdefault("custom_pipelines", copy.deepcopy(CUSTOM_PIPELINES))
        if STRICT_DATACLASSES:
            super().__post_init__(**kwargs)
        else:
            super().__init__(**kwargs)
            self.validate_architecture()

    def validate_architecture(self):
        """Check that every size is within its range (`RANGES`, `BACKBONE_RANGES`), and that the code sequence length
        fits the backbone's patch grid."""
        for name, (low, high) in RANGES.items():
            check_range(name, getattr(self, name), low, high)
        backbone = self.backbone_config
        for name, (low, high) in BACKBONE_RANGES.items():
            check_range(f"backbone_config.{name}", getattr(backbone, name), low, high)
        if backbone.hidden_size % backbone.num_attention_heads:
            raise ValueError(
                f"backbone_config.hidden_size={backbone.hidden_size} is not a multiple of "
                f"backbone_config.num_attention_heads={backbone.num_attention_heads}"
            )
        if self.parameter_estimate() > MAX_PARAMETERS:
            raise ValueError(
                f"these sizes make about {self.parameter_estimate():.2e} parameters, more than {MAX_PARAMETERS:.0e} "
                f"({4 * self.parameter_estimate() / 2**30:,.0f} GiB in float32): backbone_config.hidden_size="
                f"{backbone.hidden_size}, intermediate_size={backbone.intermediate_size}, num_hidden_layers="
                f"{backbone.num_hidden_layers}; heads={self.heads} x dim_head={self.dim_head}, ff_mult={self.ff_mult}, "
                f"spatial/temporal/decoder_depth={self.spatial_depth}/{self.temporal_depth}/{self.decoder_depth}, "
                f"codebook_size={self.codebook_size} x quant_dim={self.quant_dim}"
            )
        if self.code_seq_len not in DOWNSAMPLE_STACKS:
            raise ValueError(
                f"code_seq_len={self.code_seq_len} is not supported; choose one of {sorted(DOWNSAMPLE_STACKS)}"
            )
        codes = downsampled_grid(self.patch_grid, self.code_seq_len)
        if codes[0] * codes[1] != self.code_seq_len:
            raise ValueError(
                f"code_seq_len={self.code_seq_len} does not fit a {self.patch_grid[0]}x{self.patch_grid[1]} patch "
                f"grid: its conv stack makes {codes[0]}x{codes[1]} codes"
            )

    def parameter_estimate(self) -> int:
        """The model's weights, counted from its sizes (within 1% for the released shape): the backbone's layers, the
        latent action transformers' attention and gated feed-forward layers (the decoder's with cross-attention), and
        the codebook."""
        backbone = self.backbone_config
        width, attention_width = backbone.hidden_size, self.heads * self.dim_head
        backbone_layers = backbone.num_hidden_layers * (4 * width * width + 2 * width * backbone.intermediate_size)
        attention = 4 * width * attention_width
        layer = attention + 3 * width * int(self.ff_mult * (2 / 3) * width)
        layers = (self.spatial_depth + self.temporal_depth) * layer + self.decoder_depth * (layer + attention)
        return backbone_layers + layers + self.codebook_size * self.quant_dim

    @property
    def hidden_size(self) -> int:
        """Width of the backbone features and of the latent action transformers."""
        return self.backbone_config.hidden_size

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(h, w) patch grid of the backbone at its configured image size."""
        size = self.backbone_config.image_size
        patch = self.backbone_config.patch_size
        height, width = size if isinstance(size, (list, tuple)) else (size, size)
        patch_h, patch_w = patch if isinstance(patch, (list, tuple)) else (patch, patch)
        return height // patch_h, width // patch_w


# Every save writes `auto_map` and this file, also when the class came from `lary` rather than remote code.
LapaDinov3Config.register_for_auto_class()

__all__ = ["LapaDinov3Config"]
