"""Where LAPA-DINOv3's time goes, in bf16 video mode at the released shape (random weights): the DINOv3 backbone
against the LAQ, the operators that take the most device time, the LAQ's attention on each SDPA backend (the spatial
one with its position-bias mask contiguous and as the strided view it was before), and other forms of two LAQ parts
that compute the same thing, timed inside the whole model with rounds interleaved:
- the position generator, a causal depthwise 3D convolution (cuDNN's grouped direct kernel took a quarter of the
  model's time on an H200): as 3D convolution over channels-last tensors, as depthwise 2D convolutions per time
  tap that reaches a frame, as 27 shifted multiply-adds fused by `torch.compile` (on the H200 one 2D convolution with
  all three taps ran at 0.96x the model's speed, and the 27 multiply-adds unfused at 0.92x: both are gone);
- the temporal attention over 2 tokens, written out (two dot products and a softmax per query) instead of the plain
  product the model uses there (`FEW_KEYS`);
- the feed-forward with its inner width (2730) padded to a multiple of 8 (its matmuls ran on Ampere-generation
  kernels at about a quarter of the peak).

    python benchmarks/bench_gpu_breakdown.py [--tiny] [--json breakdown.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_gpu import Results, bf16_peak, inputs, make_model, synchronize
from lary_hub.modeling_lapa_dinov3 import (
    LapaDinov3FeedForward,
    LapaDinov3PositionGenerator,
)
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

CONV3D = LapaDinov3PositionGenerator.forward
FEED_FORWARD = LapaDinov3FeedForward.forward
ALIGNMENT = 8  # bf16 elements in 16 bytes: the row alignment Hopper's fast matmul kernels want


def shifted(self, x: torch.Tensor, video_shape: tuple[int, int, int, int]) -> torch.Tensor:
    """27 shifted multiply-adds over the channels-last grid, accumulated in float32 (timed fused by `torch.compile`)."""
    b, t, h, w = video_shape
    dim = x.shape[-1]
    padded = F.pad(x.reshape(b, t, h, w, dim), (0, 0, 1, 1, 1, 1, 2, 0))
    weights = self.conv.weight.reshape(dim, 27).t().float()
    out = self.conv.bias.float().expand(b, t, h, w, dim).clone()
    for k in range(27):
        dt, dh, dw = k // 9, k // 3 % 3, k % 3
        out.addcmul_(padded[:, dt : dt + t, dh : dh + h, dw : dw + w], weights[k])
    return out.to(x.dtype).reshape(x.shape)


def conv3d_channels_last(self, x: torch.Tensor, video_shape: tuple[int, int, int, int]) -> torch.Tensor:
    """The same convolution over channels-last (NDHWC) tensors, which cuDNN runs with other kernels."""
    grid = x.reshape(*video_shape, -1).permute(0, 4, 1, 2, 3)
    padded = F.pad(grid, (1, 1, 1, 1, 2, 0)).contiguous(memory_format=torch.channels_last_3d)
    weight = self.conv.weight.contiguous(memory_format=torch.channels_last_3d)
    out = F.conv3d(padded, weight, self.conv.bias, groups=x.shape[-1])
    return out.permute(0, 2, 3, 4, 1).reshape(x.shape)


def frames2d(self, x: torch.Tensor, video_shape: tuple[int, int, int, int]) -> torch.Tensor:
    """A depthwise 2D convolution over channels-last frames per time tap that reaches a frame (two for a pair: the
    causal padding gives the third only zeros), added with its time shift."""
    b, t, h, w = video_shape
    dim = x.shape[-1]
    out = None
    for shift in range(min(t, 3)):  # tap 2 - shift reads the frame `shift` steps back
        frames = x.reshape(b, t, h, w, dim)[:, : t - shift].reshape(-1, h, w, dim).permute(0, 3, 1, 2)
        tap = F.conv2d(frames, self.conv.weight[:, :, 2 - shift], padding=1, groups=dim)
        tap = tap.permute(0, 2, 3, 1).reshape(b, t - shift, h, w, dim)
        if out is None:
            out = tap + self.conv.bias
        else:
            out[:, shift:] += tap
    return out.reshape(x.shape)


_compiled_shifted = torch.compile(shifted, dynamic=False)


def shifted_compiled(self, x: torch.Tensor, video_shape: tuple[int, int, int, int]) -> torch.Tensor:
    return _compiled_shifted(self, x, video_shape)


POSITION_GENERATORS = {"conv3d": CONV3D, "conv3d_channels_last": conv3d_channels_last, "frames2d": frames2d,
                       "shifted_compiled": shifted_compiled}


def few_token_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Attention over at most 4 keys without a mask, written out; anything else goes to SDPA."""
    if attention_mask is not None or key.shape[-2] > 4:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    logits = (query.unsqueeze(-2) * key.unsqueeze(-3)).sum(-1) * scaling  # (batch, heads, queries, keys)
    weights = logits.float().softmax(-1).to(value.dtype)
    out = (weights.unsqueeze(-1) * value.unsqueeze(-3)).sum(-2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("lapa_few_tokens", few_token_attention)


def aligned_feed_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The GEGLU with its inner width (2730 at the released shape) padded with zero weights to a multiple of 8, so the
    matmuls' rows are 16-byte aligned; the padded units are exactly zero (gelu(0) * 0)."""
    inner = self.proj_out.weight.shape[1]
    pad = -inner % ALIGNMENT
    value, gate = self.proj_in.weight.chunk(2)
    weight_in = torch.cat((F.pad(value, (0, 0, 0, pad)), F.pad(gate, (0, 0, 0, pad))))
    x, gate = F.linear(self.norm(x), weight_in).chunk(2, dim=-1)
    return F.linear(F.gelu(gate) * x, F.pad(self.proj_out.weight, (0, pad)))


def seconds_per_call(call, device: torch.device, runs: int) -> float:
    with torch.inference_mode():
        for _ in range(2):
            call()
        times = []
        for _ in range(runs):
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def split(model, pixels: torch.Tensor, device: torch.device, runs: int, results: Results) -> None:
    """Backbone (every frame once) and LAQ (every pair) timed apart, and the whole forward."""
    frames = pixels[0]
    with torch.inference_mode():
        features = model.extract_features(frames)
        pairs = torch.stack((features[:-1], features[1:]), dim=1)
    parts = {
        "backbone": lambda: model.extract_features(frames),
        "laq": lambda: model(backbone_features=pairs),
        "model": lambda: model(pixel_values_videos=pixels),
    }
    times = {name: seconds_per_call(call, device, runs) for name, call in parts.items()}
    for name, seconds in times.items():
        results.add(f"time/{name}", seconds, f"{name}: {1e3 * seconds:.1f} ms per {len(pairs)} pairs "
                    f"({len(pairs) / seconds:,.0f} pairs/s; {100 * seconds / times['model']:.0f}% of the model)")


def top_operators(model, pixels: torch.Tensor, device: torch.device, results: Results) -> None:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode():
        model(pixel_values_videos=pixels)
        synchronize(device)
        with profile(activities=activities) as profiler:
            model(pixel_values_videos=pixels)
            synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=50)
    results.add("profile", table, table)


