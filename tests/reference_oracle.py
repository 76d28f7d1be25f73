"""A test oracle: the reference LAPA-DINOv3 computation written as plain functions over reference-named weights.

It describes LARYBench's `LatentActionQuantizationDinov3Feature` independently of `modeling_lapa_dinov3.py`: it
reads the checkpoint's own key names (so it also checks the converter's mapping), runs the position bias MLP on
every token pair, splits null key/values by reshaping, and computes distances by broadcasting. It is validated
against the reference's golden outputs and the released checkpoint's key manifest (see test_reference_oracle.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import DINOv3ViTConfig, DINOv3ViTModel

# The reference's quantizer conv stacks by code_seq_len, as (kernel, stride, padding) per conv.
CONV_STACKS = {16: [(3, 2, 1), (3, 2, 1)], 49: [(3, 2, 1)], 64: [(2, 2, 1)]}


def reference_keys(laq: dict, backbone: DINOv3ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every LAQ key (not DINOv3) and shape of a reference checkpoint with these constructor arguments."""
    dim, heads, dim_head, q = laq["dim"], laq["heads"], laq["dim_head"], laq["quant_dim"]
    inner, ff = heads * dim_head, int(4 * (2 / 3) * dim)
    keys = {
        "spatial_rel_pos_bias.net.0.0.weight": (dim, 2),
        "spatial_rel_pos_bias.net.0.0.bias": (dim,),
        "spatial_rel_pos_bias.net.1.0.weight": (dim, dim),
        "spatial_rel_pos_bias.net.1.0.bias": (dim,),
        "spatial_rel_pos_bias.net.2.weight": (heads, dim),
        "spatial_rel_pos_bias.net.2.bias": (heads,),
    }
    for name, depth, cross in (
        ("enc_spatial_transformer", laq["spatial_depth"], False),
        ("enc_temporal_transformer", laq["temporal_depth"], False),
        ("dec_spatial_transformer", laq["spatial_depth"], True),
    ):
        for i in range(depth):
            p = f"{name}.layers.{i}"
            keys[f"{p}.0.dsconv.weight"] = (dim, 1, 3, 3, 3)
            keys[f"{p}.0.dsconv.bias"] = (dim,)
            for j, null in [(1, 0)] + ([(2, 4)] if cross else []):
                a = f"{p}.{j}"
                keys.update({
                    f"{a}.null_kv": (heads, null, dim_head),
                    f"{a}.q_scale": (dim_head,),
                    f"{a}.k_scale": (dim_head,),
                    f"{a}.norm.gamma": (dim,),
                    f"{a}.norm.beta": (dim,),
                    f"{a}.context_norm.gamma": (dim,),
                    f"{a}.context_norm.beta": (dim,),
                    f"{a}.to_q.weight": (inner, dim),
                    f"{a}.to_kv.weight": (2 * inner, dim),
                    f"{a}.to_out.weight": (dim, inner),
                })
            keys.update({
                f"{p}.3.0.weight": (dim,),
                f"{p}.3.0.bias": (dim,),
                f"{p}.3.1.weight": (2 * ff, dim),
                f"{p}.3.4.weight": (dim, ff),
            })
        keys[f"{name}.norm_out.gamma"] = (dim,)
        keys[f"{name}.norm_out.beta"] = (dim,)
    keys.update({
        "vq.codebooks": (laq["codebook_size"], q),
        "vq.project_in.weight": (q, dim),
        "vq.project_in.bias": (q,),
        "vq.project_out.weight": (dim, q),
        "vq.project_out.bias": (dim,),
    })
    for index, (kernel, _, _) in enumerate(CONV_STACKS[laq["code_seq_len"]]):
        keys[f"vq.cnn_encoder.{2 * index}.weight"] = (q, q, kernel, kernel)
        keys[f"vq.cnn_encoder.{2 * index}.bias"] = (q,)
    return keys


def random_reference_checkpoint(laq: dict, backbone: DINOv3ViTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A reference-format state dict with random weights, DINOv3 named as transformers 4.x saved it."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference_keys(laq, backbone).items():
        if key.endswith(".beta"):
            state[key] = torch.zeros(shape)
        elif key.endswith(("gamma", "scale")) or key.endswith("3.0.weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) >= 2 and "null_kv" not in key and "codebooks" not in key:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        else:
            state[key] = torch.randn(shape, generator=generator) * (0.1 if key.endswith("bias") else 1.0)
    torch.manual_seed(seed)
    dino = DINOv3ViTModel(backbone).state_dict()
    for key, value in dino.items():
        state["dino_tokenizer." + key.replace("model.layer.", "layer.")] = value
    return state


def _layer_norm(x, w, prefix):
    return F.layer_norm(x, x.shape[-1:], w[f"{prefix}.gamma"], w[f"{prefix}.beta"])


def _attention(w, p, x, heads, context=None, bias=None):
    kv_input = x if context is None else _layer_norm(context, w, f"{p}.context_norm")
    q = _layer_norm(x, w, f"{p}.norm") @ w[f"{p}.to_q.weight"].T
    k, v = (kv_input @ w[f"{p}.to_kv.weight"].T).chunk(2, dim=-1)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    null = w[f"{p}.null_kv"]
    null = null.reshape(heads, null.shape[1] // 2, 2, null.shape[2])
    k = torch.cat([null[:, :, 0].unsqueeze(0).expand(x.shape[0], -1, -1, -1), k], dim=2)
    v = torch.cat([null[:, :, 1].unsqueeze(0).expand(x.shape[0], -1, -1, -1), v], dim=2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12) * w[f"{p}.q_scale"]
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12) * w[f"{p}.k_scale"]
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * 8
    if bias is not None:
        sim = sim + bias
    out = torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)
    return out.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1) @ w[f"{p}.to_out.weight"].T


