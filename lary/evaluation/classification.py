"""The LARY classification probe: projector, temporal embedding, attentive pooler, linear head; several heads with
their own (lr, weight decay) trained at once, as in LARYBench's frozen-feature video classification eval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from .training import (
    Rows,
    StepEstimate,
    selection_record,
    split_for_selection,
    steps_per_epoch,
    train_probe,
    warmup_cosine,
)

# (lr, weight decay) of the five heads in LARYBench `classification/configs/eval/vitl/manipulation.yaml`.
PAPER_HEADS = ((5e-3, 0.01), (3e-3, 0.1), (1e-3, 0.4), (3e-4, 0.8), (1e-4, 0.01))


@dataclass
class ClassificationConfig:
    hidden_dim: int = 768
    pooler_depth: int = 4
    attention_heads: int = 16
    mlp_ratio: float = 4.0
    heads: tuple[tuple[float, float], ...] = PAPER_HEADS
    epochs: int = 20
    batch_size: int = 256
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    class_balanced: bool = True
    seed: int = 0
    selection: str = "validation"  # the head is chosen on the validation split (LARYBench), or "held-out"
    held_out_fraction: float = 0.1  # with "held-out": the share of train rows set aside to choose the head on


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Queries attend to the tokens; no output projection (as in the reference pooler)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)

    def forward(self, queries: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(queries).reshape(b, -1, h, d // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d)


def feed_forward(dim: int, mlp_ratio: float) -> nn.Sequential:
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class SelfAttentionBlock(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """The tokens are normalized before the cross-attention, the query only before the MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, mlp_ratio)

    def forward(self, queries: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        queries = queries + self.xattn(queries, self.norm1(x))
        return queries + self.mlp(self.norm2(queries))


class AttentivePooler(nn.Module):
    """`depth - 1` self-attention blocks over the tokens, then one learned query cross-attends to them."""

    def __init__(self, dim: int, num_heads: int, depth: int, mlp_ratio: float = 4.0, init_std: float = 0.02):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, num_heads, mlp_ratio) for _ in range(depth - 1))
        self.cross_block = CrossAttentionBlock(dim, num_heads, mlp_ratio)
        nn.init.trunc_normal_(self.query, std=init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)
        # Depth-scaled init of the residual branches' last layers.
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_((2.0 * layer_id) ** 0.5)
                block.mlp[2].weight.div_((2.0 * layer_id) ** 0.5)
            self.cross_block.mlp[2].weight.div_((2.0 * max(1, len(self.blocks))) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.cross_block(self.query.expand(len(x), -1, -1), x).squeeze(1)


class AttentiveProbe(nn.Module):
    """Linear(D -> hidden) + LayerNorm + GELU, a learned embedding per pair of a clip, attentive pooling, a linear head.

    Input `[batch, tokens, D]` (image pairs) or `[batch, pairs, tokens, D]` (clips).
    """

    def __init__(self, input_dim: int, num_classes: int, num_pairs: int, config: ClassificationConfig):
        super().__init__()
        dim = config.hidden_dim
        self.projector = nn.Sequential(nn.Linear(input_dim, dim), nn.LayerNorm(dim), nn.GELU())
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_pairs, 1, dim))
        self.pooler = AttentivePooler(dim, config.attention_heads, config.pooler_depth, config.mlp_ratio)
        self.linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.temporal_embed, std=0.02)
        nn.init.trunc_normal_(self.projector[0].weight, std=0.02)
        nn.init.zeros_(self.projector[0].bias)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.projector(features)
        if x.dim() == 4:
            x = (x + self.temporal_embed).flatten(1, 2)
        return self.linear(self.pooler(x))


