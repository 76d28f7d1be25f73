"""LAPA-DINOv3: latent actions between two video frames, from a frozen DINOv3 ViT and a LAPA quantizer.

A frozen DINOv3 encodes both frames into patch grids. A spatial transformer (per frame, with a continuous
relative position bias) and a temporal transformer (per patch, across the two frames) contextualise them; the
NSVQ quantizer maps the difference of the two frames' downsampled codes to the nearest codebook entries, the
latent actions; a cross-attention decoder predicts the second frame's DINOv3 features from the first frame's
features and the latent actions. Numerically identical to LARYBench's `LatentActionQuantizationDinov3Feature`.
"""

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithCrossAttentions,
    BaseModelOutputWithPooling,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_lapa_dinov3 import DOWNSAMPLE_STACKS, DINOv3ViTConfig, LapaDinov3Config

# The pipeline is not used here: `config.custom_pipelines` names it, and transformers ships a model's relative imports
# with it (copied by `save_pretrained`, fetched by remote-code loading), so a saved model keeps its pipeline's code.
from .processing_lapa_dinov3 import (  # noqa: F401
    LapaDinov3LatentActionPipeline,
    LapaDinov3Processor,
    normalize_pixels,
)

# The Hub files run on transformers 4.51 to 5.x (tests/test_transformers_versions.py): what an older one lacks is
# detected here and made up for by the smallest stand-in.
try:
    from transformers import initialization as init  # transformers 5: skips the weights a checkpoint loaded
except ImportError:  # transformers 4 calls `_init_weights` only on modules that were not loaded
    from torch.nn import init
try:
    from transformers.utils import TransformersKwargs
except ImportError:  # transformers < 4.54

    class TransformersKwargs(TypedDict, total=False):
        output_attentions: bool
        output_hidden_states: bool


try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # transformers < 4.52

    class GradientCheckpointingLayer(nn.Module):
        """A layer that `gradient_checkpointing_enable()` checkpoints: its keyword arguments are bound, its positional
        ones (the tensors that carry gradients) go through the checkpoint."""

        gradient_checkpointing = False

        def __call__(self, *args, **kwargs):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                return self._gradient_checkpointing_func(functools.partial(super().__call__, **kwargs), *args)
            return super().__call__(*args, **kwargs)


try:
    from transformers.utils.output_capturing import OutputRecorder, capture_outputs, maybe_install_capturing_hooks
except ImportError:  # transformers 4: the records of `_can_record_outputs` kept by hooks of the call that asks

    @dataclass
    class OutputRecorder:
        """Record the outputs of `target_class` layers (item `index` of a tuple), of those named `layer_name` only."""

        target_class: type[nn.Module]
        index: int = 0
        layer_name: str | None = None

    def maybe_install_capturing_hooks(model: nn.Module) -> None:
        """Nothing to install ahead: `capture_outputs` hooks the layers for each call that records."""

    def capture_outputs(tie_last_hidden_states: bool = True):
        """Set the output's `hidden_states` (the first layer's input, then each layer's output) and attentions from
        the layers `_can_record_outputs` names, when `output_hidden_states` / `output_attentions` (else the config)
        asks. The last hidden state is recorded as its layer made it (`tie_last_hidden_states=False`)."""

        def decorate(forward: Callable) -> Callable:
            @functools.wraps(forward)
            def recording(self, *args, **kwargs):
                records, handles = {}, []
                for key, recorder in self._can_record_outputs.items():
                    flag = "output_hidden_states" if key == "hidden_states" else "output_attentions"
                    if not kwargs.get(flag, getattr(self.config, flag, False)):
                        continue
                    if not isinstance(recorder, OutputRecorder):
                        recorder = OutputRecorder(recorder, index=0 if key == "hidden_states" else 1)
                    records[key] = []
                    hook = functools.partial(_record, records[key], recorder.index, key == "hidden_states")
                    handles += [
                        module.register_forward_hook(hook)
                        for name, module in self.named_modules()
                        if isinstance(module, recorder.target_class)
                        and (recorder.layer_name is None or f".{recorder.layer_name}." in f".{name}.")
                    ]
                try:
                    output = forward(self, *args, **kwargs)
                finally:
                    for handle in handles:
                        handle.remove()
                for key, values in records.items():
                    output[key] = tuple(values)
                return output

            return recording

        return decorate

    def _record(values: list, index: int, with_input: bool, module: nn.Module, args: tuple, output) -> None:
        if with_input and not values:
            values.append(args[0])
        value = output[index] if isinstance(output, tuple) else output
        if value is not None:  # SDPA returns no attention weights
            values.append(value)


# How the model runs on a machine, for every way in: `latent_actions_of_video` below, `handler.py` (which reaches these
# through the model's module) and `lary` (`lary.runtime` imports them; the Hub files cannot import `lary`).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" (microseconds), or "max PERIOD"
MAX_DECODING_CORES = 4  # decoding keeps pace with the model on this many cores; the rest compute


