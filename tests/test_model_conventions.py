"""transformers' model conventions: recorded hidden states and attentions, tuple outputs, the attention interface,
gradient checkpointing, input embeddings and initialised buffers."""

from __future__ import annotations

import contextlib
import json

import lary_hub.modeling_lapa_dinov3 as modeling
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, DINOv3ViTConfig

from lary import LapaDinov3Config, LapaDinov3Model
from lary.checkpoint import convert_checkpoint
from lary.hub import EMBEDDED_MODEL
from lary.synthetic import make_clips

# spatial and temporal depths differ, so that the encoder's records show which transformer each came from
CONFIG = dict(
    backbone_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_register_tokens": 4, "image_size": 112, "patch_size": 16},
    quant_dim=8, codebook_size=8, code_seq_len=4, spatial_depth=2, temporal_depth=1, decoder_depth=1,
    dim_head=16, heads=2,
)
TOKENS = 7 * 7  # patch grid of 112-pixel frames and 16-pixel patches
ATTENTION_LAYERS = 2 + 1 + 2  # spatial, temporal, the decoder's self- and cross-attention
TEMPORAL_LAYERS = CONFIG["temporal_depth"]


def _model(**overrides) -> LapaDinov3Model:
    torch.manual_seed(0)
    return LapaDinov3Model(LapaDinov3Config(**{**CONFIG, **overrides})).eval()


def _pixels(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def eager_model() -> LapaDinov3Model:
    model = _model()
    model.set_attn_implementation("eager")
    return model


@torch.no_grad()
def test_hidden_states_and_attentions_of_the_backbone_and_the_laq(eager_model):
    model = eager_model
    out = model(pixel_values=_pixels(3, 2), output_hidden_states=True, output_attentions=True,
                return_predicted_features=True, output_backbone_features=True)

    # the encoder: its input, 2 spatial and 1 temporal layer outputs, all in one (batch, 2, tokens, dim) layout
    assert [tuple(x.shape) for x in out.hidden_states] == [(3, 2, TOKENS, 32)] * 4
    torch.testing.assert_close(out.hidden_states[0], out.backbone_features.flatten(2, 3), rtol=0, atol=0)
    encoded = model.encode(out.backbone_features).last_hidden_state
    torch.testing.assert_close(model.temporal_encoder.norm_out(out.hidden_states[-1]), encoded, rtol=0, atol=1e-6)
    assert [tuple(x.shape) for x in out.attentions] == [(3, 2, 2, TOKENS, TOKENS)] * 2 + [(3, TOKENS, 2, 2, 2)]

    # the decoder: input (first-frame features) and one layer; self- and cross-attention (2 null keys, 4 codes)
    assert [tuple(x.shape) for x in out.decoder_hidden_states] == [(3, TOKENS, 32)] * 2
    torch.testing.assert_close(out.decoder_hidden_states[0], out.backbone_features[:, 0].flatten(1, 2), rtol=0, atol=0)
    assert [tuple(x.shape) for x in out.decoder_attentions] == [(3, 2, TOKENS, TOKENS)]
    assert [tuple(x.shape) for x in out.cross_attentions] == [(3, 2, TOKENS, 2 + 4)]

    # DINOv3: embeddings and one layer per frame, CLS + 4 registers + patches; its final norm gives the features
    assert [tuple(x.shape) for x in out.backbone_hidden_states] == [(3, 2, 1 + 4 + TOKENS, 32)] * 2
    assert [tuple(x.shape) for x in out.backbone_attentions] == [(3, 2, 2, 1 + 4 + TOKENS, 1 + 4 + TOKENS)]
    patches = model.backbone.norm(out.backbone_hidden_states[-1])[:, :, 1 + 4 :]
    torch.testing.assert_close(patches, out.backbone_features.flatten(2, 3), rtol=0, atol=1e-6)

    for weights in (*out.attentions, *out.decoder_attentions, *out.cross_attentions, *out.backbone_attentions):
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))