class MultiHeadProbe(nn.Module):
    """Independent probes on the same input; returns logits `[heads, batch, classes]`."""

    def __init__(self, probes: list[AttentiveProbe]):
        super().__init__()
        self.probes = nn.ModuleList(probes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([probe(features) for probe in self.probes])


@dataclass
class ClassificationResult:
    accuracy: float
    best_head: int
    predictions: np.ndarray
    num_classes: int
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    diverged_heads: list[int] = field(default_factory=list)  # their loss went NaN or infinite: never chosen


def class_balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-row sampling weight 1 / (count of its class): every class is drawn equally often."""
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


def train_classification(
    train_features: Rows,
    train_labels: torch.Tensor,
    val_features: Rows,
    val_labels: torch.Tensor,
    config: ClassificationConfig,
    accelerator: Accelerator,
    num_classes: int | None = None,
    on_estimate: StepEstimate | None = None,
) -> ClassificationResult:
    """Train all heads; the reported accuracy is the chosen head's top-1 on the validation rows after the last epoch.

    The head is the one with the best top-1 after the last epoch on the validation rows (`config.selection`
    "validation", as LARYBench), or on `config.held_out_fraction` of the train rows, which it then does not train on
    ("held-out": the reported accuracy was not tuned on). The features are `[rows, tokens, D]` or
    `[rows, pairs, tokens, D]`, each step reading only its process's rows. `on_estimate`: see `training.train_epochs`.
    """
    num_classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    num_pairs = train_features.shape[1] if len(train_features.shape) == 4 else 1
    (train_features, train_labels), held_out = split_for_selection(
        config.selection, config.held_out_fraction, config.seed, train_features, train_labels
    )
    torch.manual_seed(config.seed)
    model = MultiHeadProbe(
        [AttentiveProbe(train_features.shape[-1], num_classes, num_pairs, config) for _ in config.heads]
    )
    optimizer = torch.optim.AdamW(
        [{"params": probe.parameters(), "lr": lr, "weight_decay": wd} for probe, (lr, wd) in zip(model.probes, config.heads)]
    )
    steps = steps_per_epoch(len(train_features), config.batch_size)
    weights = class_balanced_weights(train_labels) if config.class_balanced else None
    num_heads = len(config.heads)

    def batch_loss(logits: torch.Tensor, rows: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        labels = train_labels[rows].to(accelerator.device)
        losses = torch.stack(
            [F.cross_entropy(head, labels, label_smoothing=config.label_smoothing, reduction="sum") for head in logits]
        )
        correct = (logits.argmax(-1) == labels).sum(-1)
        # loss per head, correct per head, rows; the objective sums this process's rows, scaled to the global mean
        stats = [*losses.tolist(), *correct.tolist(), len(rows)]
        return losses.sum() * accelerator.num_processes / len(batch), stats

    history = []
    scored = (val_features, None if held_out is None else held_out[0])
    epochs = train_probe(
        model, optimizer, warmup_cosine(int(config.warmup_epochs * steps), config.epochs * steps), train_features,
        batch_loss, scored, lambda rows: (num_heads, rows, num_classes), accelerator, epochs=config.epochs,
        batch_size=config.batch_size, seed=config.seed, weights=weights, desc="classification probe",
        on_estimate=on_estimate,
    )
    for epoch, sums, (logits, held_logits) in epochs:
        val_loss = [F.cross_entropy(head, val_labels).item() for head in logits]
        val_accuracy = [(head.argmax(-1) == val_labels).double().mean().item() for head in logits]
        entry = {
            "epoch": epoch,
            "train_loss": [value / sums[-1] for value in sums[:num_heads]],
            "train_accuracy": [value / sums[-1] for value in sums[num_heads:-1]],
            "validation_loss": val_loss,
            "validation_accuracy": val_accuracy,
        }
        if held_out is not None:
            held_labels = held_out[1]
            entry["held_out_accuracy"] = [(head.argmax(-1) == held_labels).double().mean().item() for head in held_logits]
        history.append(entry)
    scores = history[-1]["held_out_accuracy" if held_out is not None else "validation_accuracy"]
    # a head whose loss went NaN predicts the argmax of NaN logits: its accuracy is a number that means nothing
    diverged = [head for head, losses in enumerate(zip(history[-1]["train_loss"], history[-1]["validation_loss"]))
                if not all(map(math.isfinite, losses))]
    scores = [-math.inf if head in diverged else score for head, score in enumerate(scores)]
    best_head = int(np.argmax(scores))
    selection = selection_record(config.selection, config.held_out_fraction, held_out, len(train_labels),
                                 head=best_head, score=scores[best_head])
    return ClassificationResult(
        accuracy=math.nan if len(diverged) == num_heads else history[-1]["validation_accuracy"][best_head],
        best_head=best_head,
        predictions=logits[best_head].argmax(-1).numpy(),
        num_classes=num_classes,
        history=history,
        config=asdict(config),
        selection=selection,
        diverged_heads=diverged,
    )