@contextmanager
def exact_float32(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """float32 on a GPU computed in float32: PyTorch lets cuDNN's convolutions (the patch embedding, the position
    generators) use TF32 by default, which the CPU's numbers do not. Other dtypes and devices are left alone."""
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's `--cpus`),
    which torch's default thread count (the machine's physical cores) does not see."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def decoding_cores(processes: int = 1) -> int:
    """The cores that decoding keeps beside a model computing on the CPU (`lary extract`'s workers, a video's reader,
    a DataLoader's workers, the endpoint's decoder): half of this process's share, at most `MAX_DECODING_CORES`."""
    return min(MAX_DECODING_CORES, available_cores() // processes // 2)


def compute_threads(workers: int | None = None, processes: int = 1) -> int:
    """The thread policy: torch threads for a process that computes while `workers` cores decode for it (default:
    `decoding_cores`), its share of the cores (`processes` share the machine) less the workers'. More busy threads
    than cores makes torch's threads wait on each other: torch's default, every core, computed 2-4x slower beside a
    video's decoder on a small machine."""
    if workers is None:
        workers = decoding_cores(processes)
    return max(1, available_cores() // processes - workers)


def attention_function(implementation: str | None) -> Callable:
    """The attention of `ALL_ATTENTION_FUNCTIONS` that a config names; ours (eager) for "eager" or none."""
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    if implementation in (None, "eager"):  # transformers < 4.56
        return eager_attention_forward
    # not causal: transformers 4.51's SDPA makes attention without a mask causal, whatever the module's `is_causal`
    return functools.partial(ALL_ATTENTION_FUNCTIONS[implementation], is_causal=False)


VideoShape = tuple[int, int, int, int]  # (batch, frames, height, width) of a token grid
# In bfloat16, SDPA's kernels are slower than the plain product over this few keys without a mask (the temporal
# attention over a pair's 2 frames): 13.0 ms a layer against 5.6 for SDPA's math path (the same product) on an H200
# (256 pairs), 4.9x slower on the CPU. In float32 the CPU's SDPA is the faster (3x), so float32 keeps it.
FEW_KEYS = 2


@dataclass
class LapaDinov3Output(ModelOutput):
    r"""
    Latent actions of frame pairs. For clips (`pixel_values_videos`), every tensor but `loss`, `perplexity` and the
    backbone's has an extra pair axis after the batch axis: `(batch, pairs, ...)`.

    loss (`torch.FloatTensor`, *optional*):
        Feature MSE between the predicted and the true DINOv3 features of the second frame (training).
    action_indices (`torch.LongTensor` of shape `(batch, code_seq_len)`):
        Codebook index of each latent action token.
    latent_actions (`torch.FloatTensor` of shape `(batch, code_seq_len, hidden_size)`):
        The action tokens fed to the decoder: the projected codebook vectors (noise-substituted in training).
    continuous_latent_actions (`torch.FloatTensor` of shape `(batch, code_seq_len, quant_dim)`):
        The difference of the two frames' codes before quantization.
    predicted_features (`torch.FloatTensor` of shape `(batch, height, width, hidden_size)`, *optional*):
        The decoder's prediction of the second frame's DINOv3 patch features.
    backbone_features (`torch.FloatTensor` of shape `(batch, 2, height, width, hidden_size)`, *optional*):
        DINOv3 patch features of both frames.
    perplexity (`torch.FloatTensor`, *optional*):
        Perplexity of the codebook usage over the batch.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, with `output_hidden_states=True`):
        The latent action encoder's tokens, each `(batch, 2, height * width, hidden_size)`: its input, then the output
        of each spatial layer, then of each temporal layer (before each transformer's final norm).
    attentions (`tuple(torch.FloatTensor)`, *optional*, with `output_attentions=True` and eager attention):
        The encoder's attention weights: per spatial layer `(batch, 2, heads, height * width, height * width)`, then
        per temporal layer `(batch, height * width, heads, 2, 2)`.
    decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        When the decoder runs: its input (first-frame features) and each layer's output, `(batch, height * width,
        hidden_size)` each.
    decoder_attentions (`tuple(torch.FloatTensor)`, *optional*):
        The decoder's self-attention weights, `(batch, heads, height * width, height * width)` per layer.
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
        The decoder's attention to the action tokens, `(batch, heads, height * width, num_null_kv + code_seq_len)`
        per layer (the learned null keys first).
    backbone_hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        DINOv3's embeddings and each layer's output, `(batch, frames, 1 + num_register_tokens + height * width,
        backbone hidden_size)` (frames: 2 for pairs, the clip length for clips). Absent for `backbone_features` inputs.
    backbone_attentions (`tuple(torch.FloatTensor)`, *optional*):
        DINOv3's attention weights, `(batch, frames, backbone heads, tokens, tokens)` per layer.

    The encoder's records (and, for clips, all records) are reshaped views of what the layers computed, so autograd
    does not reach them (`retain_grad` gives no gradient); hook the layers for gradients.
    """

    loss: torch.FloatTensor | None = None
    action_indices: torch.LongTensor | None = None
    latent_actions: torch.FloatTensor | None = None
    continuous_latent_actions: torch.FloatTensor | None = None
    predicted_features: torch.FloatTensor | None = None
    backbone_features: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    backbone_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    backbone_attentions: tuple[torch.FloatTensor, ...] | None = None


class LapaDinov3PositionBias(nn.Module):
    """Continuous relative position bias (Swin v2): an MLP over log-spaced 2D offsets, one bias per head."""

    def __init__(self, config: LapaDinov3Config):
        super().__init__()
        dim = config.hidden_size
        widths = [2] + [dim] * config.position_bias_depth
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.layers.append(nn.Linear(dim, config.heads))

    def forward(self, height: int, width: int) -> torch.Tensor:
        """Bias of shape (heads, height * width, height * width)."""
        device, dtype = self.layers[0].weight.device, self.layers[0].weight.dtype
        # The MLP only sees the (2h-1)(2w-1) distinct offsets; gathering afterwards equals running it on all pairs.
        dy = torch.arange(-(height - 1), height, device=device)
        dx = torch.arange(-(width - 1), width, device=device)
        offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2).float()
        x = (torch.sign(offsets) * torch.log(offsets.abs() + 1)).to(dtype)
        for layer in self.layers[:-1]:
            x = F.leaky_relu(layer(x), 0.1)
        table = self.layers[-1](x)  # (offsets, heads)

        rows = torch.arange(height, device=device).repeat_interleave(width)
        cols = torch.arange(width, device=device).repeat(height)
        index = (rows[:, None] - rows[None, :] + height - 1) * (2 * width - 1) + (cols[:, None] - cols[None, :] + width - 1)
        # contiguous: a GPU's fused SDPA kernels only take a mask whose last dimension has stride 1; the permuted
        # view sent the spatial attention to the math path (10.5 ms a layer for 512 x 196 tokens on an H200)
        return table[index].permute(2, 0, 1).contiguous()


class LapaDinov3PositionGenerator(nn.Module):
    """Causal depthwise 3D convolution over (frames, height, width), added to the tokens (PEG)."""

    def __init__(self, config: LapaDinov3Config):
        super().__init__()
        self.conv = nn.Conv3d(config.hidden_size, config.hidden_size, 3, groups=config.hidden_size)

    def forward(self, x: torch.Tensor, video_shape: VideoShape) -> torch.Tensor:
        # `x` (sequences, tokens, dim) is read as a (b, t, h, w, dim) grid in row-major order, whatever its
        # sequence layout: for the temporal transformer that is a fixed reordering the weights were trained with.
        grid = x.reshape(*video_shape, -1).permute(0, 4, 1, 2, 3)
        grid = self.conv(F.pad(grid, (1, 1, 1, 1, 2, 0)))  # causal in time: two frames of padding before
        return grid.permute(0, 2, 3, 4, 1).reshape(x.shape)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention with an additive float mask (the LAQ's position bias), in the input dtype as the reference."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = attn_weights.softmax(dim=-1)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class LapaDinov3Attention(nn.Module):
    """Cosine-similarity attention as the reference's: l2-normalised q/k with learned per-dim scales, logits scaled by
    `attention_scale`, the position bias added as the mask; cross-attention puts learned null keys/values first.
    Runs on any `ALL_ATTENTION_FUNCTIONS` backend that takes an additive float mask (eager, SDPA)."""

    def __init__(self, config: LapaDinov3Config, is_cross_attention: bool = False):
        super().__init__()
        dim, inner = config.hidden_size, config.dim_head * config.heads
        self.config = config
        self.heads = config.heads
        self.scaling = config.attention_scale  # the logit scale of the cosine similarities, not 1/sqrt(dim_head)
        self.is_causal = False
        self.is_cross_attention = is_cross_attention
        self.norm = nn.LayerNorm(dim, bias=False)
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.o_proj = nn.Linear(inner, dim, bias=False)
        self.q_scale = nn.Parameter(torch.ones(config.dim_head))
        self.k_scale = nn.Parameter(torch.ones(config.dim_head))
        if is_cross_attention:
            self.context_norm = nn.LayerNorm(dim, bias=False)
            self.null_key = nn.Parameter(torch.randn(config.heads, config.num_null_kv, config.dim_head))
            self.null_value = nn.Parameter(torch.randn(config.heads, config.num_null_kv, config.dim_head))

    def forward(
        self,
        hidden_states: torch.Tensor,
        context: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Self-attention takes keys and values from the un-normalised input, as the reference does.
        kv_input = self.context_norm(context) if self.is_cross_attention else hidden_states
        query = self.q_proj(self.norm(hidden_states))
        key, value = self.kv_proj(kv_input).chunk(2, dim=-1)
        query, key, value = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (query, key, value))
        if self.is_cross_attention:
            batch = hidden_states.shape[0]
            key = torch.cat((self.null_key.expand(batch, -1, -1, -1), key), dim=-2)
            value = torch.cat((self.null_value.expand(batch, -1, -1, -1), value), dim=-2)
        query = F.normalize(query, dim=-1) * self.q_scale
        key = F.normalize(key, dim=-1) * self.k_scale
        if attention_mask is not None:
            attention_mask = attention_mask.to(query.dtype)
        few_keys = attention_mask is None and key.shape[-2] <= FEW_KEYS and query.dtype == torch.bfloat16
        if few_keys and self.config._attn_implementation == "sdpa":
            attn_output = eager_attention_forward(self, query, key, value, None, self.scaling)[0]
            return self.o_proj(attn_output.flatten(2)), None  # no weights, as with SDPA

        attention_interface = attention_function(self.config._attn_implementation)
        attn_output, attn_weights = attention_interface(
            self, query, key, value, attention_mask, scaling=self.scaling, **kwargs
        )
        return self.o_proj(attn_output.flatten(2)), attn_weights


class LapaDinov3FeedForward(nn.Module):
    """Pre-norm GEGLU feed-forward."""

    def __init__(self, config: LapaDinov3Config):
        super().__init__()
        dim = config.hidden_size
        inner = int(config.ff_mult * (2 / 3) * dim)
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * inner, bias=False)
        self.proj_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(F.gelu(gate) * x)


class LapaDinov3Block(GradientCheckpointingLayer):
    """Position generator, self-attention, optional cross-attention and feed-forward, each residual."""

    def __init__(self, config: LapaDinov3Config, has_cross_attention: bool = False):
        super().__init__()
        self.position_generator = LapaDinov3PositionGenerator(config)
        self.self_attention = LapaDinov3Attention(config)
        self.cross_attention = LapaDinov3Attention(config, is_cross_attention=True) if has_cross_attention else None
        self.feed_forward = LapaDinov3FeedForward(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        *,
        video_shape: VideoShape,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        # The tensors that carry gradients (position bias, action tokens) are positional: reentrant checkpointing
        # differentiates only through those, and the decoder's `hidden_states` are frozen features.
        x = self.position_generator(hidden_states, video_shape) + hidden_states
        x = self.self_attention(x, attention_mask=attn_bias, **kwargs)[0] + x
        if self.cross_attention is not None:
            x = self.cross_attention(x, context=context, **kwargs)[0] + x
        return self.feed_forward(x) + x


class LapaDinov3Transformer(nn.Module):
    def __init__(self, config: LapaDinov3Config, depth: int, has_cross_attention: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(LapaDinov3Block(config, has_cross_attention) for _ in range(depth))
        self.norm_out = nn.LayerNorm(config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        video_shape: VideoShape,
        attn_bias: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_bias, context, video_shape=video_shape, **kwargs)
        return self.norm_out(x)


class LapaDinov3Quantizer(nn.Module):
    """NSVQ: nearest codebook entry of the frame-to-frame code difference; noise substitution in training."""

    def __init__(self, config: LapaDinov3Config):
        super().__init__()
        dim, quant_dim = config.hidden_size, config.quant_dim
        self.quant_dim = quant_dim
        self.discarding_threshold = config.discarding_threshold
        self.codebook = nn.Parameter(torch.randn(config.codebook_size, quant_dim))
        self.project_in = nn.Linear(dim, quant_dim)
        self.project_out = nn.Linear(quant_dim, dim)
        layers: list[nn.Module] = []
        for kernel, stride, padding in DOWNSAMPLE_STACKS[config.code_seq_len]:
            layers += [nn.Conv2d(quant_dim, quant_dim, kernel, stride=stride, padding=padding), nn.ReLU()]
        self.downsample = nn.Sequential(*layers[:-1])
        self.register_buffer("code_usage", torch.zeros(config.codebook_size), persistent=False)

    def encode(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(batch, h*w, dim) patch tokens -> (batch, code_seq_len, quant_dim) codes."""
        x = self.project_in(features).transpose(1, 2).reshape(features.shape[0], self.quant_dim, *grid)
        return self.downsample(x).flatten(2).transpose(1, 2)

    # Left to eager mode by `torch.compile`: inductor in torch 2.6 and 2.7 turns this argmin over a matmul with a small
    # quant_dim (4: the embedded model's) into code 0 for every row; eager is exact everywhere, and this is tiny.
    @torch.compiler.disable
    def nearest(self, vectors: torch.Tensor) -> torch.LongTensor:
        """Index of the nearest codebook entry for each row of (rows, quant_dim)."""
        codebook = self.codebook
        distances = (
            vectors.square().sum(dim=1, keepdim=True)
            - 2 * vectors @ codebook.t()
            + codebook.t().square().sum(dim=0, keepdim=True)
        )
        return distances.argmin(dim=1)

    def project(self, codes: torch.Tensor) -> torch.Tensor:
        """(batch, n, quant_dim) code vectors -> (batch, n, dim) action tokens.

        The reference reads the (batch * n, quant_dim) rows as (batch, quant_dim, n) before transposing: a fixed
        reordering of the elements across tokens that the released weights were trained with.
        """
        batch, n, _ = codes.shape
        return self.project_out(codes.reshape(batch, self.quant_dim, n).transpose(1, 2))

    def forward(
        self, first: torch.Tensor, second: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.LongTensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns action indices (b, n), action tokens (b, n, dim), continuous deltas (b, n, q), perplexity."""
        delta = self.encode(second, grid) - self.encode(first, grid)
        batch, n, _ = delta.shape
        rows = delta.reshape(-1, self.quant_dim)
        indices = self.nearest(rows)
        hard = self.codebook[indices]
        if self.training:
            noise = torch.randn_like(rows)
            residual_norm = (rows - hard).square().sum(dim=1, keepdim=True).sqrt()
            noise_norm = noise.square().sum(dim=1, keepdim=True).sqrt()
            quantized = rows + (residual_norm / noise_norm + 1e-12) * noise
            with torch.no_grad():
                self.code_usage += torch.bincount(indices, minlength=self.code_usage.numel()).to(self.code_usage)
        else:
            quantized = hard
        usage = torch.bincount(indices, minlength=self.codebook.shape[0]).float() / indices.numel()
        perplexity = torch.exp(-(usage * torch.log(usage + 1e-12)).sum())
        tokens = self.project(quantized.reshape(batch, n, self.quant_dim))
        return indices.reshape(batch, n), tokens, delta, perplexity

    @torch.no_grad()
    def replace_unused_codes(self, num_batches: int, generator: torch.Generator | None = None) -> int:
        """Replace entries used less than `discarding_threshold * num_batches` times since the last call by
        jittered copies of used ones; reset the counts. Returns how many were replaced."""
        rate = self.code_usage / num_batches
        unused = torch.nonzero(rate < self.discarding_threshold).flatten()
        used = torch.nonzero(rate >= self.discarding_threshold).flatten()
        codebook = self.codebook.data
        jitter = lambda n: 1e-12 * torch.randn(n, self.quant_dim, generator=generator).to(codebook)  # noqa: E731
        if used.numel() == 0:
            codebook += jitter(codebook.shape[0])
        elif unused.numel() > 0:
            order = torch.randperm(max(used.numel(), unused.numel()), generator=generator) % used.numel()
            donors = codebook[used[order.to(used.device)][: unused.numel()]]
            codebook[unused] = donors + jitter(unused.numel())
        self.code_usage.zero_()
        return int(unused.numel())


# DINOv3 ViT where transformers has none (< 4.56), with the weight names of transformers' `DINOv3ViTModel` (4.x layout;
# transformers 5 renames `layer.` to `model.layer.` when it loads and back when it saves). The backbone is frozen and
# in eval mode, so what only training uses (RoPE coordinate jitter, drop path, masked patches) is left out.
def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class Dinov3Embeddings(nn.Module):
    """The class token, the register tokens, then the patch embeddings (`mask_token` kept for the weights' names)."""

    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))
        self.patch_embeddings = nn.Conv2d(
            config.num_channels, config.hidden_size, _pair(config.patch_size), stride=_pair(config.patch_size)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
        prefix = (self.cls_token, self.register_tokens)
        return torch.cat([token.expand(patches.shape[0], -1, -1) for token in prefix] + [patches], dim=1)


class Dinov3Rope(nn.Module):
    """2D rotary position embedding: (cos, sin) of each patch centre's (y, x) in [-1, 1], a quarter of a head's
    width of frequencies per axis, the whole repeated twice."""

    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        self.patch_size = _pair(config.patch_size)
        head_dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1 / config.rope_theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = [size // patch for size, patch in zip(pixel_values.shape[-2:], self.patch_size)]
        axes = [torch.arange(0.5, n, dtype=torch.float32, device=pixel_values.device) / n for n in grid]
        centres = 2.0 * torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 1) - 1.0  # (h*w, 2)
        angles = (2 * math.pi * centres[:, :, None] * self.inv_freq).flatten(1).tile(2)
        return angles.cos().to(pixel_values.dtype), angles.sin().to(pixel_values.dtype)


def rotate_patches(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the patch tokens (the last `len(cos)`); the class and register tokens before them stay as they are."""
    prefix, patches = x.split((x.shape[-2] - cos.shape[-2], cos.shape[-2]), dim=-2)
    first, second = patches.chunk(2, dim=-1)
    return torch.cat((prefix, patches * cos + torch.cat((-second, first), dim=-1) * sin), dim=-2)


class Dinov3Attention(nn.Module):
    """Multi-head self-attention with RoPE on the patches, on the config's attention implementation."""

    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        dim = config.hidden_size
        self.config = config
        self.heads = config.num_attention_heads
        self.scaling = (dim // self.heads) ** -0.5
        self.is_causal = False
        self.q_proj = nn.Linear(dim, dim, bias=config.query_bias)
        self.k_proj = nn.Linear(dim, dim, bias=config.key_bias)
        self.v_proj = nn.Linear(dim, dim, bias=config.value_bias)
        self.o_proj = nn.Linear(dim, dim, bias=config.proj_bias)

    def forward(
        self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        query, key, value = (
            proj(hidden_states).unflatten(-1, (self.heads, -1)).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        query, key = (rotate_patches(x, *position_embeddings) for x in (query, key))
        attention = attention_function(self.config._attn_implementation)
        attn_output, attn_weights = attention(self, query, key, value, None, scaling=self.scaling, **kwargs)
        return self.o_proj(attn_output.flatten(2)), attn_weights


class Dinov3LayerScale(nn.Module):
    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class Dinov3Mlp(nn.Module):
    """`up_proj`, the activation, `down_proj`; gated by `gate_proj` when `use_gated_mlp`."""

    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        dim, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(dim, inner, bias=bias) if config.use_gated_mlp else None
        self.up_proj = nn.Linear(dim, inner, bias=bias)
        self.down_proj = nn.Linear(inner, dim, bias=bias)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(self.act(self.up_proj(x)))
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Dinov3Layer(GradientCheckpointingLayer):
    """Pre-norm attention and feed-forward, each scaled per channel and residual."""

    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Dinov3Attention(config)
        self.layer_scale1 = Dinov3LayerScale(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Dinov3Mlp(config)
        self.layer_scale2 = Dinov3LayerScale(config)

    def forward(
        self, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, attn_weights = self.attention(self.norm1(x), position_embeddings, **kwargs)
        x = self.layer_scale1(attended) + x
        return self.layer_scale2(self.mlp(self.norm2(x))) + x, attn_weights


class Dinov3ViT(nn.Module):
    """The DINOv3 ViT of transformers' `DINOv3ViTModel` (eval mode), for transformers without it.

    `hidden_states` are the embeddings then each layer's output (before the final norm), `attentions` each layer's
    weights (eager attention), as transformers records them.
    """

    def __init__(self, config: DINOv3ViTConfig):
        super().__init__()
        self.config = config
        self.embeddings = Dinov3Embeddings(config)
        self.rope_embeddings = Dinov3Rope(config)
        self.layer = nn.ModuleList(Dinov3Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.weight.dtype)
        x = self.embeddings(pixel_values)
        position_embeddings = self.rope_embeddings(pixel_values)
        hidden_states, attentions = [x], []
        for layer in self.layer:
            x, attn_weights = layer(x, position_embeddings, **kwargs)
            hidden_states.append(x)
            attentions += [] if attn_weights is None else [attn_weights]
        output = self.norm(x)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        return BaseModelOutputWithPooling(
            last_hidden_state=output,
            pooler_output=output[:, 0],
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


try:
    from transformers import DINOv3ViTModel
except ImportError:  # transformers < 4.56
    DINOv3ViTModel = Dinov3ViT


def _unflatten(value: torch.Tensor | tuple | None, shape: tuple[int, ...]):
    """Split the leading axis of a tensor, or of each tensor of a tuple, into `shape`."""
    if isinstance(value, tuple):
        return tuple(_unflatten(item, shape) for item in value)
    return None if value is None else value.unflatten(0, shape)


class LapaDinov3PreTrainedModel(PreTrainedModel):
    config_class = LapaDinov3Config
    base_model_prefix = "lapa_dinov3"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    supports_gradient_checkpointing = True
    _no_split_modules = ["DINOv3ViTEmbeddings", "DINOv3ViTLayer", "Dinov3Embeddings", "Dinov3Layer", "LapaDinov3Block"]
    _supports_sdpa = True
    _can_record_outputs = {
        "hidden_states": LapaDinov3Block,
        "attentions": OutputRecorder(LapaDinov3Attention, index=1, layer_name="self_attention"),
        "cross_attentions": OutputRecorder(LapaDinov3Attention, index=1, layer_name="cross_attention"),
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LapaDinov3Quantizer):
            init.normal_(module.codebook, mean=0.0, std=1.0)
            init.zeros_(module.code_usage)
        elif isinstance(module, LapaDinov3Attention):
            init.ones_(module.q_scale)
            init.ones_(module.k_scale)
            if module.is_cross_attention:
                init.normal_(module.null_key, mean=0.0, std=1.0)
                init.normal_(module.null_value, mean=0.0, std=1.0)


class LapaDinov3Model(LapaDinov3PreTrainedModel):
    """LAPA-DINOv3 latent action model. The DINOv3 backbone is frozen and stays in eval mode. `forward` takes frame
    pairs, clips or DINOv3 features; `latent_actions_of_video` streams a video of any length, a window of pairs at a
    time."""

    def __init__(self, config: LapaDinov3Config):
        super().__init__(config)
        self.backbone = DINOv3ViTModel(config.backbone_config)
        self.position_bias = LapaDinov3PositionBias(config)
        self.spatial_encoder = LapaDinov3Transformer(config, config.spatial_depth)
        self.temporal_encoder = LapaDinov3Transformer(config, config.temporal_depth)
        self.quantizer = LapaDinov3Quantizer(config)
        self.decoder = LapaDinov3Transformer(config, config.decoder_depth, has_cross_attention=True)
        self.post_init()
        # frozen and in eval mode from the start: DINOv3 in training mode jitters its RoPE coordinates
        self.backbone.eval().requires_grad_(False)
        # The output-capturing hooks of this model and of its sub-models (DINOv3 and its encoder), all at once: left
        # to be installed lazily, DINOv3's encoder hooks its layers at the first call that records, then this model's
        # installation hooks them again, so from the second call on every DINOv3 layer was recorded twice.
        maybe_install_capturing_hooks(self)

    def train(self, mode: bool = True) -> "LapaDinov3Model":
        # The backbone is frozen. `from_pretrained` swaps in fresh parameters and ends with `eval()`, so this is
        # where it is (re-)frozen; and DINOv3 would jitter its RoPE coordinates in training mode.
        super().train(mode)
        self.backbone.eval().requires_grad_(False)
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    @torch.no_grad()
    def _backbone_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """DINOv3 patch features (frames, h, w, dim) of (frames, 3, H, W) pixels in [-1, 1], and DINOv3's output."""
        backbone_config = self.config.backbone_config
        grid = self.config.patch_grid
        if tuple(pixel_values.shape[-2:]) != (grid[0] * backbone_config.patch_size, grid[1] * backbone_config.patch_size):
            raise ValueError(
                f"pixel_values are {tuple(pixel_values.shape[-2:])} pixels; this model takes "
                f"{backbone_config.image_size}x{backbone_config.image_size} frames (use the processor)"
            )
        output = self.backbone(pixel_values=pixel_values, **kwargs)
        patches = output.last_hidden_state[:, 1 + backbone_config.num_register_tokens :]
        return patches.reshape(pixel_values.shape[0], *grid, -1), output

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """DINOv3 patch features (frames, h, w, dim) of (frames, 3, H, W) pixels in [-1, 1]."""
        return self._backbone_features(pixel_values)[0]

    @capture_outputs(tie_last_hidden_states=False)
    def _run_encoder(self, features: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutput:
        b, t, h, w, d = features.shape
        video_shape = (b, t, h, w)
        x = self.spatial_encoder(features.reshape(b * t, h * w, d), video_shape, self.position_bias(h, w), **kwargs)
        x = x.reshape(b, t, h, w, d).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, d)
        x = self.temporal_encoder(x, video_shape, **kwargs)
        x = x.reshape(b, h, w, t, d).permute(0, 3, 1, 2, 4).reshape(b, t, h * w, d)
        return BaseModelOutput(last_hidden_state=x)

    def encode(self, features: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BaseModelOutput:
        """Spatial then temporal transformer over (b, 2, h, w, dim) features. `last_hidden_state` is both frames'
        (b, 2, h*w, dim); hidden states and attentions are recorded on request, in `LapaDinov3Output`'s layouts."""
        b, t, h, w, _ = features.shape
        output = self._run_encoder(features, **kwargs)
        spatial = self.config.spatial_depth
        if output.hidden_states is not None:
            # recorded as (b*t, h*w, d) by the spatial layers (and their input), (b*h*w, t, d) by the temporal ones
            states = output.hidden_states
            temporal = _unflatten(states[spatial + 1 :], (b, h * w))
            output.hidden_states = _unflatten(states[: spatial + 1], (b, t)) + tuple(
                None if x is None else x.transpose(1, 2) for x in temporal
            )
        if output.attentions is not None:
            # (b*t, heads, h*w, h*w) per spatial layer, (b*h*w, heads, t, t) per temporal layer
            attentions = output.attentions
            output.attentions = _unflatten(attentions[:spatial], (b, t)) + _unflatten(attentions[spatial:], (b, h * w))
        return output

    @capture_outputs(tie_last_hidden_states=False)
    def decode(
        self, first_features: torch.Tensor, latent_actions: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithCrossAttentions:
        """Predicted second-frame features (b, h, w, dim) as `last_hidden_state`, from first-frame features and
        action tokens; the decoder's hidden states and attentions are recorded on request."""
        b, h, w, d = first_features.shape
        x = self.decoder(
            first_features.reshape(b, h * w, d), (b, 1, h, w), self.position_bias(h, w), latent_actions, **kwargs
        )
        return BaseModelOutputWithCrossAttentions(last_hidden_state=x.reshape(b, h, w, d))

    def latent_actions_from_indices(self, action_indices: torch.LongTensor) -> torch.Tensor:
        """Action tokens (b, n, dim) for given codebook indices (b, n)."""
        return self.quantizer.project(self.quantizer.codebook[action_indices])

    def decode_actions(
        self,
        action_indices: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        first_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """"What if": predicted second-frame features for first frames (pixels (b, 3, H, W) or features) and codes."""
        if (pixel_values is None) == (first_features is None):
            raise ValueError("pass exactly one of `pixel_values` (first frames) and `first_features`")
        if first_features is None:
            first_features = self.extract_features(pixel_values)
        n = self.config.code_seq_len
        if action_indices.ndim != 2 or action_indices.shape[1] != n:
            raise ValueError(f"action_indices must have shape (batch, {n}); got {tuple(action_indices.shape)}")
        return self.decode(first_features, self.latent_actions_from_indices(action_indices)).last_hidden_state

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        backbone_features: torch.Tensor | None = None,
        stride: int = 1,
        return_predicted_features: bool = False,
        output_backbone_features: bool = False,
        return_loss: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> LapaDinov3Output:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch, 2, 3, H, W)`):
            Frame pairs, as the processor makes them (`images=[[f0, f1], ...]`).
        pixel_values_videos (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`):
            Clips; latent actions are computed for every pair `(t, t + stride)`, each frame through DINOv3 once.
        backbone_features (`torch.FloatTensor` of shape `(batch, 2, h, w, dim)`):
            Precomputed DINOv3 patch features of frame pairs (e.g. a feature cache for training).
        stride (`int`, defaults to 1):
            Frame distance of the pairs taken from clips.
        return_predicted_features (`bool`):
            Also run the decoder and return `predicted_features`.
        output_backbone_features (`bool`):
            Also return the DINOv3 features of both frames.
        return_loss (`bool`, *optional*):
            Compute the feature-MSE loss; defaults to `self.training`.
        output_hidden_states, output_attentions (`bool`, *optional*):
            Record the hidden states / attention weights of the backbone, the encoder and (when it runs) the decoder;
            defaults to this model's config, which also decides for the backbone. Attention weights need
            `attn_implementation="eager"`.
        return_dict (`bool`, *optional*):
            `False` returns `LapaDinov3Output.to_tuple()`: the fields that are not `None`, in order.

        Returns:
            [`LapaDinov3Output`], or a tuple with `return_dict=False`.
        """
        if sum(x is not None for x in (pixel_values, pixel_values_videos, backbone_features)) != 1:
            raise ValueError("pass exactly one of `pixel_values`, `pixel_values_videos` and `backbone_features`")
        kwargs.setdefault("output_attentions", self.config.output_attentions)
        kwargs.setdefault("output_hidden_states", self.config.output_hidden_states)
        clip_shape = frames_shape = backbone = None
        if pixel_values_videos is not None:
            frames_shape = tuple(pixel_values_videos.shape[:2])
            batch, frames = frames_shape
            if not 1 <= stride < frames:
                raise ValueError(f"stride must be in [1, {frames - 1}] for {frames}-frame clips; got {stride}")
            features, backbone = self._backbone_features(pixel_values_videos.flatten(0, 1), **kwargs)
            features = features.unflatten(0, frames_shape)
            clip_shape = (batch, frames - stride)
            backbone_features = torch.stack((features[:, :-stride], features[:, stride:]), dim=2).flatten(0, 1)
        elif pixel_values is not None:
            if pixel_values.ndim != 5 or pixel_values.shape[1] != 2:
                raise ValueError(f"pixel_values must be (batch, 2, 3, H, W) frame pairs; got {tuple(pixel_values.shape)}")
            frames_shape = tuple(pixel_values.shape[:2])
            features, backbone = self._backbone_features(pixel_values.flatten(0, 1), **kwargs)
            backbone_features = features.unflatten(0, frames_shape)

        dtype = self.quantizer.project_in.weight.dtype
        backbone_features = backbone_features.to(dtype)
        grid = tuple(backbone_features.shape[2:4])
        encoded = self.encode(backbone_features, **kwargs)
        first, second = encoded.last_hidden_state.unbind(1)
        action_indices, latent_actions, continuous, perplexity = self.quantizer(first, second, grid)

        return_loss = self.training if return_loss is None else return_loss
        decoded = BaseModelOutputWithCrossAttentions()  # all None unless the decoder runs
        loss = None
        if return_predicted_features or return_loss:
            decoded = self.decode(backbone_features[:, 0], latent_actions, **kwargs)
            if return_loss:
                loss = F.mse_loss(decoded.last_hidden_state, backbone_features[:, 1])

        per_pair = {
            "action_indices": action_indices,
            "latent_actions": latent_actions,
            "continuous_latent_actions": continuous,
            "predicted_features": decoded.last_hidden_state if return_predicted_features else None,
            "backbone_features": backbone_features if output_backbone_features else None,
            "hidden_states": encoded.hidden_states,
            "attentions": encoded.attentions,
            "decoder_hidden_states": decoded.hidden_states,
            "decoder_attentions": decoded.attentions,
            "cross_attentions": decoded.cross_attentions,
        }
        if clip_shape is not None:
            per_pair = {key: _unflatten(value, clip_shape) for key, value in per_pair.items()}
        return LapaDinov3Output(
            loss=loss,
            perplexity=perplexity,
            backbone_hidden_states=_unflatten(backbone.hidden_states, frames_shape) if backbone is not None else None,
            backbone_attentions=_unflatten(backbone.attentions, frames_shape) if backbone is not None else None,
            **per_pair,
        )

    def latent_actions_of_video(
        self,
        frames: Iterable[Any],
        stride: int = 1,
        processor: LapaDinov3Processor | None = None,
        pairs_per_window: int = 32,
        **kwargs: Any,
    ) -> Iterator[LapaDinov3Output]:
        r"""
        The latent actions of every pair `(t, t + stride)` of a video's frames, streamed: one [`LapaDinov3Output`]
        per window of at most `pairs_per_window` pairs (tensors with a leading pair axis), the windows in order.

        Every frame goes through the backbone once: a window hands the DINOv3 features of its last `stride` frames
        to the next, so memory holds a window's frames and `stride` frames' features, whatever the video's length. A
        stride above `pairs_per_window` is not carried (its features would outgrow the window): the frames are read
        twice instead, `iter(frames)` once from frame 0 and once from frame `stride`, and each window computes its
        pairs' two frames (each frame through the backbone twice at most, memory still a window's). Float32 on a GPU
        is computed without TF32. Fewer than `stride + 1` frames yield nothing.

        Args:
            frames (`Iterable`): uint8 model pixels `(3, S, S)` (the processor's `resize`), or with `processor` any
                frames it takes ((H, W, 3) uint8 arrays or tensors, PIL images), resized on the model's device. An
                iterable that `iter()` reads from the start again (a list, a tensor, a video reader) when `stride`
                is above `pairs_per_window`.
            stride (`int`, defaults to 1): frame distance of the pairs.
            processor ([`LapaDinov3Processor`], *optional*): resizes the frames; without it they are pixels already.
            pairs_per_window (`int`, defaults to 32): pairs per forward pass.
            kwargs: passed to `forward` (e.g. `return_predicted_features=True`).
        """
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive integer; got {stride!r}")
        if isinstance(pairs_per_window, bool) or not isinstance(pairs_per_window, int) or pairs_per_window < 1:
            raise ValueError(f"pairs_per_window must be a positive integer; got {pairs_per_window!r}")
        if stride > pairs_per_window and iter(frames) is frames:
            raise ValueError(f"stride {stride} is above pairs_per_window {pairs_per_window}: the frames are read twice, "
                             "so pass an iterable that iter() reads from the start again (a list, a tensor), not an "
                             "iterator, or raise pairs_per_window to the stride")
        return self._video_windows(frames, stride, processor, pairs_per_window, kwargs)

    @torch.inference_mode()
    def _video_windows(
        self,
        frames: Iterable[Any],
        stride: int,
        processor: LapaDinov3Processor | None,
        pairs_per_window: int,
        kwargs: dict[str, Any],
    ) -> Iterator[LapaDinov3Output]:
        if stride <= pairs_per_window:
            carried = None  # the features of the previous window's last `stride` frames
            fresh: list[torch.Tensor] = []
            for pixels in self._model_pixels(frames, processor):
                fresh.append(pixels)
                if len(fresh) == pairs_per_window + (stride if carried is None else 0):
                    features = self._window_features(carried, fresh)
                    yield self._window_pairs(features[:-stride], features[stride:], kwargs)
                    carried, fresh = features[-stride:].clone(), []  # a copy: the window's features are freed
            if fresh and len(fresh) + (0 if carried is None else stride) > stride:
                features = self._window_features(carried, fresh)
                yield self._window_pairs(features[:-stride], features[stride:], kwargs)
            return
        seconds = islice(iter(frames), stride, None)  # the second reader starts at frame `stride`, resizing nothing
        pairs = zip(self._model_pixels(iter(frames), processor), self._model_pixels(seconds, processor))
        while window := list(islice(pairs, pairs_per_window)):
            features = self._window_features(None, [pixels for pair in window for pixels in pair]).unflatten(0, (-1, 2))
            yield self._window_pairs(features[:, 0], features[:, 1], kwargs)

    def _model_pixels(self, frames: Iterable[Any], processor: LapaDinov3Processor | None) -> Iterator[torch.Tensor]:
        """uint8 model pixels on the model's device, one frame at a time; with `processor`, frames resized as read
        (`resize_stream`: memory holds one chunk of frames at their own size)."""
        if processor is not None:
            return processor.resize_stream(frames, self.device)
        return (pixels.to(self.device, non_blocking=True) for pixels in frames)

    def _window_features(self, carried: torch.Tensor | None, fresh: list[torch.Tensor]) -> torch.Tensor:
        """DINOv3 features of a window: those `carried` from the previous window, then the `fresh` frames' (uint8
        model pixels, through the backbone together)."""
        parameter = next(self.parameters())
        with exact_float32(parameter.device, parameter.dtype):
            features = self.extract_features(normalize_pixels(torch.stack(fresh)).to(parameter.dtype))
        return features if carried is None else torch.cat((carried, features))

    def _window_pairs(self, first: torch.Tensor, second: torch.Tensor, kwargs: dict[str, Any]) -> LapaDinov3Output:
        parameter = next(self.parameters())
        with exact_float32(parameter.device, parameter.dtype):
            return self(backbone_features=torch.stack((first, second), dim=1), **kwargs)


# Every save writes `auto_map` and the code files, also when the class came from `lary` rather than remote code.
LapaDinov3Model.register_for_auto_class("AutoModel")

__all__ = ["LapaDinov3Model", "LapaDinov3Output", "LapaDinov3PreTrainedModel", "available_cores", "compute_threads",
           "decoding_cores", "exact_float32"]
