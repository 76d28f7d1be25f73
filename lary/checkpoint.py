"""Reading LARYBench LAPA-DINOv3 checkpoints: key mapping onto `LapaDinov3Model`, with every key accounted for, and
the model they make (`convert_checkpoint`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoConfig, DINOv3ViTConfig, DINOv3ViTModel
from transformers.initialization import no_init_weights

from lary import LapaDinov3Config, LapaDinov3Model
from lary.errors import LaryError
from lary.hub import build_config, load_config, load_pretrained
from lary.jsonfile import read_json_object

# The reference constructor's keyword arguments (LARYBench `LatentActionQuantizationDinov3Feature`) and the
# released model's values.
REFERENCE_LAQ_DEFAULTS = {
    "dim": 1024,
    "quant_dim": 32,
    "codebook_size": 8,
    "image_size": 224,
    "patch_size": 16,
    "spatial_depth": 4,
    "temporal_depth": 4,
    "dim_head": 64,
    "heads": 16,
    "code_seq_len": 16,
}

_TRANSFORMERS = {
    "enc_spatial_transformer": "spatial_encoder",
    "enc_temporal_transformer": "temporal_encoder",
    "dec_spatial_transformer": "decoder",
}
_BLOCK_PARTS = {"0": "position_generator", "1": "self_attention", "2": "cross_attention", "3": "feed_forward"}
_ATTENTION_PARTS = {"to_q": "q_proj", "to_kv": "kv_proj", "to_out": "o_proj"}
_FEED_FORWARD_PARTS = {"0": "norm", "1": "proj_in", "4": "proj_out"}


class CheckpointMismatchError(LaryError):
    """The checkpoint's keys do not match the model: lists what is missing and what is unexpected."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], mismatched: list[str] = ()):
        lines = [f"{source} does not match the LAPA-DINOv3 model:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(sorted(keys)))
        super().__init__("\n".join(lines))
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


def load_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The `model` state dict of a LARYBench training checkpoint (a pickle, read with `weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise LaryError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  torch's text suggests the unsafe path (weights_only=False): never shown
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise LaryError(f"{path} holds a Python object ({found[1]}) besides tensors, which lary never unpickles: "
                            "not a training checkpoint of tensors") from None
        raise LaryError(f"{path} is not a PyTorch checkpoint, or is damaged ({type(error).__name__})") from None
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise LaryError(f"{path} holds no state dict (expected a dict of tensors, or one under the key 'model')")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def _rename(key: str) -> str | None:
    """Our name for a reference key; None for a key that is dropped by rule (see `convert_state_dict`)."""
    if key.startswith("dino_tokenizer."):
        rest = key.removeprefix("dino_tokenizer.")
        # transformers 4.x saved DINOv3 layers as `layer.N`; transformers 5 nests them under `model.`
        return "backbone." + re.sub(r"^layer\.", "model.layer.", rest)
    if match := re.fullmatch(r"spatial_rel_pos_bias\.net\.(\d+)(?:\.0)?\.(weight|bias)", key):
        return f"position_bias.layers.{match[1]}.{match[2]}"
    if match := re.fullmatch(r"vq\.(codebooks|project_in\..+|project_out\..+|cnn_encoder\..+)", key):
        name = match[1].replace("codebooks", "codebook").replace("cnn_encoder", "downsample")
        return f"quantizer.{name}"
    if match := re.fullmatch(r"(\w+_transformer)\.norm_out\.(gamma|beta)", key):
        return f"{_TRANSFORMERS[match[1]]}.norm_out.weight" if match[2] == "gamma" else None
    match = re.fullmatch(r"(\w+_transformer)\.layers\.(\d+)\.(\d)\.(.+)", key)
    if match is None or match[1] not in _TRANSFORMERS or match[3] not in _BLOCK_PARTS:
        return key  # not a reference key: reported as unexpected
    prefix = f"{_TRANSFORMERS[match[1]]}.layers.{match[2]}.{_BLOCK_PARTS[match[3]]}"
    part, name = _BLOCK_PARTS[match[3]], match[4]
    if part == "position_generator":
        return f"{prefix}.{name.replace('dsconv', 'conv')}"
    if part == "feed_forward":
        index, _, param = name.partition(".")
        return f"{prefix}.{_FEED_FORWARD_PARTS.get(index, index)}.{param}"
    if name.endswith(".beta") or name == "null_kv":
        return None
    if name == "context_norm.gamma":
        return f"{prefix}.context_norm.weight" if part == "cross_attention" else None
    if name == "norm.gamma":
        return f"{prefix}.norm.weight"
    module, _, param = name.partition(".")
    return f"{prefix}.{_ATTENTION_PARTS.get(module, module)}" + (f".{param}" if param else "")


def convert_state_dict(
    reference: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Map a reference state dict onto our parameter names and check it against `expected` (name -> shape).

    Dropped by rule, after checking they carry nothing: the bias-less LayerNorms' `beta` buffers (all zeros), the
    self-attentions' empty `null_kv` and unused `context_norm`. Cross-attention `null_kv` (heads, 2n, d) holds
    interleaved key/value rows and becomes `null_key`/`null_value`. Raises `CheckpointMismatchError` listing
    every missing, unexpected and mis-shaped key.
    """
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in reference.items():
        name = _rename(key)
        if key.endswith("null_kv") and ".layers." in key:
            cross_prefix = _rename(key.replace("null_kv", "q_scale")).removesuffix(".q_scale")
            if cross_prefix.endswith("cross_attention"):
                converted[f"{cross_prefix}.null_key"] = tensor[:, 0::2]
                converted[f"{cross_prefix}.null_value"] = tensor[:, 1::2]
            elif tensor.numel() != 0:
                unexpected.append(key)  # a self-attention with null key/values is not this architecture
            continue
        if name is None:
            if key.endswith(".beta") and bool(tensor.any()):
                unexpected.append(key)  # a non-zero bias would change the numbers
            continue
        if name not in expected:
            unexpected.append(key)
            continue
        converted[name] = tensor
    missing = [name for name in expected if name not in converted]
    mismatched = [
        f"{name} {tuple(converted[name].shape)} != {tuple(shape)}"
        for name, shape in expected.items()
        if name in converted and tuple(converted[name].shape) != tuple(shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)
    return converted


def config_from_reference(laq: dict, backbone_config: DINOv3ViTConfig) -> LapaDinov3Config:
    """Our config from the reference constructor's keyword arguments and a DINOv3 config."""
    unknown = sorted(set(laq) - set(REFERENCE_LAQ_DEFAULTS))
    if unknown:
        raise LaryError(f"unknown LAQ config keys {unknown}; expected a subset of {sorted(REFERENCE_LAQ_DEFAULTS)}")
    laq = {**REFERENCE_LAQ_DEFAULTS, **laq}
    if laq["dim"] != backbone_config.hidden_size:
        raise LaryError(f"LAQ dim={laq['dim']} must equal the backbone's hidden_size={backbone_config.hidden_size}")
    if laq["patch_size"] != backbone_config.patch_size:
        raise LaryError(f"LAQ patch_size={laq['patch_size']} differs from the backbone's {backbone_config.patch_size}")
    backbone_config.image_size = laq["image_size"]
    return build_config(
        "LAQ config",
        backbone_config=backbone_config,
        quant_dim=laq["quant_dim"],
        codebook_size=laq["codebook_size"],
        code_seq_len=laq["code_seq_len"],
        spatial_depth=laq["spatial_depth"],
        temporal_depth=laq["temporal_depth"],
        decoder_depth=laq["spatial_depth"],  # the reference's decoder has the spatial encoder's depth
        dim_head=laq["dim_head"],
        heads=laq["heads"],
    )


def backbone_config_from(path: str | None, backbone: str | None) -> DINOv3ViTConfig:
    if path is not None:
        data = read_json_object(path, "backbone config")
        data.pop("transformers_version", None)
        return DINOv3ViTConfig(**data)
    if backbone is not None:
        config = load_config(AutoConfig, backbone, "--backbone")
        if not isinstance(config, DINOv3ViTConfig):
            raise LaryError(f"--backbone {backbone} is a {type(config).__name__}, not a DINOv3 ViT")
        return config
    return LapaDinov3Config().backbone_config


def convert_checkpoint(
    checkpoint: str | Path,
    laq_config: dict | None = None,
    backbone_config: DINOv3ViTConfig | None = None,
    backbone: str | None = None,
    allow_missing_weights: bool = False,
) -> LapaDinov3Model:
    """Load a reference checkpoint into `LapaDinov3Model`; DINOv3 weights from `backbone` if it has none (all of
    them, unless `allow_missing_weights`)."""
    reference = load_reference_state_dict(checkpoint)
    if backbone_config is None:
        backbone_config = backbone_config_from(None, backbone)
    config = config_from_reference(laq_config or {}, backbone_config)
    if not any(key.startswith("dino_tokenizer.") for key in reference):
        if backbone is None:
            raise LaryError(f"{checkpoint} holds no DINOv3 weights (dino_tokenizer.*): pass --backbone ID_OR_DIR")
        dinov3 = load_pretrained(DINOv3ViTModel, backbone, "--backbone", allow_missing_weights, dtype=torch.float32)
        reference.update({f"dino_tokenizer.{key}": value for key, value in dinov3.state_dict().items()})
    with no_init_weights():
        model = LapaDinov3Model(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    model.load_state_dict(convert_state_dict(reference, expected, source=str(checkpoint)), strict=True)
    return model.eval()