def _peg(w, p, x, shape):
    b, t, h, wd = shape
    grid = x.reshape(b, t, h, wd, -1).permute(0, 4, 1, 2, 3)
    grid = F.pad(grid, (1, 1, 1, 1, 2, 0))
    grid = F.conv3d(grid, w[f"{p}.dsconv.weight"], w[f"{p}.dsconv.bias"], groups=grid.shape[1])
    return grid.permute(0, 2, 3, 4, 1).reshape(x.shape)


def _transformer(w, name, depth, x, shape, heads, bias=None, context=None):
    for i in range(depth):
        p = f"{name}.layers.{i}"
        x = _peg(w, f"{p}.0", x, shape) + x
        x = _attention(w, f"{p}.1", x, heads, bias=bias) + x
        if context is not None:
            x = _attention(w, f"{p}.2", x, heads, context=context) + x
        hidden = F.layer_norm(x, x.shape[-1:], w[f"{p}.3.0.weight"], w[f"{p}.3.0.bias"]) @ w[f"{p}.3.1.weight"].T
        value, gate = hidden.chunk(2, dim=-1)
        x = (F.gelu(gate) * value) @ w[f"{p}.3.4.weight"].T + x
    return _layer_norm(x, w, f"{name}.norm_out")


def _position_bias(w, h, wd):
    pos = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")).reshape(2, -1).T
    rel = (pos[:, None, :] - pos[None, :, :]).float()
    rel = torch.sign(rel) * torch.log(rel.abs() + 1)
    x = F.leaky_relu(rel @ w["spatial_rel_pos_bias.net.0.0.weight"].T + w["spatial_rel_pos_bias.net.0.0.bias"], 0.1)
    x = F.leaky_relu(x @ w["spatial_rel_pos_bias.net.1.0.weight"].T + w["spatial_rel_pos_bias.net.1.0.bias"], 0.1)
    x = x @ w["spatial_rel_pos_bias.net.2.weight"].T + w["spatial_rel_pos_bias.net.2.bias"]
    return x.permute(2, 0, 1)


def _vq_encode(w, laq, tokens, grid):
    b = tokens.shape[0]
    x = tokens @ w["vq.project_in.weight"].T + w["vq.project_in.bias"]
    x = x.permute(0, 2, 1).reshape(b, laq["quant_dim"], *grid)
    stack = CONV_STACKS[laq["code_seq_len"]]
    for index, (_, stride, padding) in enumerate(stack):
        x = F.conv2d(x, w[f"vq.cnn_encoder.{2 * index}.weight"], w[f"vq.cnn_encoder.{2 * index}.bias"], stride, padding)
        if index < len(stack) - 1:
            x = F.relu(x)
    return x.reshape(b, laq["quant_dim"], -1).permute(0, 2, 1).reshape(-1, laq["quant_dim"])


@torch.no_grad()
def reference_outputs(w: dict, laq: dict, backbone: DINOv3ViTConfig, frames: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference outputs on (B, 2, H, W, 3) uint8 frames: indices, tokens, continuous, predicted_features."""
    dino = DINOv3ViTModel(backbone).eval()
    dino_state = {k.removeprefix("dino_tokenizer."): v for k, v in w.items() if k.startswith("dino_tokenizer.")}
    dino.load_state_dict({k.replace("layer.", "model.layer.", 1) if k.startswith("layer.") else k: v for k, v in dino_state.items()})
    b = frames.shape[0]
    h = wd = laq["image_size"] // laq["patch_size"]
    registers = backbone.num_register_tokens
    pixels = frames.permute(0, 1, 4, 2, 3).float() / 255
    feats = [
        dino(pixel_values=pixels[:, i] * 2 - 1).last_hidden_state[:, 1 + registers :].reshape(b, 1, h, wd, -1)
        for i in range(2)
    ]
    tokens = torch.cat(feats, dim=1)
    shape = (b, 2, h, wd)
    heads = laq["heads"]
    x = _transformer(w, "enc_spatial_transformer", laq["spatial_depth"], tokens.reshape(2 * b, h * wd, -1), shape, heads,
                     bias=_position_bias(w, h, wd))
    x = x.reshape(b, 2, h, wd, -1).permute(0, 2, 3, 1, 4).reshape(b * h * wd, 2, -1)
    x = _transformer(w, "enc_temporal_transformer", laq["temporal_depth"], x, shape, heads)
    x = x.reshape(b, h, wd, 2, -1).permute(0, 3, 1, 2, 4)
    first, last = x[:, 0].reshape(b, h * wd, -1), x[:, 1].reshape(b, h * wd, -1)
    delta = _vq_encode(w, laq, last, (h, wd)) - _vq_encode(w, laq, first, (h, wd))
    codebook = w["vq.codebooks"]
    indices = ((delta[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(dim=1)
    n = delta.shape[0] // b
    codes = codebook[indices].reshape(b, laq["quant_dim"], n).permute(0, 2, 1)
    actions = codes @ w["vq.project_out.weight"].T + w["vq.project_out.bias"]
    predicted = _transformer(w, "dec_spatial_transformer", laq["spatial_depth"], feats[0].reshape(b, h * wd, -1),
                             (b, 1, h, wd), heads, bias=_position_bias(w, h, wd), context=actions)
    return {
        "indices": indices.reshape(b, n),
        "tokens": actions,
        "continuous": delta.reshape(b, n, -1),
        "predicted_features": predicted.reshape(b, h, wd, -1),
    }