@torch.no_grad()
def test_clips_record_per_pair_like_pairs(eager_model):
    clip = _pixels(1, 4)
    video = eager_model(pixel_values_videos=clip, output_hidden_states=True, output_attentions=True)
    pairs = eager_model(pixel_values=torch.stack([clip[0, t : t + 2] for t in range(3)]),
                        output_hidden_states=True, output_attentions=True)
    assert len(video.hidden_states) == 4 and len(video.attentions) == 3
    for recorded, pairwise in ((video.hidden_states, pairs.hidden_states), (video.attentions, pairs.attentions)):
        for x, y in zip(recorded, pairwise):
            assert x.shape == (1, *y.shape)
            torch.testing.assert_close(x[0], y, rtol=0, atol=1e-5)
    # the backbone runs once per frame: (batch, frames, ...)
    assert video.backbone_hidden_states[0].shape == (1, 4, 1 + 4 + TOKENS, 32)
    torch.testing.assert_close(video.backbone_hidden_states[-1][0, 1:3], pairs.backbone_hidden_states[-1][1])


@torch.no_grad()
def test_nothing_is_recorded_unless_asked_and_the_config_asks_for_the_backbone_too():
    model = _model()
    pixels = _pixels(1, 2)
    out = model(pixel_values=pixels)
    assert out.hidden_states is None and out.attentions is None and out.backbone_hidden_states is None
    model.config.output_hidden_states = True
    out = model(pixel_values=pixels)
    assert len(out.hidden_states) == 4 and len(out.backbone_hidden_states) == 2
    assert out.decoder_hidden_states is None  # the decoder did not run
    assert model(pixel_values=pixels, output_hidden_states=False).hidden_states is None


@torch.no_grad()
def test_return_dict_false_gives_the_fields_that_are_set_as_a_tuple(eager_model):
    pixels = _pixels(2, 2)
    out = eager_model(pixel_values=pixels, output_hidden_states=True)
    as_tuple = eager_model(pixel_values=pixels, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(out.to_tuple()) == 6
    assert torch.equal(as_tuple[0], out.action_indices)  # loss is None in eval mode, so the codes come first
    assert len(as_tuple[-1]) == len(out.backbone_hidden_states)
    for field, value in zip(out.keys(), as_tuple):
        expected = out[field]
        pairs = zip(expected, value) if isinstance(expected, tuple) else [(expected, value)]
        assert all(torch.equal(x, y) for x, y in pairs), field


def test_set_attn_implementation_switches_every_attention_layer(tmp_path, monkeypatch):
    _model().save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path)
    assert model.config._attn_implementation == "sdpa"
    calls = []
    eager = modeling.eager_attention_forward
    monkeypatch.setattr(modeling, "eager_attention_forward", lambda *a, **kw: calls.append(1) or eager(*a, **kw))
    pixels = _pixels(1, 2)
    with torch.no_grad():
        model(pixel_values=pixels, return_predicted_features=True)
        assert calls == []
        # in bfloat16, SDPA everywhere but over the pair's 2 frames (`FEW_KEYS`)
        model.to(torch.bfloat16)(pixel_values=pixels.to(torch.bfloat16), return_predicted_features=True)
        assert len(calls) == TEMPORAL_LAYERS
        model.float()
        calls.clear()
        model.set_attn_implementation("eager")
        assert {m.config._attn_implementation for m in model.modules() if hasattr(m, "q_proj")} == {"eager"}
        out = model(pixel_values=pixels, return_predicted_features=True, output_attentions=True)
    assert len(calls) == ATTENTION_LAYERS
    assert len(out.backbone_attentions) == 1  # DINOv3 switched too: sdpa records no weights
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        out = model(pixel_values=pixels, output_attentions=True)
    assert len(calls) == ATTENTION_LAYERS and out.attentions == () and out.backbone_attentions == ()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_eager_and_sdpa_give_the_reference_codes(golden_dir, dtype):
    laq = json.loads((golden_dir / "laq_config.json").read_text())
    backbone = json.loads((golden_dir / "backbone_config.json").read_text())
    backbone.pop("transformers_version")
    model = convert_checkpoint(golden_dir / "laq_dinov3.pt", laq, DINOv3ViTConfig(**backbone)).to(dtype)
    cases = load_file(golden_dir / "cases.safetensors")
    pixels = ((cases["frames"].permute(0, 1, 4, 2, 3).float() / 255) * 2 - 1).to(dtype)
    sdpa = model(pixel_values=pixels, return_predicted_features=True)
    model.set_attn_implementation("eager")
    eager = model(pixel_values=pixels, return_predicted_features=True)
    assert cases["indices"].unique().numel() == 8  # every codebook entry occurs
    if dtype == torch.float32:
        assert torch.equal(sdpa.action_indices, cases["indices"]) and torch.equal(eager.action_indices, cases["indices"])
    else:
        # bf16 matmuls round differently from one CPU to another (oneDNN's AMX and AVX512-BF16 kernels where the CPU
        # has them), so a near-tie can flip: on an AMX machine eager flips 1 of the 48 codes, SDPA none.
        for backend in (sdpa, eager):
            assert (backend.action_indices == cases["indices"]).float().mean() >= 0.95
    atol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(eager.latent_actions, sdpa.latent_actions, rtol=0, atol=atol)
    torch.testing.assert_close(eager.predicted_features, sdpa.predicted_features, rtol=0, atol=20 * atol)


