"""Frame pairs per second of LAPA-DINOv3 on CPU: pair mode vs video mode (each frame through DINOv3 once).

A DINOv3 ViT-S/16-shaped backbone (random weights) with a matching LAQ (width 384, 6 heads of 64, depths 4/4/4).
Clips have 9 frames (8 consecutive pairs). Three ways to get the same 8 latent actions per clip:
  pairwise   each pair through the model on its own (how LARYBench extracts: one forward per sample)
  pairs      all pairs of a clip as one batch (`pixel_values`, both frames of every pair through DINOv3)
  video      the clip as one batch (`pixel_values_videos`, every frame through DINOv3 once)
Outputs are checked identical (codes exactly, vectors within 1e-4). The modes take turns, one round of each after
another (A, B, C, A, B, C, ...), so a busy spell of the machine lands on every mode rather than on one; each mode's
median over the rounds is reported, and the speedups are ratios of those medians. The last line is the speedup of
video mode over pairwise.

    python benchmarks/bench_extract.py [--clips 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lary import LapaDinov3Config, LapaDinov3Model

VITS16 = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 12, "num_attention_heads": 6,
          "num_register_tokens": 4, "image_size": 224, "patch_size": 16}


def interleaved(
    modes: dict[str, Callable[[], torch.Tensor]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Seconds of each mode in each of `rounds` rounds in which every mode runs once, and each mode's output."""
    outputs = {name: fn() for name, fn in modes.items()}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, fn in modes.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds, outputs


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (every mode once per round)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LapaDinov3Config(backbone_config=VITS16, heads=6, dim_head=64)
    model = LapaDinov3Model(config).eval()
    clips = torch.rand(args.clips, args.frames, 3, 224, 224) * 2 - 1
    pairs = torch.stack((clips[:, :-1], clips[:, 1:]), dim=2)  # (clips, frames - 1, 2, 3, H, W)
    n_pairs = args.clips * (args.frames - 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clips} clips x {args.frames} frames")

    def pairwise():
        return torch.stack([model(pixel_values=pair[None]).action_indices[0] for clip in pairs for pair in clip])

    def batched_pairs():
        return torch.cat([model(pixel_values=clip_pairs).latent_actions for clip_pairs in pairs])

    def video():
        return torch.cat([model(pixel_values_videos=clip[None], stride=1).latent_actions[0] for clip in clips])

    names = {"pairwise": "pairwise (one pair per call)", "pairs": "pairs (a clip's pairs batched)",
             "video": "video (each frame once)"}
    rounds, outputs = interleaved({"pairwise": pairwise, "pairs": batched_pairs, "video": video}, args.repeats)
    seconds = {name: statistics.median(times) for name, times in rounds.items()}
    video_codes = torch.cat([model(pixel_values_videos=clip[None]).action_indices[0] for clip in clips])
    assert torch.equal(outputs["pairwise"], video_codes), "video mode changed the action codes"
    torch.testing.assert_close(outputs["video"], outputs["pairs"], atol=1e-4, rtol=0)

    print(f"median of {args.repeats} interleaved rounds (slowest..fastest round):")
    for name, label in names.items():
        spread = f"{n_pairs / max(rounds[name]):.2f}..{n_pairs / min(rounds[name]):.2f}"
        print(f"{label:34s} {n_pairs / seconds[name]:8.2f} pairs/s  ({spread})")
    print(f"video speedup vs batched pairs: {seconds['pairs'] / seconds['video']:.2f}x")
    print(f"video speedup vs pairwise: {seconds['pairwise'] / seconds['video']:.2f}x")


if __name__ == "__main__":
    main()
