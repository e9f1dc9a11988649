"""Optimiser steps that never write a non-finite value into the adapter.

One batch whose loss or gradients overflow (seen on an H200 in bfloat16: a finite loss of 0.35 at step 42, then every
loss NaN for the rest of the run) would otherwise turn every LoRA weight into NaN through ``clip_grad_norm_`` (an
infinite norm scales the gradients by zero, and ``inf * 0`` is NaN) and the run would go on for hours training
nothing. Like a mixed-precision loss scaler, the guard skips such a step (the gradients are dropped, the schedule
still advances) and counts it; when skipped steps are more than an occasional accident it stops the run with a
message that says what to change.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable


class StepGuard:
    """Per phase: ``note_loss`` for every micro-batch, ``step`` at every optimiser step."""

    def __init__(self, log: Callable[[str], None], error: type[Exception], max_share: float = 0.05,
                 tolerance: int = 5, max_norm: float = 1.0) -> None:
        self.log, self.error, self.max_share, self.tolerance, self.max_norm = log, error, max_share, tolerance, max_norm
        self.steps = self.skipped = 0
        self._bad_loss = False

    def note_loss(self, value: float) -> bool:
        """Whether the micro-batch's loss is finite (a non-finite one makes the current step skipped)."""
        ok = math.isfinite(value)
        self._bad_loss |= not ok
        return ok

    def step(self, params: list, optim, sched) -> bool:
        import torch  # noqa: PLC0415 - torch is heavy and comes with the optional train extra

        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        ok = not self._bad_loss and bool(torch.isfinite(norm))
        if ok:
            optim.step()
        else:
            self.skipped += 1
            if self.skipped == 1:
                self.log(f"step {self.steps}: non-finite loss or gradients; the step is skipped (its gradients are "
                         "dropped) and counted in the phase's skipped_steps")
        with warnings.catch_warnings():  # a skipped first step: torch warns that the schedule stepped alone (meant)
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            sched.step()
        optim.zero_grad(set_to_none=True)
        self.steps += 1
        self._bad_loss = False
        if self.skipped >= self.tolerance and self.skipped > self.max_share * self.steps:
            raise self.error(f"training diverged: {self.skipped} of {self.steps} optimiser steps had a non-finite loss "
                             "or gradients; on a GPU train in float32 (`--dtype float32`, the default), or lower --lr")
        return ok
