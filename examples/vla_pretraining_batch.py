"""From videos or a LeRobot dataset to a VLA's pretraining batch: latent actions labelled on the fly, written as
tokens of a language model, and one training step on text plus latent-action tokens (the loss on the action tokens).

    python examples/vla_pretraining_batch.py                      # offline: generated clips, the tiny models
    python examples/vla_pretraining_batch.py --videos "my_clips/*.mp4" --task "pick up the cup"
    python examples/vla_pretraining_batch.py --lerobot lerobot/aloha_sim_insertion_human --stride 15 \\
        --model AGI-Eval/LAPA-DINOv3 --lm HuggingFaceTB/SmolLM2-135M   # from the Hub

Defaults run offline on a CPU: a few clips of a moving shape written as video files to a temporary folder
(`lary.synthetic`, the task their motion), the embedded tiny LAPA-DINOv3 (trained on such clips only: its codes of
real video mean nothing) and a tiny language model built here. See docs/vla.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from lary import LatentActionLabeler, LatentActionTokens
from lary.errors import LaryError, one_line_errors
from lary.frames import decode_video, probe_video
from lary.hub import default_model
from lary.lerobot import open_lerobot
from lary.synthetic import DIRECTIONS, make_clips, write_video

PROMPT = "What action should the robot take to {task}?"
VIDEO_CAMERA = "observation.image"  # the key of a video's frames, as LeRobot names a single camera


class Rows(NamedTuple):
    """One episode's rows: row t is frame `positions[t]` of `video` (whose packets' timestamps are `pts`), with its
    task text and its `frame_index`."""

    video: Path
    positions: np.ndarray
    pts: np.ndarray
    tasks: list[str]
    episode_index: int
    frame_indices: np.ndarray


class FramePairs(Dataset):
    """Frames t and t + k of a LeRobot dataset's camera, item for item as `LeRobotDataset(repo_id,
    delta_timestamps={camera: [0, k / fps]})` gives them: `item[camera]` (2, C, H, W) float32 in [0, 1],
    `item[camera + "_is_pad"]` (2,) (True where t + k is past the episode's end: the episode's last frame is
    repeated), `task`, `episode_index`, `frame_index`. Read with `lary.lerobot`, so that `lerobot` is not needed;
    with it installed, use `LeRobotDataset` itself."""

    def __init__(self, path_or_repo_id: str, camera: str | None, k: int):
        self.dataset = open_lerobot(path_or_repo_id, camera=camera)
        self.camera, self.k = self.dataset.camera, k
        self.tasks = read_tasks(self.dataset.root, self.dataset.version)
        self.lengths = [info.length for info in self.dataset.episodes]
        self.items = [(e, t) for e, length in enumerate(self.lengths) for t in range(length)]
        self._rows: dict[int, Rows] = {}

    def task_texts(self) -> list[str]:
        return list(self.tasks.values())

    def collate(self, items: list[dict]) -> dict:
        """`default_collate`: a camera's frames have one size."""
        return default_collate(items)

    def read_rows(self, e: int) -> Rows:
        """Episode `e`'s rows: its table, and where each row's frame is in its video."""
        info = self.dataset.episodes[e]
        episode, video = self.dataset.read_episode(info), probe_video(info.video_file)
        columns = episode.columns
        tasks = [self.tasks.get(int(i), "") for i in columns["task_index"]] if "task_index" in columns else [""] * info.length
        return Rows(info.video_file, self.dataset.frame_positions(episode, video.times), video.pts, tasks,
                    info.episode_index, columns["frame_index"])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        e, t = self.items[index]
        if e not in self._rows:
            self._rows[e] = self.read_rows(e)
        rows = self._rows[e]
        frames = []
        for row in (t, min(t + self.k, self.lengths[e] - 1)):  # seek to the keyframe before the frame, decode to it
            position = int(rows.positions[row])
            frame = next(decode_video(rows.video, position, position + 1, int(rows.pts[position])))
            frames.append(torch.from_numpy(frame.rgb).permute(2, 0, 1).float() / 255)
        return {
            self.camera: torch.stack(frames),
            f"{self.camera}_is_pad": torch.tensor([False, t + self.k >= self.lengths[e]]),
            "task": rows.tasks[t],
            "episode_index": rows.episode_index,
            "frame_index": int(rows.frame_indices[t]),
        }


class VideoFramePairs(FramePairs):
    """The same items from video files: video i is episode i, each of its frames a row (`frame_index` its number in
    the video), `tasks[i]` its task text; the frames are under `VIDEO_CAMERA`."""

    def __init__(self, videos: list[Path], tasks: list[str], k: int):
        self.videos, self.tasks, self.camera, self.k = videos, tasks, VIDEO_CAMERA, k
        self.probes = [probe_video(video) for video in videos]
        self.lengths = [len(probe.pts) for probe in self.probes]
        self.items = [(e, t) for e, length in enumerate(self.lengths) for t in range(length)]
        self._rows = {}

    def task_texts(self) -> list[str]:
        return self.tasks

    def collate(self, items: list[dict]) -> dict:
        """`default_collate`, but the frames stay a list of (2, C, H, W) tensors: videos may differ in size (the
        labeler takes such a list; a VLA's image processor resizes them)."""
        batch = default_collate([{key: value for key, value in item.items() if key != self.camera} for item in items])
        return batch | {self.camera: [item[self.camera] for item in items]}

    def read_rows(self, e: int) -> Rows:
        frames = np.arange(self.lengths[e])
        return Rows(self.videos[e], frames, self.probes[e].pts, [self.tasks[e]] * len(frames), e, frames)


def find_videos(patterns: list[str]) -> list[Path]:
    """The video files `patterns` name (files or globs), sorted; none is an error naming the patterns."""
    videos = sorted({Path(path) for pattern in patterns for path in glob.glob(pattern, recursive=True)
                     if Path(path).is_file()})
    if not videos:
        raise LaryError(f"--videos {' '.join(patterns)}: no video file")
    return videos


def synthetic_videos(folder: Path, seed: int, count: int = 4, num_frames: int = 12) -> tuple[list[Path], list[str]]:
    """`count` clips of a shape moving in one of 8 directions (the clips the embedded model was trained on), written
    as video files in `folder`, and their tasks (`move <direction>`)."""
    clips = make_clips(count, seed=seed, num_frames=num_frames)
    videos = [write_video(clip.frames, folder / f"clip_{i}.mkv") for i, clip in enumerate(clips)]
    return videos, [f"move {DIRECTIONS[clip.direction]}" for clip in clips]


def read_tasks(root: Path, version: str) -> dict[int, str]:
    """task_index -> task text: `meta/tasks.parquet` (v3.0, indexed by the text) or `meta/tasks.jsonl` (v2.1)."""
    if version == "v3.0":
        tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
        return {int(index): str(task) for task, index in zip(tasks.index, tasks["task_index"])}
    lines = (root / "meta" / "tasks.jsonl").read_text().splitlines()
    return {line["task_index"]: line["task"] for line in map(json.loads, filter(None, lines))}


def tiny_language_model(texts: list[str]):
    """A stand-in for a pretrained language model, built offline: a word-level tokenizer of `texts` and a 2-layer
    Llama. With a real one: `AutoTokenizer.from_pretrained(name)`, `AutoModelForCausalLM.from_pretrained(name)`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = {"unk_token": "[UNK]", "pad_token": "[PAD]", "bos_token": "<s>", "eos_token": "</s>"}
    words = dict.fromkeys(word for text in texts for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text))
    vocab = {token: i for i, token in enumerate([*specials.values(), *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer, LlamaForCausalLM(config)


def pretraining_batch(batch: dict, camera: str, tokenizer, tokens: LatentActionTokens) -> dict[str, torch.Tensor]:
    """`<bos> prompt <ACT_a> <ACT_b> ...` per pair, right-padded; `labels` are the action tokens and -100 elsewhere
    (prompt, padding, and pairs whose second frame is padding)."""
    actions = tokens.encode(batch["action_indices"])  # (B, n) token ids
    valid = ~batch[f"{camera}_is_pad"].any(dim=1)
    sequences, labels = [], []
    for task, action, keep in zip(batch["task"], actions.tolist(), valid.tolist()):
        prompt = [tokenizer.bos_token_id, *tokenizer(PROMPT.format(task=task), add_special_tokens=False).input_ids]
        sequences.append(prompt + action)
        labels.append([-100] * len(prompt) + (action if keep else [-100] * len(action)))
    length = max(map(len, sequences))
    pad = [tokenizer.pad_token_id]
    return {
        "input_ids": torch.tensor([s + pad * (length - len(s)) for s in sequences]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences]),
        "labels": torch.tensor([s + [-100] * (length - len(s)) for s in labels]),
    }


def frame_pairs(args: argparse.Namespace, scratch: Path) -> FramePairs:
    """The pairs of --lerobot, of --videos, or of clips generated in `scratch`."""
    if args.lerobot:
        return FramePairs(args.lerobot, args.camera, args.stride)
    if args.videos:
        videos = find_videos(args.videos)
        return VideoFramePairs(videos, [args.task or video.stem.replace("_", " ") for video in videos], args.stride)
    return VideoFramePairs(*synthetic_videos(scratch, args.seed), args.stride)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--lerobot", help="a LeRobot dataset (v3.0 or v2.1): a folder or a Hub id")
    source.add_argument("--videos", nargs="+", metavar="FILE_OR_GLOB",
                        help="video files, each an episode (default without --lerobot: clips generated here)")
    parser.add_argument("--camera", help="--lerobot's camera feature (default: the only one)")
    parser.add_argument("--task", help="--videos' instruction (default: each file's name, _ as spaces)")
    parser.add_argument("--stride", type=int, default=3, help="k: the pairs are frames (t, t + k)")
    parser.add_argument("--model", default=str(default_model()), help="a LAPA-DINOv3 folder or Hub id")
    parser.add_argument("--lm", help="a causal language model (Hub id or folder); default: a tiny one built here")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per batch (and per labeler forward pass)")
    parser.add_argument("--dtype", default="float32", help="the labeler's dtype (bfloat16 on a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order, the models built here and the "
                                                             "generated clips")
    args = parser.parse_args(argv)
    if args.camera and not args.lerobot or args.task and not args.videos:
        parser.error("--camera goes with --lerobot, --task with --videos")
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="vla-example-") as scratch:
        return run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> dict:
    """The steps of docs/vla.md's worked example; returns the batch, the inputs, the loss and the models."""
    # 1. Frame pairs (t, t + k): of a LeRobot dataset, of video files, or of clips generated here (read first: a
    #    wrong input is said before the model loads)
    pairs = frame_pairs(args, scratch)

    # 2. The latent action model as a labeler (on the GPU when there is one, without gradients), labelling the pairs
    #    batch by batch in the DataLoader's collate (num_workers=0: the collate runs the model in this process)
    labeler = LatentActionLabeler.from_pretrained(args.model, dtype=args.dtype, batch_size=args.batch_size)
    collate = labeler.collate(pairs.camera, base_collate=pairs.collate)
    loader = DataLoader(pairs, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    batch = next(iter(loader))

    # 3. The codes as tokens of the language model: <ACT_0> .. <ACT_{K-1}>, and its embeddings resized to them
    if args.lm:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer, lm = AutoTokenizer.from_pretrained(args.lm), AutoModelForCausalLM.from_pretrained(args.lm)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        tokenizer.bos_token = tokenizer.bos_token or tokenizer.eos_token
    else:
        tokenizer, lm = tiny_language_model([PROMPT.format(task=task) for task in pairs.task_texts()])
    tokens = LatentActionTokens.add_to(tokenizer, labeler.config)
    lm.resize_token_embeddings(len(tokenizer))
    lm.to(labeler.device).train()

    # 4. The pretraining batch: the instruction, then the pair's latent action as n tokens to predict
    inputs = {name: value.to(labeler.device) for name, value in pretraining_batch(batch, pairs.camera, tokenizer, tokens).items()}

    # 5. One training step of the language model, the loss on the action tokens only
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    loss = lm(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()

    first = inputs["input_ids"][0][inputs["attention_mask"][0].bool()]
    print(f"{len(pairs)} pairs (t, t + {args.stride}) of {pairs.camera} (t + {args.stride} past an episode's end: padded, "
          f"not in the loss); a batch of {len(batch['task'])}")
    print(f"sample 0: {tokenizer.decode(first[~tokens.is_action(first)], skip_special_tokens=True)!r} -> codes "
          f"{tokens.decode(first[tokens.is_action(first)]).tolist()}")
    print(f"loss on the action tokens: {loss.item():.4f}")
    return {"batch": batch, "inputs": inputs, "loss": loss.item(), "tokenizer": tokenizer, "tokens": tokens, "lm": lm}


if __name__ == "__main__":
    with one_line_errors(Path(__file__).name):  # what the user can fix: one line, exit code 2
        main()
