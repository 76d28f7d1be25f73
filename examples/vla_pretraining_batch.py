"""From a LeRobot dataset to a VLA's pretraining batch: latent actions labelled on the fly, written as tokens of a
language model, and one training step on text plus latent-action tokens (the loss on the action tokens).

    python examples/vla_pretraining_batch.py --lerobot lerobot/aloha_sim_insertion_human --stride 15 \\
        --model AGI-Eval/LAPA-DINOv3 --lm HuggingFaceTB/SmolLM2-135M

Defaults run offline on a CPU: the embedded tiny LAPA-DINOv3 (trained on synthetic clips only: its codes of real
video mean nothing) and a tiny language model built here. See docs/vla.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from lary import LatentActionLabeler, LatentActionTokens
from lary.frames import decode_video, probe_video
from lary.hub import default_model
from lary.lerobot import open_lerobot

PROMPT = "What action should the robot take to {task}?"


class FramePairs(Dataset):
    """Frames t and t + k of a LeRobot dataset's camera, item for item as `LeRobotDataset(repo_id,
    delta_timestamps={camera: [0, k / fps]})` gives them: `item[camera]` (2, C, H, W) float32 in [0, 1],
    `item[camera + "_is_pad"]` (2,) (True where t + k is past the episode's end: the episode's last frame is
    repeated), `task`, `episode_index`, `frame_index`. Read with `lary.lerobot`, so that `lerobot` is not needed;
    with it installed, use `LeRobotDataset` itself."""

    def __init__(self, path_or_repo_id: str, camera: str | None, k: int):
        self.dataset = open_lerobot(path_or_repo_id, camera=camera)
        self.camera, self.k = self.dataset.camera, k
        self.items = [(info, t) for info in self.dataset.episodes for t in range(info.length)]
        self.tasks = read_tasks(self.dataset.root, self.dataset.version)
        self._episodes: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _episode(self, info):
        """The episode's rows, its video's timestamps and where each row's frame is in the video (cached)."""
        if info.episode_index not in self._episodes:
            episode, video = self.dataset.read_episode(info), probe_video(info.video_file)
            self._episodes[info.episode_index] = (episode, video, self.dataset.frame_positions(episode, video.times))
        return self._episodes[info.episode_index]

    def __getitem__(self, index: int) -> dict:
        info, t = self.items[index]
        episode, video, positions = self._episode(info)
        rows = [t, min(t + self.k, info.length - 1)]
        frames = []
        for row in rows:  # seek to the keyframe before the frame, decode up to it
            position = int(positions[row])
            frame = next(decode_video(info.video_file, position, position + 1, int(video.pts[position])))
            frames.append(torch.from_numpy(frame.rgb).permute(2, 0, 1).float() / 255)
        columns = episode.columns
        return {
            self.camera: torch.stack(frames),
            f"{self.camera}_is_pad": torch.tensor([False, t + self.k >= info.length]),
            "task": self.tasks.get(int(columns["task_index"][t]), "") if "task_index" in columns else "",
            "episode_index": info.episode_index,
            "frame_index": int(columns["frame_index"][t]),
        }


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lerobot", required=True, help="a LeRobot dataset (v3.0 or v2.1): a folder or a Hub id")
    parser.add_argument("--camera", help="its camera feature (default: the only one)")
    parser.add_argument("--stride", type=int, default=3, help="k: the pairs are frames (t, t + k)")
    parser.add_argument("--model", default=str(default_model()), help="a LAPA-DINOv3 folder or Hub id")
    parser.add_argument("--lm", help="a causal language model (Hub id or folder); default: a tiny one built here")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32", help="the labeler's dtype (bfloat16 on a GPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    # 1. The latent action model as a labeler: on the GPU when there is one, without gradients
    labeler = LatentActionLabeler.from_pretrained(args.model, dtype=args.dtype, batch_size=args.batch_size)

    # 2. Frame pairs (t, t + k), labelled batch by batch in the DataLoader's collate (num_workers=0: the collate runs
    #    the model, which stays in this process)
    pairs = FramePairs(args.lerobot, args.camera, args.stride)
    loader = DataLoader(pairs, batch_size=args.batch_size, shuffle=True, collate_fn=labeler.collate(pairs.camera))
    batch = next(iter(loader))

    # 3. The codes as tokens of the language model: <ACT_0> .. <ACT_{K-1}>, and its embeddings resized to them
    if args.lm:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer, lm = AutoTokenizer.from_pretrained(args.lm), AutoModelForCausalLM.from_pretrained(args.lm)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        tokenizer.bos_token = tokenizer.bos_token or tokenizer.eos_token
    else:
        tokenizer, lm = tiny_language_model([PROMPT.format(task=task) for task in pairs.tasks.values()])
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
    main()