def attention_backends(model, pairs: int, device: torch.device, results: Results) -> None:
    """The LAQ's spatial attention (with the position bias as an additive mask) and temporal attention (2 tokens, no
    mask), on each SDPA backend."""
    config = model.config
    heads, head_dim = config.heads, config.dim_head
    h, w = config.patch_grid
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        bias = model.position_bias(h, w).to(dtype)
    warnings.filterwarnings("ignore", "(Flash|Memory efficient|CuDNN|Please use)", UserWarning)  # the unavailable ones
    strided = bias.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # the layout before 7d39eb3
    shapes = {"spatial": (2 * pairs, h * w, bias), "spatial_strided_mask": (2 * pairs, h * w, strided),
              "temporal": (pairs * h * w, 2, None)}
    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH, "written_out": "few_tokens"}
    for where, (sequences, tokens, mask) in shapes.items():
        q, k, v = (torch.randn(sequences, heads, tokens, head_dim, device=device, dtype=dtype) for _ in range(3))
        for name, backend in backends.items():
            if backend == "few_tokens" and mask is not None:
                continue  # written out only without a mask
            def call(backend=backend):
                if backend == "few_tokens":
                    return few_token_attention(None, q, k, v, mask, scaling=config.attention_scale)
                if backend is None:
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=config.attention_scale)
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=config.attention_scale)
            try:
                seconds = seconds_per_call(call, device, 5)
            except RuntimeError as error:
                results.add(f"attention/{where}/{name}", None, f"attention {where} {name}: unavailable ({str(error)[:80]})")
                continue
            results.add(f"attention/{where}/{name}", seconds,
                        f"attention {where} ({sequences} x {tokens} tokens) {name}: {1e3 * seconds:.2f} ms per layer")


