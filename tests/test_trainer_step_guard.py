"""A step whose loss or gradients are not finite never reaches the adapter's weights (fault injection: NaN/inf
gradients written by a hook, a NaN loss from a patched loss function), and a run that keeps producing them stops
with a message that says what to change."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trainer.step_guard import StepGuard  # noqa: E402


class Diverged(RuntimeError):
    pass


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(4, 2)
    params = list(lin.parameters())
    optim = torch.optim.AdamW(params, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda _s: 1.0)
    return lin, params, optim, sched


def _backward(lin, poison: float | None = None) -> float:
    loss = lin(torch.ones(3, 4)).pow(2).mean()
    loss.backward()
    if poison is not None:
        lin.weight.grad[0, 0] = poison
    return float(loss.detach())


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_step_with_non_finite_gradients_is_skipped_and_the_weights_stay(poison: float) -> None:
    lin, params, optim, sched = _setup()
    lines: list[str] = []
    guard = StepGuard(lines.append, Diverged)
    guard.note_loss(_backward(lin))
    assert guard.step(params, optim, sched)  # a normal step moves the weights
    before = [p.detach().clone() for p in params]
    guard.note_loss(_backward(lin, poison))
    assert not guard.step(params, optim, sched)
    assert all(torch.equal(a, b) for a, b in zip(before, params)) and all(torch.isfinite(p).all() for p in params)
    assert all(p.grad is None for p in params)  # the poisoned gradients are dropped
    assert sched.last_epoch == 2 and (guard.steps, guard.skipped) == (2, 1)
    assert len(lines) == 1 and "skipped" in lines[0]
    guard.note_loss(_backward(lin))
    assert guard.step(params, optim, sched) and not all(torch.equal(a, b) for a, b in zip(before, params))


def test_a_non_finite_loss_skips_the_step_even_with_finite_gradients() -> None:
    lin, params, optim, sched = _setup()
    guard = StepGuard(lambda _m: None, Diverged)
    _backward(lin)
    assert not guard.note_loss(float("nan"))
    before = [p.detach().clone() for p in params]
    assert not guard.step(params, optim, sched)
    assert all(torch.equal(a, b) for a, b in zip(before, params))


def test_many_skipped_steps_stop_the_run_with_what_to_change() -> None:
    lin, params, optim, sched = _setup()
    guard = StepGuard(lambda _m: None, Diverged, tolerance=3, max_share=0.05)
    for _ in range(40):  # 40 good steps: 3 bad ones are 7% > 5%, so the third stops the run
        guard.note_loss(_backward(lin))
        guard.step(params, optim, sched)
    guard.note_loss(_backward(lin, float("nan")))
    guard.step(params, optim, sched)
    guard.note_loss(_backward(lin, float("nan")))
    guard.step(params, optim, sched)
    guard.note_loss(_backward(lin, float("nan")))
    with pytest.raises(Diverged, match=r"3 of 43 optimiser steps.*--dtype float32"):
        guard.step(params, optim, sched)