@torch.no_grad()
def test_eager_and_sdpa_agree_on_the_trained_embedded_model():
    clips = make_clips(8, seed=3)
    pixels = torch.from_numpy(np.stack([clip.frames for clip in clips])).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    codes = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModel.from_pretrained(EMBEDDED_MODEL, dtype=dtype)
        for implementation in ("sdpa", "eager"):
            model.set_attn_implementation(implementation)
            codes[dtype, implementation] = model(pixel_values_videos=pixels.to(dtype)).action_indices
    assert codes[torch.float32, "sdpa"].unique().numel() >= 6
    assert torch.equal(codes[torch.float32, "eager"], codes[torch.float32, "sdpa"])
    # A code is the nearest entry to the difference of two frames' encodings; for consecutive frames bf16 keeps few
    # digits of it, so codes flip between any two bf16 computations: on these clips the backends agree on 89% of the
    # codes, and each agrees with float32 on 91%. A backend computing something else would agree on far fewer.
    agreement = (codes[torch.bfloat16, "eager"] == codes[torch.bfloat16, "sdpa"]).float().mean()
    assert agreement >= 0.8


@torch.no_grad()
def test_every_call_records_the_same_whatever_the_batch():
    """What transformers' common tests `test_batching_equivalence` and `test_model_outputs_equivalence` check: a fresh
    model's first call records what later calls do, and a batch's rows what the rows alone give. (DINOv3's encoder
    used to hook its layers at the first recording call and this model's hooks again at once, so from the second call
    on every DINOv3 layer was recorded twice: 3 then 5 backbone hidden states here.)"""
    config = LapaDinov3Config(**CONFIG)
    config.output_hidden_states = config.output_attentions = True
    model = LapaDinov3Model(config).eval()
    model.set_attn_implementation("eager")
    pixels = _pixels(3, 2)
    batch, row, again = (model(pixel_values=x, return_predicted_features=True) for x in (pixels, pixels[:1], pixels))
    assert len(batch.backbone_hidden_states) == CONFIG["backbone_config"]["num_hidden_layers"] + 1
    for name in batch:  # the fields that are set
        batched, single, repeated = ((out[name],) if torch.is_tensor(out[name]) else out[name] for out in (batch, row, again))
        assert len(batched) == len(single) == len(repeated), name
        for first, alone, later in zip(batched, single, repeated):
            torch.testing.assert_close(later, first, rtol=0, atol=0, msg=name)
            if first.ndim:  # not the batch's perplexity
                torch.testing.assert_close(first[:1], alone, rtol=1e-5, atol=1e-5, msg=name)


