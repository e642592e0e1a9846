"""The training loop for reconstruction tasks; seeded, device-aware, resumable.

Step ``k`` (1-based) trains on the patches ``data[(k-1)·batch : k·batch]``, simulates their
measurements with the task's generator, reconstructs them with ``model(y, physics)`` (a
:class:`~recon.reconstructors.Reconstructor`) and takes one optimizer step on the task's loss plus
the penalties of the training terms. Everything random comes from ``data``'s seeds and
``generator``, so a run restarted from a checkpoint (``start_step``, the generator state) continues
exactly as it would have.

Callbacks: ``after_step(step)`` after every optimizer step (e.g. λ control), ``on_log(step)`` may
return extra numbers for the history, ``checkpoint(step, history)`` every ``checkpoint_every`` steps.
On CUDA, ``amp=True`` runs the forward pass in bfloat16 autocast (no loss scaling needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from recon.errors import InputError
from recon.tasks import Task
from recon.terms import TrainingTerm

# bounds on a training batch: far above what one GPU trains, low enough that a typo fails at once
# instead of allocating tens of GiB (or running for days)
MAX_BATCH, MAX_PATCH, MAX_STEPS = 1024, 1024, 10**8


def batch_at(data: Dataset, step: int, batch: int) -> torch.Tensor:
    """The clean patches of (1-based) ``step``: items ``(step-1)·batch … step·batch - 1`` (wrapping)."""
    n = len(data)
    return torch.stack([data[(i % n)] for i in range((step - 1) * batch, step * batch)])


class SimulatedBatches:
    """Fresh simulated training samples, one batch per call, in a reproducible order (what weight
    samplers and variance heads learn from); ``step``: the batches drawn so far."""

    def __init__(self, task: Task, data: Dataset, batch: int, generator: torch.Generator, device: Any):
        if not 1 <= batch <= MAX_BATCH:
            raise InputError(f"batch must be in [1, {MAX_BATCH}], got {batch}")
        self.task, self.data, self.batch, self.generator, self.device = task, data, batch, generator, device
        self.step = 0

    def __call__(self) -> Any:
        self.step += 1
        return self.task.simulate(batch_at(self.data, self.step, self.batch).to(self.device), self.generator)


def train(
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    *,
    steps: int,
    batch: int = 16,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log_every: int = 50,
    on_log: Callable[[int], dict[str, Any] | None] | None = None,
    after_step: Callable[[int], None] | None = None,
    clip_grad: float | None = None,
    terms: Sequence[TrainingTerm] = (),
    start_step: int = 0,
    generator: torch.Generator | None = None,
    checkpoint: Callable[[int, list[dict[str, Any]]], None] | None = None,
    checkpoint_every: int = 0,
    history: list[dict[str, Any]] | None = None,
    amp: bool = False,
    progress: bool = True,
    description: str = "train",
) -> list[dict[str, Any]]:
    """Train ``model`` up to step ``steps`` (from ``start_step``); returns the logged history."""
    if steps < 1 or batch < 1 or not 0 <= start_step <= steps:
        raise InputError(f"invalid schedule: steps {steps}, batch {batch}, start {start_step}")
    device = torch.device(device)
    model.to(device).train()
    generator = generator or torch.Generator().manual_seed(seed)
    history = list(history or [])
    needs_grad = any(t.needs_input_grad for t in terms)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
    running, since = 0.0, 0
    bar = tqdm(
        range(start_step + 1, steps + 1),
        desc=description,
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        initial=start_step,
        total=steps,
    )
    for step in bar:
        sample = task.simulate(batch_at(data, step, batch).to(device, non_blocking=True), generator)
        for term in terms:
            sample = term.perturb(model, sample, task)
        if needs_grad:
            sample.y = sample.y.detach().requires_grad_(True)
        with autocast:
            prediction = model(sample.y, sample.physics)
        loss = task.loss(prediction.to(sample.target.dtype), sample.target)
        total = loss
        for term in terms:
            extra = term.penalty(model, sample, prediction, loss, task)
            if extra is not None:
                total = total + extra
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        running += float(loss.detach())
        since += 1
        if step % log_every == 0 or step == steps:
            entry: dict[str, Any] = {"step": step, "loss": running / since}
            if not math.isfinite(entry["loss"]):
                raise FloatingPointError(f"training diverged at step {step} (loss {entry['loss']})")
            if on_log is not None:
                entry.update(on_log(step) or {})
            history.append(entry)
            bar.set_postfix({k: f"{v:.3g}" for k, v in entry.items() if k in ("loss", "val_psnr")})
            running, since = 0.0, 0
        if checkpoint is not None and checkpoint_every and (step % checkpoint_every == 0 or step == steps):
            checkpoint(step, history)
    return history
