"""The LAPA training recipe with accelerate: frozen DINOv3, feature-MSE loss, NSVQ with dead-code replacement.

Facts from LAPA / LARYBench's `laq_trainer_feature.py`: Adam(W) with betas (0.9, 0.99) and no weight decay,
gradient norm clipped to 0.5, codebook entries used by less than 0.1 of a batch replaced at steps 10..100 every
10, every 100 up to 1000 and every 500 up to 5000, a random frame stride per sample.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DINOv3ViTConfig, DINOv3ViTModel, get_scheduler

from lary import LapaDinov3Model, LapaDinov3Processor, processes
from lary.configs.parser import to_dict
from lary.configs.train import TrainConfig
from lary.errors import LaryError
from lary.hub import build_config, export, load_config, load_pretrained
from lary.jsonfile import read_json_object
from lary.logs import progress_hidden
from lary.model_card import known_base_model
from lary.training import checkpoints
from lary.training.data import StepBatchSampler, TrainingPairs, load_clips
from lary.training.features_cache import compute_features
from lary.training.report import plot_curves, training_provenance

logger = logging.getLogger(__name__)


def replacement_due(step: int) -> bool:
    """Whether dead codes are replaced after optimizer step `step` (the LAPA schedule)."""
    return (step < 100 and step % 10 == 0) or (step < 1000 and step % 100 == 0) or (step < 5000 and step % 500 == 0)



def build_model(
    backbone: str, config: str | None = None, image_size: int | None = None, allow_missing_weights: bool = False
) -> LapaDinov3Model:
    """A fresh LAQ on a DINOv3 backbone: a model id or folder (its weights, which must all fit unless
    `allow_missing_weights`), or a config JSON (random weights)."""
    laq = read_json_object(config, "model config") if config else {}
    if "backbone_config" in laq:
        raise LaryError(f"{config}: the backbone comes from --backbone, not from the model config")
    if backbone.endswith(".json"):
        data = read_json_object(backbone, "backbone config")
        data.pop("transformers_version", None)
        backbone_config = DINOv3ViTConfig(**data)
    else:
        backbone_config = load_config(DINOv3ViTConfig, backbone, "--backbone")
    if image_size is not None:
        backbone_config.image_size = image_size
    sources = ", ".join(str(source) for source in (backbone, config) if source)  # where a bad value came from
    # sizes in range and within the parameter budget before any weights load or the model is allocated
    model_config = build_config(sources, backbone_config=backbone_config, **laq)
    pretrained = None
    if not backbone.endswith(".json"):
        pretrained = load_pretrained(DINOv3ViTModel, backbone, "--backbone", allow_missing_weights, dtype=torch.float32)
    model = LapaDinov3Model(model_config)
    if pretrained is not None:
        model.backbone.load_state_dict(pretrained.state_dict())
    return model


@torch.no_grad()
def replace_dead_codes(accelerator: Accelerator, model: LapaDinov3Model, num_batches: int, seed: int, step: int) -> int:
    """Dead-code replacement from the usage summed over processes, with the same RNG everywhere, so that the
    replicas keep identical codebooks."""
    quantizer = model.quantizer
    quantizer.code_usage.copy_(accelerator.reduce(quantizer.code_usage.clone(), reduction="sum"))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return quantizer.replace_unused_codes(num_batches, generator=generator)


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step (they are logged again)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def train(args: TrainConfig) -> Path:
    """Train and write `args.out`: the final Hub-ready model, `checkpoints/`, `log.jsonl`, `training_curves.png`."""
    accelerator = processes.accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        # `code_usage` is a per-process count (summed at replacement); DDP must not overwrite it with rank 0's
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    out = Path(args.out)
    set_seed(args.seed)
    model = build_model(args.backbone, args.model_config, args.image_size, args.allow_missing_weights)
    if args.gradient_checkpointing:
        # the quantizer's layers recompute their activations in the backward pass (the frozen backbone keeps none)
        # transformers' newer name; 5.5 and older (LeRobot's pin) have only gradient_checkpointing_enable
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    processor = LapaDinov3Processor(size=model.config.backbone_config.image_size)
    clips = load_clips(args.data, processor)
    if not clips:
        raise LaryError(f"no clips of two or more frames in --data {' '.join(args.data)}")
    model.to(accelerator.device)
    features = compute_features(model, processor, clips, accelerator) if args.cache_features else None

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay)
    # the schedule counts optimizer steps whatever the number of processes, so it is not `prepare`d
    scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.num_processes > 1:
        # The processes seeded alike to build the same (random) backbone and initial weights; NSVQ's noise must
        # differ between them, as it does between the rows of one batch on one process (resume restores each state).
        torch.manual_seed(args.seed + accelerator.process_index)

    start = checkpoints.resume(accelerator, unwrapped, out) if args.resume else 0
    sampler = StepBatchSampler(
        [len(clip) for clip in clips], args.batch_size, args.steps, args.stride_range, args.seed,
        start_step=start, process_index=accelerator.process_index, num_processes=accelerator.num_processes,
    )
    # its own generator: creating the iterator must not draw from the global RNG that NSVQ's noise uses
    loader = DataLoader(
        TrainingPairs(clips, processor, features), batch_sampler=sampler, num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    log_path = out / "log.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(log_path, start)
        (out / "training_args.json").write_text(json.dumps(to_dict(args), indent=2))
        logger.info(
            "%d clips, %d frames, %d process(es), steps %d->%d, features %s", len(clips), sum(len(c) for c in clips),
            accelerator.num_processes, start, args.steps, "cached" if features is not None else "computed per step",
        )

    model.train()
    global_batch = args.batch_size * accelerator.num_processes
    codebook_size = unwrapped.config.codebook_size
    progress = tqdm(total=args.steps, initial=start, disable=not accelerator.is_local_main_process or progress_hidden(), desc="train")
    for step, batch in enumerate(loader, start=start + 1):
        output = model(**{key: value.to(accelerator.device) for key, value in batch.items()})
        accelerator.backward(output.loss)
        accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        replaced = replace_dead_codes(accelerator, unwrapped, global_batch, args.seed, step) if replacement_due(step) else 0

        if step % args.log_every == 0 or step == args.steps:
            loss = accelerator.reduce(output.loss.detach().float(), reduction="mean").item()
            indices = accelerator.gather(output.action_indices.detach())
            usage = torch.bincount(indices.flatten(), minlength=codebook_size).float() / indices.numel()
            record = {
                "step": step,
                "loss": loss,
                "perplexity": math.exp(-(usage * torch.log(usage + 1e-12)).sum().item()),
                "codebook_usage": (usage > 0).float().mean().item(),
                "replaced_codes": replaced,
                "lr": scheduler.get_last_lr()[0],
            }
            if accelerator.is_main_process:
                with log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
            progress.set_postfix(loss=f"{loss:.4f}", ppl=f"{record['perplexity']:.2f}", usage=f"{record['codebook_usage']:.2f}")
        if step % args.save_every == 0 or step == args.steps:
            checkpoints.save(accelerator, unwrapped, out, step)
        progress.update(1)
    progress.close()

    if accelerator.is_main_process:
        provenance = training_provenance(log_path, args)
        export(unwrapped, out, provenance=provenance, base_model=known_base_model(unwrapped.config, args.backbone))
        plot_curves(log_path, out / "training_curves.png")
        logger.info("saved the trained model to %s", out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out
