"""Every hook a recon plugin can implement: the plugin author's reference.

A plugin is a module (or object) whose functions are marked with ``recon.hookimpl`` and named after
one of the hooks below. Each hook receives ``register(name, factory, *, description=None, **meta)``;
calling it adds a typed entry to the registry of that kind. ``factory(**params)`` builds the object;
its keyword parameters (with defaults and annotations) are what ``recon operators --json`` lists.

Install a plugin by declaring an entry point in the group ``recon``::

    [project.entry-points.recon]
    my-plugin = "my_package.recon_plugin"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("recon")
hookimpl = pluggy.HookimplMarker("recon")

Register = Callable[..., None]
"""``register(name: str, factory: Callable, *, description: str | None = None, **meta: Any)``."""


@hookspec
def recon_register_operators(register: Register) -> None:
    """Register forward operators.

    ``factory(img_size=(H, W), **params)`` returns a ``deepinv.physics.Physics`` (usually
    ``LinearPhysics``) acting on ``(B, C, H, W)`` tensors. Give ``domain="complex"`` in ``meta``
    when the operator acts on complex images (MRI), ``channels=C`` when it expects ``C`` channels.
    """


@hookspec
def recon_register_noise_models(register: Register) -> None:
    """Register noise models: ``factory(rng=torch.Generator | None, **params)`` returns a
    ``deepinv.physics.NoiseModel`` that can be attached to any operator."""


@hookspec
def recon_register_networks(register: Register) -> None:
    """Register networks: ``factory(in_channels, out_channels, **params)`` returns an ``nn.Module``."""


@hookspec
def recon_register_dataset_readers(register: Register) -> None:
    """Register file readers: ``factory(path) -> recon.datasets.Scan``.

    Give ``suffixes=(".ext", ...)`` in ``meta``; optionally ``sniff=callable(head: bytes) -> bool``
    to recognise files by their first bytes whatever their name.
    """


@hookspec
def recon_register_regularizers(register: Register) -> None:
    """Register sparsity regularizers: ``factory(lam, **params)`` returns a
    ``recon.sparsity.Regularizer`` (``value``, ``prox(v, delta)``, ``subgradient``, ``config``)."""


@hookspec
def recon_register_training_terms(register: Register) -> None:
    """Register training terms, chosen per run (``--term name:key=value``): ``factory(**params)``
    returns a ``recon.terms.TrainingTerm`` that may perturb each training sample and add a loss."""


@hookspec
def recon_train_start(config: dict, model: object) -> None:
    """Called once before the first training step (``config`` is the run's JSON-able config)."""


@hookspec
def recon_train_log(step: int, metrics: dict) -> None:
    """Called at every logging step with the metrics written to the history (loss, val PSNR …)."""


@hookspec
def recon_train_end(config: dict, result: dict) -> None:
    """Called once after training with the final result (paths, metrics)."""


@hookspec
def recon_register_samplers(register: Register) -> None:
    """Register samplers over network weights: ``factory(**params)`` returns an object whose
    ``run(model, task, data, count, *, generator, device, progress)`` returns
    ``recon.uncertainty.WeightSamples``."""
