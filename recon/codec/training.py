r"""Training a codec: rate-only objective, group-sparse latent channels by AdaBreg, export.

Objective: the lossless code length in bits per pixel, :math:`(R_q + R_r)/N` — the latents' bits under
the factorised law plus the residual's bits under the predicted Laplace law — with an optional
distortion weight on the prediction's MSE (intensities in [0, 1]); ``residual_rate=False`` with a
distortion weight is the classical rate-distortion objective :math:`R_q/N + \lambda_D D` of a lossy
autoencoder. Images: the packaged
real MR training slices and procedural phantoms at 12 bits, scikit-image's training photographs at
8 bits, as random 64×64 crops (held-out MR subjects and photographs never enter training).

The analysis' last convolution has one group per latent channel (group ℓ1,2, AdaBreg); training starts
with only ``start_channels`` latent channels switched on and the others at zero (inverse scale space:
channels enter when their rate saving outweighs λ). At the end the channels that stayed at zero are
removed (exact: they are identically zero, so their latents are 0 and contribute nothing), and the
residual tables are refined with token counts on the training images.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from recon.codec import subbands
from recon.codec.codec import DEPTHS, _full_depth, _Slice
from recon.codec.entropy import TOKENS
from recon.codec.model import CONTEXTS, CodecModel
from recon.codec.network import CodecNet, residual_bits
from recon.codec.polyphase import CONTEXT_CLASSES
from recon.datasets.training import PatchDataset, image_pool
from recon.sparsity import AdaBreg, GroupL12, Null


def _sources(seed: int, patch: int) -> list[tuple[PatchDataset, int]]:
    """(patches, levels): MR and phantoms at 12 bits, photographs at 8 bits."""
    mr = image_pool(("mr", "phantom"), "train", seed=seed)
    natural = image_pool(("natural",), "train", seed=seed)
    return [
        (PatchDataset(mr, patch, length=10**9, seed=seed), 4095),
        (PatchDataset(natural, patch, length=10**9, seed=seed + 1), 255),
    ]


def active_latents(net: CodecNet) -> torch.Tensor:
    """Mask of latent channels whose analysis filter is not identically zero."""
    return net.analysis[-1].weight.detach().flatten(1).abs().amax(1) > 0


def prune_latents(net: CodecNet) -> CodecNet:
    """The same codec without its all-zero latent channels (identical outputs; one channel is kept
    if every one is zero, so the network stays well formed)."""
    keep = active_latents(net)
    if not keep.any():
        keep[0] = True
    small = CodecNet(int(keep.sum()), net.width)
    state = net.state_dict()
    state["analysis.4.weight"] = state["analysis.4.weight"][keep]
    state["synthesis.0.weight"] = state["synthesis.0.weight"][:, keep]
    state["location"], state["log_scale"] = state["location"][keep], state["log_scale"][keep]
    small.load_state_dict(state)
    return small


TRANSFORM_STEPS = (1, 2, 4, 8, 16, 32)  # wavelet steps counted, in 1/256 of the intensity range


def token_counts(
    model: CodecModel, images: list[tuple[np.ndarray, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token counts per context on ``images``: lossless anchors ``(CONTEXTS, TOKENS)`` and
    interpolated passes ``(3, CONTEXT_CLASSES, TOKENS)``, and the transform path's
    ``(subbands.CONTEXTS, TOKENS)`` at the steps of :data:`TRANSFORM_STEPS`."""
    anchors = np.zeros((CONTEXTS, TOKENS))
    interpolated = np.zeros((3, CONTEXT_CLASSES, TOKENS))
    transform = np.zeros((subbands.CONTEXTS, TOKENS))

    def count(k: int, token: np.ndarray, raw: np.ndarray, contexts: np.ndarray) -> None:
        if k == 0:
            np.add.at(anchors, (contexts, token), 1)
        else:
            np.add.at(interpolated, ((k - 1) % 3, contexts, token), 1)

    def count_transform(token: np.ndarray, raw: np.ndarray, contexts: np.ndarray) -> None:
        np.add.at(transform, (contexts, token), 1)

    for image, levels in images:  # the encoder's passes, with and without latents, counting tokens
        part = _Slice(model, image, levels)
        part.passes(0, DEPTHS[-1], count)
        part.passes(0, _full_depth(image.shape), count, latents=False)
        for step in TRANSFORM_STEPS:
            delta = max(part.transform.smallest_step, (step * (levels + 1) << subbands.FRACTION_BITS) // 256)
            part.transform.tokens(delta, count_transform)
    return anchors, interpolated, transform


def train_codec(
    *,
    steps: int = 3000,
    latent: int = 64,
    width: int = 32,
    start_channels: int = 4,
    lam: float = 0.1,
    lr: float = 1e-3,
    distortion: float = 0.0,
    residual_rate: bool = True,
    batch: int = 16,
    patch: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> tuple[CodecModel, dict[str, Any]]:
    """Train, prune and export a codec; returns it and its training history."""
    torch.manual_seed(seed)
    net = CodecNet(latent, width)
    with torch.no_grad():
        net.analysis[-1].weight[start_channels:] = 0
    latent_weight = net.analysis[-1].weight
    others = [p for p in net.parameters() if p is not latent_weight]
    optimizer = AdaBreg(
        [
            {"params": [latent_weight], "reg": GroupL12(lam, "channel")},
            {"params": others, "reg": Null()},
        ],
        lr=lr,
    )
    sources = _sources(seed, patch)
    history: dict[str, list[float]] = {"step": [], "bpp": [], "active_latents": []}
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="codec", disable=not progress)
    for step in bar:
        data, levels = sources[step % len(sources)]
        x = torch.stack([data[step * batch + i] for i in range(batch)])
        x = torch.round(x.clamp(0, 1) * levels) / levels
        y = net.analysis(x)
        noisy = y + torch.rand_like(y) - 0.5
        rounded = y + (torch.round(y) - y).detach()
        prediction, log_scale = net.synthesize(rounded)
        levels_t = torch.full((batch,), float(levels))
        bits = net.latent_bits(noisy)
        if residual_rate:
            bits = bits + residual_bits(x, prediction, log_scale, levels_t)
        bpp = bits.mean() / x[0].numel()
        loss = bpp + distortion * (prediction - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            active = int(active_latents(net).sum())
            history["step"].append(step)
            history["bpp"].append(float(bpp.detach()))
            history["active_latents"].append(active)
            bar.set_postfix(bpp=f"{float(bpp.detach()):.3f}", latents=active)
    net = prune_latents(net.eval())
    meta = {
        "steps": steps,
        "latent_super": latent,
        "latent_active": net.latent,
        "width": width,
        "lam": lam,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    model = CodecModel.from_net(net, **meta)
    refine = [(np.round(im * 4095).astype(np.uint16), 4095) for im in image_pool(("mr",), "train")]
    refine += [(np.round(im * 255).astype(np.uint8), 255) for im in image_pool(("natural",), "train")]
    model = CodecModel.from_net(net, *token_counts(model, refine), **meta)
    return model, history