def test_gradients_reach_every_layer_and_attention_weight():
    """What transformers' common `test_retain_grad_hidden_states_attentions` checks, which cannot run as written on a
    frame-pair model: its `outputs[0]` is our integer `action_indices`, `hidden_states[0]` is the frozen backbone's
    output (no gradient, by design), and the records are reshaped views of the layers' tensors (the `(batch, 2, ...)`
    layouts), which no output depends on. The layers' own outputs and attention weights, hooked, get the gradients
    of the continuous latent actions and of the predicted features."""
    model = _model()
    model.set_attn_implementation("eager")
    kept: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output):
            tensor = output[1] if isinstance(output, tuple) else output  # an attention's weights, a block's output
            tensor.retain_grad()
            kept[name] = tensor
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (modeling.LapaDinov3Block, modeling.LapaDinov3Attention)):
            module.register_forward_hook(keep(name))
    out = model(pixel_values=_pixels(2, 2), output_hidden_states=True, return_predicted_features=True)
    assert not out.hidden_states[0].requires_grad  # the frozen backbone's features
    (out.continuous_latent_actions.sum() + out.predicted_features.sum()).backward()
    assert len(kept) == 2 * (CONFIG["spatial_depth"] + CONFIG["temporal_depth"]) + 3 * CONFIG["decoder_depth"]
    for name, tensor in kept.items():
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name


def _loss_and_gradients(model: LapaDinov3Model, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # NSVQ's noise
    loss = model(pixel_values=pixels).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(use_reentrant):
    model = _model().train()
    pixels = _pixels(2, 2)
    loss, gradients = _loss_and_gradients(model, pixels)
    runs = []
    model.decoder.layers[0].self_attention.register_forward_hook(lambda *_: runs.append(1))

    # transformers 5.5 and older (LeRobot's pin) have only the older names
    enable = getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)
    enable({"use_reentrant": use_reentrant})
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    checkpointed_loss, checkpointed = _loss_and_gradients(model, pixels)
    assert len(runs) == 2  # the decoder layer ran again in the backward pass
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=0)
    assert checkpointed.keys() == gradients.keys()
    assert not any(name.startswith("backbone.") for name in gradients)
    assert {name.split(".")[0] for name in gradients} == {"position_bias", "spatial_encoder", "temporal_encoder",
                                                          "quantizer", "decoder"}
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_the_position_bias_is_a_mask_that_fused_gpu_attention_takes():
    """CUDA's fused SDPA kernels refuse a mask whose last dimension is strided and fall back to the math path."""
    model = _model()
    h, w = model.config.patch_grid
    bias = model.position_bias(h, w)
    assert bias.shape == (model.config.heads, h * w, h * w) and bias.is_contiguous()


def test_gradient_checkpointing_enable_is_accepted():
    model = _model()
    renamed = hasattr(model, "activation_checkpointing_enable")  # transformers 5.5 and older: not yet renamed
    with pytest.warns(FutureWarning) if renamed else contextlib.nullcontext():
        model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.modules() if isinstance(layer, modeling.LapaDinov3Block))


def test_input_embeddings_are_the_backbone_patch_embeddings():
    model = _model()
    assert model.get_input_embeddings() is model.backbone.embeddings.patch_embeddings


def test_init_weights_sets_every_buffer():
    reference = dict(_model().named_buffers())
    with torch.device("meta"):
        model = LapaDinov3Model(LapaDinov3Config(**CONFIG))
    model.to_empty(device="cpu")
    for buffer in model.buffers():
        buffer.fill_(float("nan"))
    model.init_weights()
    buffers = dict(model.named_buffers())
    assert buffers.keys() == reference.keys() and "quantizer.code_usage" in buffers
    for name, buffer in buffers.items():
        torch.testing.assert_close(buffer, reference[name], rtol=0, atol=0, msg=name)


def test_a_loaded_model_has_zero_code_usage(tmp_path):
    model = _model().train()
    model(pixel_values=_pixels(2, 2))
    assert model.quantizer.code_usage.sum() == 2 * 4
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.quantizer.code_usage, torch.zeros(8))
    for name, buffer in _model().named_buffers():
        if name != "quantizer.code_usage":
            torch.testing.assert_close(loaded.get_buffer(name), buffer, rtol=0, atol=0, msg=name)
