"""Search spaces: super-networks wide enough to prune, described as GraphNet specs.

:func:`gated_unet` (denoising, deblurring, MRI post-processing): a U-Net whose every convolution's
output channels form prunable groups, with gated residual blocks (``h + g·conv(relu(conv(h)))``),
gated encoder→decoder skips (concatenated, scaled by a gate) and a gated global residual
(``output = head + g·input``). Gates start at ``gate_init`` (0: closed, the inverse-scale-space way:
a connection opens when its gradient makes it worth its ℓ1 cost); recon's sparse starts open the
global residual (:data:`GLOBAL_RESIDUAL`), which stays ℓ1-regularised like every gate.

:func:`gated_autoencoder`: encoder → latent (``latent`` channels, the searched code size) → decoder,
with no skip around the latent; the decoder depends on the latent alone (images whose sides are
multiples of ``2 ** len(widths)`` come back at their size).
"""

from __future__ import annotations

from typing import Any

from recon.errors import InputError
from recon.nets.graph import FORMAT, MAX_UNSHUFFLE

GLOBAL_RESIDUAL = "gates.skip_input"
"""Parameter name of :func:`gated_unet`'s global residual gate (sparse starts open it)."""


class _Builder:
    def __init__(self, in_channels: int):
        self.nodes: list[dict[str, Any]] = []
        self.gates: dict[str, float] = {}
        self.in_channels = in_channels

    def conv(
        self,
        name: str,
        inputs: list[str],
        out: int,
        *,
        stride: int = 1,
        act: str = "relu",
        gates: list[str | None] | None = None,
        kernel: int = 3,
    ) -> str:
        self.nodes.append(
            {
                "name": name,
                "op": "conv",
                "inputs": inputs,
                "gates": gates or [None] * len(inputs),
                "out": out,
                "kernel": kernel,
                "stride": stride,
                "act": act,
            }
        )
        return name

    def gate(self, name: str, value: float) -> str:
        self.gates[name] = value
        return name

    def add(self, name: str, inputs: list[str], gates: list[str | None], channels: int) -> str:
        self.nodes.append({"name": name, "op": "add", "inputs": inputs, "gates": gates, "channels": channels})
        return name

    def upsample(self, name: str, src: str, like: str | None = None) -> str:
        if like is None:
            self.nodes.append({"name": name, "op": "upsample", "inputs": [src], "scale": 2})
        else:
            self.nodes.append({"name": name, "op": "upsample", "inputs": [src, like]})
        return name

    def block(self, prefix: str, h: str, width: int, hidden: int, gate_init: float) -> str:
        """Residual block ``h + g·conv2(relu(conv1(h)))`` with a ℓ1-gated branch."""
        inner = self.conv(f"{prefix}_conv1", [h], hidden)
        branch = self.conv(f"{prefix}_conv2", [inner], width, act="none")
        gate = self.gate(f"{prefix}_gate", gate_init)
        return self.add(f"{prefix}_sum", [h, branch], [None, gate], width)

    def spec(self, output: str, **meta: Any) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "in_channels": self.in_channels,
            "gates": self.gates,
            "nodes": self.nodes,
            "output": output,
            "meta": meta,
        }


MAX_WIDTH, MAX_BLOCKS = 1024, 16  # far above what a CPU or one GPU trains; guards absurd sizes


def _is_count(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_widths(widths: tuple[int, ...], blocks: int) -> None:
    if not (isinstance(widths, (list, tuple)) and 1 <= len(widths) <= 6):
        raise InputError(f"widths must be 1 to 6 integers in [1, {MAX_WIDTH}], got {widths!r}")
    if not all(_is_count(w, 1, MAX_WIDTH) for w in widths):
        raise InputError(f"widths must be 1 to 6 integers in [1, {MAX_WIDTH}], got {widths!r}")
    if not _is_count(blocks, 0, MAX_BLOCKS):
        raise InputError(f"blocks must be an integer in [0, {MAX_BLOCKS}], got {blocks!r}")


def gated_unet(
    in_channels: int = 1,
    out_channels: int = 1,
    widths: tuple[int, ...] = (32, 64, 128),
    blocks: int = 1,
    residual: bool = True,
    gate_init: float = 0.0,
    unshuffle: int = 1,
) -> dict[str, Any]:
    """U-Net super-network with gated residual blocks, gated skips and a gated global residual.
    ``unshuffle`` f > 1 runs it on the image's f×f blocks as channels (the spec's
    ``pixel_unshuffle``: ``in_channels·f²`` channels at 1/f of the size, see :mod:`recon.nets.graph`)."""
    _check_widths(widths, blocks)
    if not _is_count(unshuffle, 1, MAX_UNSHUFFLE):
        raise InputError(f"unshuffle must be an integer in [1, {MAX_UNSHUFFLE}], got {unshuffle!r}")
    in_channels, image_channels = in_channels * unshuffle**2, in_channels
    out_channels *= unshuffle**2
    b = _Builder(in_channels)
    levels = []
    h = b.conv("stem", ["input"], widths[0])
    for level, width in enumerate(widths):
        if level > 0:
            h = b.conv(f"down{level}", [h], width, stride=2)
        for k in range(blocks):
            h = b.block(f"enc{level}_b{k}", h, width, width, gate_init)
        levels.append(h)
    for level in range(len(widths) - 2, -1, -1):
        up = b.upsample(f"up{level}", h, levels[level])
        skip = b.gate(f"skip{level}", gate_init)
        h = b.conv(f"dec{level}", [up, levels[level]], widths[level], gates=[None, skip])
        for k in range(blocks):
            h = b.block(f"dec{level}_b{k}", h, widths[level], widths[level], gate_init)
    head = b.conv("head", [h], out_channels, act="none")
    output = head
    if residual:
        if in_channels != out_channels:
            raise InputError("a global residual needs in_channels == out_channels")
        output = b.add("residual", [head, "input"], [None, b.gate("skip_input", gate_init)], out_channels)
    spec = b.spec(output, family="gated-unet", fixed=["head"])
    if unshuffle > 1:
        spec.update(in_channels=image_channels, pixel_unshuffle=unshuffle)
    return spec


def gated_autoencoder(
    in_channels: int = 1,
    widths: tuple[int, ...] = (32, 64),
    latent: int = 64,
    blocks: int = 1,
    gate_init: float = 0.0,
) -> dict[str, Any]:
    """Autoencoder super-network: the number of active ``latent`` channels is the searched code size."""
    _check_widths(widths, blocks)
    if not _is_count(latent, 1, MAX_WIDTH):
        raise InputError(f"latent must be an integer in [1, {MAX_WIDTH}], got {latent!r}")
    b = _Builder(in_channels)
    h = b.conv("stem", ["input"], widths[0])
    for level, width in enumerate(widths):
        if level > 0:
            h = b.conv(f"down{level}", [h], width, stride=2)
        for k in range(blocks):
            h = b.block(f"enc{level}_b{k}", h, width, width, gate_init)
    code = b.conv("latent", [h], latent, stride=2, act="none")
    h = b.conv("expand", [code], widths[-1])
    for level in range(len(widths) - 1, -1, -1):  # the decoder reads only the latent: sizes double
        h = b.upsample(f"up{level}", h)
        h = b.conv(f"dec{level}", [h], widths[level])
        for k in range(blocks):
            h = b.block(f"dec{level}_b{k}", h, widths[level], widths[level], gate_init)
    head = b.conv("head", [h], in_channels, act="none")
    return b.spec(head, family="gated-autoencoder", latent="latent", fixed=["head"])
