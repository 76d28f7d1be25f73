"""What both probes share: their training (`train_probe`: the loop of `train_epochs`, with batch order, sharding a
global batch over processes and reading rows ahead, then each epoch's outputs on the rows that score it), schedules,
and the held-out slice that `--selection held-out` chooses the head or epoch on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from lary.errors import LaryError
from lary.logs import progress_hidden

Batch = TypeVar("Batch")


class Rows(Protocol):
    """Feature rows fetched by a 1-D tensor of row numbers: a dense tensor, or a lazy `features.FeatureStore`."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor: ...


SELECTIONS = ("validation", "held-out")
TIMED_STEPS = 3  # steps timed, after the first (which warms up), for the run's expected time

# What a training loop reports once it has timed `TIMED_STEPS` steps: (seconds per step, steps of the whole run).
StepEstimate = Callable[[float, int], None]


class RowSubset:
    """Rows `index` of `rows`, renumbered from 0: a slice of a split that still reads only the rows it is asked for."""

    def __init__(self, rows: Rows, index: torch.Tensor):
        self.rows, self.index = rows, index

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.rows.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.rows[self.index[rows]]


def held_out_split(num_rows: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row numbers to train on and to hold out (`fraction` of them, at least one each), drawn at random from `seed`;
    both sorted, so reads keep the split's order."""
    if num_rows < 2:
        raise LaryError(f"a held-out slice needs at least 2 train rows; the train split has {num_rows}")
    held = min(max(1, round(fraction * num_rows)), num_rows - 1)
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))
    return order[held:].sort().values, order[:held].sort().values


def split_for_selection(
    selection: str, fraction: float, seed: int, features: Rows, *targets: torch.Tensor
) -> tuple[tuple, tuple | None]:
    """`(features, *targets)` to train on, and the rows to choose the head or epoch on: None for `selection`
    "validation" (the validation split, as LARYBench), else ("held-out") `fraction` of the train rows, set aside."""
    if selection == "validation":
        return (features, *targets), None
    if selection != "held-out":
        raise LaryError(f"selection must be one of {SELECTIONS}, not {selection!r}")
    fit, held = held_out_split(len(features), fraction, seed)
    return (RowSubset(features, fit), *(t[fit] for t in targets)), (RowSubset(features, held), *(t[held] for t in targets))


def selection_record(selection: str, fraction: float, held_out: tuple | None, train_rows: int, **choice) -> dict:
    """What `results.json` says of the choice: on which rows, what was chosen and its score (held-out: how many rows)."""
    record = {"on": selection, **choice}
    if held_out is not None:
        record.update(held_out_fraction=fraction, held_out_rows=len(held_out[0]), train_rows=train_rows)
    return record


def epoch_batches(
    num_rows: int, batch_size: int, generator: torch.Generator, weights: torch.Tensor | None = None
) -> Iterator[torch.Tensor]:
    """Row indices of one epoch, split into global batches: a permutation, or `num_rows` draws with replacement
    proportional to `weights` (class-balanced sampling)."""
    if weights is None:
        order = torch.randperm(num_rows, generator=generator)
    else:
        order = torch.multinomial(weights, num_rows, replacement=True, generator=generator)
    return iter(order.split(batch_size))


def local_rows(batch: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's share of a global batch (every `num_processes`-th row)."""
    return batch[accelerator.process_index :: accelerator.num_processes]


BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, list[float]]]


