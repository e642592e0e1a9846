"""A plain training loop for image-to-image tasks (search, benchmarks); seeded, device-aware.

Each step draws a batch of clean patches, simulates measurements with the task's seeded generator,
reconstructs them with ``model(y, physics)`` (a :class:`~recon.reconstructors.Reconstructor`) and
takes one optimizer step on the task's loss. ``after_step(step)`` runs after every optimizer step
(e.g. λ control); ``clip_grad`` clips the gradient norm; ``on_log(step)`` may return extra numbers
for the history (e.g. the number of active channels during a sparse search).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from recon.errors import InputError
from recon.tasks import Task


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
    progress: bool = True,
    description: str = "train",
) -> list[dict[str, Any]]:
    """Train ``model`` for ``steps`` optimizer steps; returns the logged history."""
    if steps < 1 or batch < 1:
        raise InputError(f"steps and batch must be positive, got {steps} and {batch}")
    device = torch.device(device)
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch, shuffle=False, drop_last=True)
    batches = iter(loader)
    history: list[dict[str, Any]] = []
    running = torch.zeros((), device=device)
    since = 0
    bar = tqdm(range(1, steps + 1), desc=description, disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        try:
            x = next(batches)
        except StopIteration:
            batches = iter(loader)
            x = next(batches)
        sample = task.simulate(x.to(device, non_blocking=True), generator)
        loss = task.loss(model(sample.y, sample.physics), sample.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        running += loss.detach()
        since += 1
        if step % log_every == 0 or step == steps:
            entry = {"step": step, "loss": float(running) / since}
            if not torch.isfinite(torch.tensor(entry["loss"])):
                raise FloatingPointError(f"training diverged at step {step} (loss {entry['loss']})")
            if on_log is not None:
                entry.update(on_log(step) or {})
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.2e}")
            running.zero_()
            since = 0
    return history
