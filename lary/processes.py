"""accelerate's state for each command, on the device and with the mixed precision the command asks for.

accelerate sets up one state per process. A later `PartialState(cpu=...)` keeps the first one's device (a CPU run and
then a GPU run both go to the CPU), and a later `Accelerator` with another device or precision raises "restart your
runtime". In a process of its own (a notebook, a benchmark) `lary` sets the state up again instead; processes under
`accelerate launch` share theirs, so there another `--cpu` or precision is an error.

Every command's processes end with their launcher, if they have one (`lary.launcher`).
"""

from __future__ import annotations

from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from lary.errors import LaryError
from lary.launcher import end_with_launcher


def _set_up_for(cpu: bool, mixed_precision: str | None = None) -> None:
    """Forget a state that was set up for another device or precision, unless processes share it."""
    partial, full = PartialState._shared_state, AcceleratorState._shared_state
    other_device = bool(partial) and partial.get("_cpu") != cpu
    other_precision = bool(full) and mixed_precision is not None and full.get("_mixed_precision") != mixed_precision
    if not (other_device or other_precision):
        return
    if PartialState().num_processes > 1:
        raise LaryError(
            f"this process's accelerate state was set up with cpu={partial.get('_cpu')}, mixed precision "
            f"{full.get('_mixed_precision')}; this command asks for cpu={cpu}, mixed precision {mixed_precision}"
        )
    AcceleratorState._reset_state(reset_partial_state=True)


def process_state(cpu: bool) -> PartialState:
    """`PartialState(cpu=cpu)`, set up for this command (ending with its launcher, if it has one)."""
    end_with_launcher()
    _set_up_for(cpu)
    return PartialState(cpu=cpu)


def accelerator(cpu: bool, mixed_precision: str | None = None, **kwargs) -> Accelerator:
    """`Accelerator(cpu=cpu, mixed_precision=mixed_precision, **kwargs)`, set up for this command (ending with its
    launcher, if it has one)."""
    end_with_launcher()
    _set_up_for(cpu, mixed_precision)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, **kwargs)