def time_variants(model, pixels: torch.Tensor, device: torch.device, runs: int, rounds: int,
                  variants: dict[str, tuple]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Median seconds per forward of each (position generator, attention implementation, feed-forward), rounds
    interleaved, and each one's codes."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    codes = {}
    try:
        for _ in range(rounds):
            for name, (position_generator, attention, feed_forward) in variants.items():
                LapaDinov3PositionGenerator.forward = position_generator
                LapaDinov3FeedForward.forward = feed_forward
                model.set_attn_implementation(attention)
                times[name].append(seconds_per_call(lambda: model(pixel_values_videos=pixels), device, runs))
                with torch.inference_mode():
                    codes[name] = model(pixel_values_videos=pixels).action_indices
    finally:
        LapaDinov3PositionGenerator.forward = CONV3D
        LapaDinov3FeedForward.forward = FEED_FORWARD
        model.set_attn_implementation("sdpa")
    return {name: statistics.median(values) for name, values in times.items()}, codes


def laq_forms(model, pixels: torch.Tensor, device: torch.device, runs: int, rounds: int, results: Results) -> None:
    """Each form inside the whole model against the current one; then the fastest position generator together with
    the written-out temporal attention and the aligned feed-forward."""
    pairs = pixels.shape[1] - 1
    variants = {f"position_generator/{name}": (forward, "sdpa", FEED_FORWARD) for name, forward in POSITION_GENERATORS.items()}
    variants["temporal_attention/written_out"] = (CONV3D, "lapa_few_tokens", FEED_FORWARD)
    variants["feed_forward/aligned"] = (CONV3D, "sdpa", aligned_feed_forward)
    times, codes = time_variants(model, pixels, device, runs, rounds, variants)
    best = min(POSITION_GENERATORS, key=lambda name: times[f"position_generator/{name}"])
    combined = {"current": (CONV3D, "sdpa", FEED_FORWARD),
                f"{best}+written_out+aligned": (POSITION_GENERATORS[best], "lapa_few_tokens", aligned_feed_forward)}
    more_times, more_codes = time_variants(model, pixels, device, runs, rounds, combined)
    times |= {f"combined/{name}": value for name, value in more_times.items()}
    codes |= {f"combined/{name}": value for name, value in more_codes.items()}
    reference, current = codes["position_generator/conv3d"], times["position_generator/conv3d"]
    for name, seconds in times.items():
        if name.startswith("combined/"):
            current = times["combined/current"]
        agreement = (codes[name] == reference).float().mean().item()
        results.add(name, {"seconds": seconds, "code_agreement": agreement},
                    f"{name}: model {pairs / seconds:,.0f} pairs/s ({current / seconds:.2f}x the current model), codes "
                    f"agree with the current model's on {100 * agreement:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (seconds)")
    parser.add_argument("--pairs", type=int, help="pairs per forward pass (default: 256 on a GPU, 4 with --tiny)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the LAQ forms")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    args.pairs = args.pairs or (4 if args.tiny else 256)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    name, peak = bf16_peak(device)
    results = Results(args.json, torch=torch.__version__)
    results.add("device", name, f"device: {name}")
    model = make_model(args.tiny, device, torch.bfloat16)
    pixels = inputs("video", args.pairs, device, torch.bfloat16)["pixel_values_videos"]
    split(model, pixels, device, args.runs, results)
    laq_forms(model, pixels, device, args.runs, args.rounds, results)  # first: the H200 run's time ran out before them
    attention_backends(model, args.pairs, device, results)
    top_operators(model, pixels, device, results)


if __name__ == "__main__":
    main()