def train_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    features: Rows,
    batch_loss: BatchLoss,
    epochs: int,
    batch_size: int,
    accelerator: Accelerator,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
    desc: str = "probe",
    on_estimate: StepEstimate | None = None,
) -> Iterator[tuple[int, list[float]]]:
    """The probes' training loop: yields `(epoch, statistics)` after each epoch, for the caller to evaluate.

    Each step reads this process's rows of a global batch (the next batch read meanwhile), runs `model` on them and
    calls `batch_loss(outputs, rows, batch)` with this process's row numbers and the global batch; it returns the
    objective to back-propagate (scaled so that the gradient averaged over processes is the global batch's) and
    per-step statistics, which are summed over steps and processes. Batches smaller than the number of processes are
    skipped, so that every process steps together. `on_estimate` is called once, when steps 2 to `TIMED_STEPS + 1`
    have been timed, with their mean time and the number of steps of all epochs (not when the run is shorter).
    """
    total_steps = epochs * sum(1 for start in range(0, len(features), batch_size)
                               if min(batch_size, len(features) - start) >= accelerator.num_processes)
    step, timed_from = 0, 0.0
    for epoch in tqdm(range(1, epochs + 1), desc=desc, disable=not accelerator.is_main_process or progress_hidden()):
        sums: list[float] = []
        batches = epoch_batches(len(features), batch_size, generator, weights)
        batches = (batch for batch in batches if len(batch) >= accelerator.num_processes)
        for batch, rows_features in read_ahead(batches, lambda batch: features[local_rows(batch, accelerator)]):
            rows = local_rows(batch, accelerator)
            objective, stats = batch_loss(model(rows_features.to(accelerator.device)), rows, batch)
            accelerator.backward(objective)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            sums = [total + value for total, value in zip(sums, stats)] if sums else list(stats)
            step += 1
            if step == 1:
                timed_from = time.perf_counter()
            elif step == TIMED_STEPS + 1 and on_estimate is not None and total_steps > step:
                on_estimate((time.perf_counter() - timed_from) / TIMED_STEPS, total_steps)
        yield epoch, reduce_sum(sums, accelerator)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Optimizer steps of an epoch over `rows` rows (the last batch may be short), for the LR schedules."""
    return -(-rows // batch_size)


def train_probe(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_factor: Callable[[int], float],
    features: Rows,
    batch_loss: BatchLoss,
    scored: tuple[Rows | None, ...],
    output_shape: Callable[[int], tuple[int, ...]],
    accelerator: Accelerator,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    weights: torch.Tensor | None = None,
    desc: str = "probe",
    on_estimate: StepEstimate | None = None,
) -> Iterator[tuple[int, list[float], list[torch.Tensor | None]]]:
    """Train a probe and yield `(epoch, statistics, outputs)` after each epoch: `outputs` are `model`'s on each of the
    `scored` row sets (None for None), shaped `output_shape(rows)` (see `predict`), on CPU.

    `optimizer` steps under the LR multiplier `lr_factor` (of the step); the batch order is drawn from `seed`, with
    `weights` if given; `batch_loss`, the statistics and `on_estimate` are those of `train_epochs`."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model, optimizer = accelerator.prepare(model, optimizer)
    probe = accelerator.unwrap_model(model)
    trained = train_epochs(
        model, optimizer, scheduler, features, batch_loss, epochs, batch_size, accelerator,
        torch.Generator().manual_seed(seed), weights, desc=desc, on_estimate=on_estimate,
    )
    for epoch, sums in trained:
        outputs = [None if rows is None else predict(probe, rows, batch_size, accelerator, output_shape(len(rows)))
                   for rows in scored]
        yield epoch, sums, outputs


def read_ahead(batches: Iterable[Batch], read: Callable[[Batch], torch.Tensor]) -> Iterator[tuple[Batch, torch.Tensor]]:
    """`(batch, read(batch))` for each batch, the next one read in a background thread while the caller computes on
    this one (the values are the same as reading in turn)."""
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(read, batch)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup from 0, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_constant(warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup from 0, then constant."""
    return lambda step: min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0


@torch.no_grad()
def predict(
    model: torch.nn.Module, inputs: Rows, batch_size: int, accelerator: Accelerator, output_shape: tuple[int, ...]
) -> torch.Tensor:
    """Outputs for all rows of `inputs`, each process reading and computing only its share; `model(x)` maps
    `[b, ...]` to `[*output_shape[:-2], b, output_shape[-1]]` with the row axis second to last. Returned on CPU on
    every process."""
    model.eval()
    outputs = torch.zeros(output_shape, device=accelerator.device)
    rows = torch.arange(len(inputs))[accelerator.process_index :: accelerator.num_processes]
    for chunk, features in read_ahead(rows.split(batch_size), inputs.__getitem__):
        outputs[..., chunk.to(accelerator.device), :] = model(features.to(accelerator.device)).float()
    model.train()
    return accelerator.reduce(outputs, "sum").cpu()


def reduce_sum(values: list[float], accelerator: Accelerator) -> list[float]:
    """Sum per-process statistics over processes."""
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(tensor, "sum").cpu().tolist()
