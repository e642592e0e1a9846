"""Built-in network plugin: deepinv's U-Net and DnCNN, always built without pretrained weights
(nothing is downloaded at run time)."""

from __future__ import annotations

import deepinv as dinv
import torch
from torch import nn

from recon.errors import InputError
from recon.hookspecs import Register, hookimpl
from recon.nets import search_spaces
from recon.nets.graph import GraphNet


def unet(
    in_channels: int = 1,
    out_channels: int = 1,
    scales: int = 4,
    batch_norm: bool = False,
    residual: bool = True,
) -> nn.Module:
    """deepinv U-Net (Ronneberger et al.) with 2–5 scales."""
    with torch.random.fork_rng(devices=[]):  # default inits must not move the global RNG
        return dinv.models.UNet(
            in_channels=in_channels,
            out_channels=out_channels,
            scales=scales,
            batch_norm=batch_norm,
            residual=residual,
        )


def dncnn(in_channels: int = 1, out_channels: int = 1, depth: int = 17, features: int = 64) -> nn.Module:
    """deepinv DnCNN (Zhang et al. 2017), residual denoiser, random initialisation."""
    with torch.random.fork_rng(devices=[]):
        return dinv.models.DnCNN(
            in_channels=in_channels, out_channels=out_channels, depth=depth, nf=features, pretrained=None
        )


def gated_unet(
    in_channels: int = 1,
    out_channels: int = 1,
    widths: tuple[int, ...] = (32, 64, 128),
    blocks: int = 1,
    residual: bool = True,
    gate_init: float = 0.0,
    unshuffle: int = 1,
) -> nn.Module:
    """Searchable U-Net (GraphNet) with gated residual blocks, skips and global residual; ``unshuffle``
    f runs it on f×f pixel blocks as channels (faster on a CPU at the same FLOPs)."""
    return GraphNet(
        search_spaces.gated_unet(in_channels, out_channels, widths, blocks, residual, gate_init, unshuffle)
    )


def gated_autoencoder(
    in_channels: int = 1,
    out_channels: int = 1,
    widths: tuple[int, ...] = (32, 64),
    latent: int = 64,
    blocks: int = 1,
    gate_init: float = 0.0,
) -> nn.Module:
    """Searchable autoencoder (GraphNet); the active latent channels are the code size."""
    if out_channels != in_channels:
        raise InputError("an autoencoder reproduces its input: out_channels must equal in_channels")
    return GraphNet(search_spaces.gated_autoencoder(in_channels, widths, latent, blocks, gate_init))


@hookimpl
def recon_register_networks(register: Register) -> None:
    register("unet", unet)
    register("dncnn", dncnn)
    register("gated-unet", gated_unet, searchable=True)
    register("gated-autoencoder", gated_autoencoder, searchable=True)
