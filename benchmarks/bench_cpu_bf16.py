"""bfloat16 against float32 on this CPU: pairs/s of video mode, and how many codes stay the same.

Speed: a DINOv3 ViT-S/16-shaped LAPA model (random weights, the shape of `bench_extract.py`) in video mode over
clips of real robot frames (the ALOHA episodes in `../shared/robot/aloha`, 9 frames a clip), float32 and bfloat16
taking turns round after round; medians and their ratio.

Code agreement (the share of action codes bfloat16 gives as float32 does), every pair (t, t+1) of both ALOHA episodes:
  golden     the reference's tiny checkpoint (`../shared/golden/lapa_dinov3_tiny`), and its fixed cases against the
             reference's own codes
  embedded   the embedded model (`examples/tiny-lapa-dinov3`, trained on synthetic clips)
  vit-s      the random ViT-S-shaped model of the speed part
None of these has the released weights, whose codes can only be checked where they can be loaded.

    python benchmarks/bench_cpu_bf16.py [--clips 2] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModel, DINOv3ViTConfig

from lary import LapaDinov3Config, LapaDinov3Model, LapaDinov3Processor
from lary.checkpoint import convert_checkpoint
from lary.runtime import native_bfloat16
from lary.frames import read_video
from lary.hub import EMBEDDED_MODEL

SHARED = Path(__file__).resolve().parents[2] / "shared"
ALOHA = sorted((SHARED / "robot" / "aloha").glob("ep_*.mp4"))
GOLDEN = SHARED / "golden" / "lapa_dinov3_tiny"
VITS16 = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12, "num_attention_heads": 6,
          "num_register_tokens": 4, "image_size": 224, "patch_size": 16}


def aloha_pixels(size: int) -> list[torch.Tensor]:
    """Each ALOHA episode's frames as the processor gives them to the model: (frames, 3, size, size) in [-1, 1]."""
    processor = LapaDinov3Processor(size=size)
    return [processor.normalize(processor.resize(torch.from_numpy(read_video(path)))) for path in ALOHA]


@torch.inference_mode()
def codes(model: LapaDinov3Model, videos: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Codes of every pair (t, t+1) of each video, with the model in `dtype`."""
    model = model.to(dtype)
    out = [model(pixel_values_videos=video[None].to(dtype), stride=1).action_indices[0] for video in videos]
    return torch.cat(out)


def agreement(model: LapaDinov3Model, videos: list[torch.Tensor]) -> dict[str, float]:
    fp32, bf16 = codes(model, videos, torch.float32), codes(model, videos, torch.bfloat16)
    model.float()
    return {"pairs": len(fp32), "codes": fp32.numel(), "agreement": (fp32 == bf16).float().mean().item(),
            "pairs_all_equal": (fp32 == bf16).all(dim=1).float().mean().item()}


@torch.inference_mode()
def golden_cases(model: LapaDinov3Model) -> float:
    """Share of the reference's codes on its fixed cases that the golden model gives in bfloat16."""
    cases = load_file(GOLDEN / "cases.safetensors")
    pixels = (cases["frames"].permute(0, 1, 4, 2, 3).float() / 255) * 2 - 1
    bf16 = model.to(torch.bfloat16)(pixel_values=pixels.to(torch.bfloat16)).action_indices
    model.float()
    return (bf16 == cases["indices"]).float().mean().item()


def golden_model() -> LapaDinov3Model:
    laq = json.loads((GOLDEN / "laq_config.json").read_text())
    backbone = json.loads((GOLDEN / "backbone_config.json").read_text())
    backbone.pop("transformers_version")
    return convert_checkpoint(GOLDEN / "laq_dinov3.pt", laq, DINOv3ViTConfig(**backbone))


@torch.inference_mode()
def speed(model: LapaDinov3Model, clips: list[torch.Tensor], rounds: int) -> dict[str, float]:
    """Median pairs/s of video mode in float32 and bfloat16, rounds interleaved."""
    variants = {"float32": (model, torch.float32),
                "bfloat16": (LapaDinov3Model(model.config).to(torch.bfloat16).eval(), torch.bfloat16)}
    variants["bfloat16"][0].load_state_dict(model.state_dict())
    pairs = sum(len(clip) - 1 for clip in clips)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds + 1):  # round 0 warms up
        for name, (variant, dtype) in variants.items():
            start = time.perf_counter()
            for clip in clips:
                variant(pixel_values_videos=clip[None].to(dtype), stride=1)
            if round_index:
                seconds[name].append(time.perf_counter() - start)
    result = {name: pairs / statistics.median(times) for name, times in seconds.items()}
    result["ratio"] = result["bfloat16"] / result["float32"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not ALOHA:
        raise SystemExit(f"the ALOHA episodes are missing from {SHARED / 'robot' / 'aloha'}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"native bfloat16: {native_bfloat16()}")

    torch.manual_seed(0)
    vits = LapaDinov3Model(LapaDinov3Config(backbone_config=VITS16, heads=6, dim_head=64)).eval()
    frames_224 = aloha_pixels(224)
    clips = [video[start:start + args.frames] for video in frames_224 for start in range(0, len(video), args.frames)]
    clips = [clip for clip in clips if len(clip) == args.frames][:args.clips]
    results = {"native_bfloat16": native_bfloat16(), "threads": torch.get_num_threads()}
    results["speed_vit_s"] = speed(vits, clips, args.rounds)
    s = results["speed_vit_s"]
    print(f"ViT-S video mode, {len(clips)} clips x {args.frames} frames, median of {args.rounds} interleaved rounds: "
          f"float32 {s['float32']:.2f} pairs/s, bfloat16 {s['bfloat16']:.2f} pairs/s, bf16/fp32 {s['ratio']:.2f}x")

    golden = golden_model()
    embedded = AutoModel.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32)
    results["agreement"] = {
        "golden": agreement(golden, frames_224),
        "embedded": agreement(embedded, aloha_pixels(embedded.config.backbone_config.image_size)),
        "vit_s": agreement(vits, frames_224),
    }
    results["golden_cases_bf16_vs_reference"] = golden_cases(golden)
    for name, row in results["agreement"].items():
        print(f"code agreement bf16 vs fp32, {name:8s} on {row['pairs']} ALOHA pairs: {row['agreement']:.1%} of codes, "
              f"{row['pairs_all_equal']:.1%} of pairs all equal")
    print(f"golden cases, bf16 codes equal to the reference's: {results['golden_cases_bf16_vs_reference']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
