"""Built-in network plugin: deepinv's U-Net and DnCNN, always built without pretrained weights
(nothing is downloaded at run time)."""

from __future__ import annotations

import deepinv as dinv
from torch import nn

from recon.hookspecs import Register, hookimpl


def unet(
    in_channels: int = 1,
    out_channels: int = 1,
    scales: int = 4,
    batch_norm: bool = False,
    residual: bool = True,
) -> nn.Module:
    """deepinv U-Net (Ronneberger et al.) with 2–5 scales."""
    return dinv.models.UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        scales=scales,
        batch_norm=batch_norm,
        residual=residual,
    )


def dncnn(in_channels: int = 1, out_channels: int = 1, depth: int = 17, features: int = 64) -> nn.Module:
    """deepinv DnCNN (Zhang et al. 2017), residual denoiser, random initialisation."""
    return dinv.models.DnCNN(
        in_channels=in_channels, out_channels=out_channels, depth=depth, nf=features, pretrained=None
    )


@hookimpl
def recon_register_networks(register: Register) -> None:
    register("unet", unet)
    register("dncnn", dncnn)
