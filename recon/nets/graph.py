r"""GraphNet: a convolutional network described by a JSON graph, executed by one small module.

Both the searchable super-networks and the compact networks that :func:`recon.nets.compact.compact`
derives from them are GraphNets, so a compact model is loaded from its JSON description and
safetensors weights alone, without the code that built the super-network.

A spec is a dict ``{"format": "recon.graph/1", "in_channels": C, "gates": {name: value},
"nodes": [...], "output": name}``; the network input is the node ``"input"``. Nodes, in
topological order:

- ``conv``: the channel concatenation of ``inputs`` (each multiplied by its gate, ``gates[i]`` a
  gate name or ``null``) → ``Conv2d(kernel, stride)`` with reflect padding → ``act`` (relu|none).
- ``add``: :math:`\sum_i g_i x_i` (+ a per-channel ``offset`` when ``"offset": true``). Optional
  ``take``/``to`` lists select channels of an input and place them at output channels.
- ``upsample``: bilinear resize of ``inputs[0]`` to the spatial size of ``inputs[1]``, or by the
  integer factor ``scale`` when there is no second input.
- ``const``: per-channel constants (``values``) at the spatial size of ``inputs[0]``.

Every operation maps a spatially constant channel to a constant channel (reflect padding, bilinear
resizing): that is what lets compaction fold dead units into biases exactly.

``"pixel_unshuffle": f`` (optional, default 1) runs the graph on the image rearranged into f×f
blocks: the image (``in_channels`` channels, padded by reflection to multiples of f) becomes
``in_channels·f²`` channels at 1/f of its size (``torch.nn.functional.pixel_unshuffle``, the node
``"input"``), and the output node's channels are put back the same way and cropped. The
rearrangement is a permutation, so it costs no arithmetic; what it buys is speed on a CPU: the first
level of a U-Net then runs f² times fewer pixels at f² times more channels for the same FLOPs, and a
convolution over few channels at full resolution is memory-bound (its time follows the activations it
reads and writes, not its FLOPs), one over more channels at lower resolution is not. Measured: dense
and compacted U-Nets about 1.4× faster, and the compacted ones' speedup 0.46–0.68 of their FLOP
reduction against 0.34–0.53 at full resolution (BENCHMARKS.md, Sparse training).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from recon.errors import InputError
from recon.files import atomic_outputs

FORMAT = "recon.graph/1"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OPS = ("conv", "add", "upsample", "const")
MAX_UNSHUFFLE = 8


def unshuffle_factor(spec: Mapping[str, Any]) -> int:
    """The spec's ``pixel_unshuffle`` factor (1: none), validated."""
    f = spec.get("pixel_unshuffle", 1)
    if not isinstance(f, int) or isinstance(f, bool) or not 1 <= f <= MAX_UNSHUFFLE:
        _fail(f"pixel_unshuffle must be an integer in [1, {MAX_UNSHUFFLE}], got {f!r}")
    return f


def to_graph_input(x: Tensor, f: int) -> Tensor:
    """The image ``(..., C, H, W)`` as the graph's ``input`` node, for ``pixel_unshuffle`` f."""
    if f == 1:
        return x
    pad_h, pad_w = -x.shape[-2] % f, -x.shape[-1] % f
    if pad_h or pad_w:
        mode = "reflect" if min(x.shape[-2:]) > max(pad_h, pad_w) else "replicate"
        padded = F.pad(x.reshape(-1, *x.shape[-3:]), (0, pad_w, 0, pad_h), mode=mode)
        x = padded.reshape(*x.shape[:-2], *padded.shape[-2:])
    return F.pixel_unshuffle(x, f)


def from_graph_output(y: Tensor, f: int, size: tuple[int, int]) -> Tensor:
    """The output node's value back at the image's ``size`` (the inverse of :func:`to_graph_input`)."""
    # channels-last pixel_shuffle is 3× slower than making the tensor contiguous first (0.47
    # against 0.16 ms for 4 × 128² channels on one thread)
    return y if f == 1 else F.pixel_shuffle(y.contiguous(), f)[..., : size[0], : size[1]]


def _fail(message: str) -> None:
    raise InputError(f"invalid network description: {message}")


def node_channels(spec: Mapping[str, Any]) -> dict[str, int]:
    """Output channels of every node (validating the spec on the way)."""
    if spec.get("format") != FORMAT:
        _fail(f"format must be {FORMAT!r}, got {spec.get('format')!r}")
    channels = {"input": int(spec["in_channels"]) * unshuffle_factor(spec) ** 2}
    gates = spec.get("gates", {})
    for node in spec["nodes"]:
        name, op, inputs = node.get("name"), node.get("op"), node.get("inputs", [])
        if not isinstance(name, str) or not _NAME.match(name) or name in channels:
            _fail(f"bad or repeated node name {name!r}")
        if op not in OPS:
            _fail(f"node {name!r} has unknown op {op!r}")
        if not inputs or any(i not in channels for i in inputs):
            _fail(f"node {name!r} reads an undefined node (nodes must be in topological order)")
        for gate in node.get("gates", [None] * len(inputs)):
            if gate is not None and gate not in gates:
                _fail(f"node {name!r} uses undefined gate {gate!r}")
        if op == "conv":
            channels[name] = int(node["out"])
        elif op == "add":
            channels[name] = int(node["channels"])
            takes = node.get("take") or [None] * len(inputs)
            tos = node.get("to") or [None] * len(inputs)
            for src, take, to in zip(inputs, takes, tos, strict=True):
                width = len(take) if take is not None else channels[src]
                target = len(to) if to is not None else channels[name]
                if width != target or (take is not None and max(take, default=-1) >= channels[src]):
                    _fail(f"add node {name!r}: input {src!r} does not fit")
        elif op == "upsample":
            channels[name] = channels[inputs[0]]
        else:
            channels[name] = len(node["values"])
        if channels[name] < 1:
            _fail(f"node {name!r} has no channels")
    if spec.get("output") not in channels:
        _fail(f"output {spec.get('output')!r} is not a node")
    return channels


class GraphNet(nn.Module):
    """Executes a graph spec; parameters are ``convs.<node>.weight|bias`` and ``gates.<gate>``."""

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        self.spec = json.loads(json.dumps(spec))  # a private, JSON-clean copy
        self.channels = node_channels(self.spec)
        self.unshuffle = unshuffle_factor(self.spec)
        self.convs = nn.ModuleDict()
        with torch.random.fork_rng(devices=[]):  # Conv2d's default init must not move the global RNG
            self._build_layers()
        self.gates = nn.ParameterDict(
            {g: nn.Parameter(torch.tensor(float(v))) for g, v in self.spec.get("gates", {}).items()}
        )
        self.dead_after = dead_after(self.spec)

    def _build_layers(self) -> None:
        for node in self.spec["nodes"]:
            if node["op"] == "conv":
                in_ch = sum(self.channels[i] for i in node["inputs"])
                k = int(node.get("kernel", 3))
                self.convs[node["name"]] = nn.Conv2d(
                    in_ch,
                    node["out"],
                    k,
                    stride=int(node.get("stride", 1)),
                    padding=k // 2,
                    padding_mode="reflect" if k > 1 else "zeros",
                )
            elif node["op"] == "add" and node.get("offset"):
                self.register_buffer(f"offset_{node['name']}", torch.zeros(self.channels[node["name"]]))
            elif node["op"] == "const":
                self.register_buffer(
                    f"const_{node['name']}", torch.tensor(node["values"], dtype=torch.float32)
                )

    def _gated(self, values: dict[str, Tensor], node: Mapping[str, Any]) -> list[Tensor]:
        out = []
        for src, gate in zip(node["inputs"], node.get("gates") or [None] * len(node["inputs"]), strict=True):
            out.append(values[src] if gate is None else values[src] * self.gates[gate])
        return out

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {"input": to_graph_input(x, self.unshuffle)}
        for node, dead in zip(self.spec["nodes"], self.dead_after, strict=True):
            name, op = node["name"], node["op"]
            if op == "conv":
                inputs = self._gated(values, node)
                y = self.convs[name](inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1))
                values[name] = F.relu(y) if node.get("act", "relu") == "relu" else y
            elif op == "add":
                values[name] = self._add(values, node)
            elif op == "upsample":
                like = values[node["inputs"][1]] if len(node["inputs"]) > 1 else None
                values[name] = upsample(node, values[node["inputs"][0]], like)
            else:
                values[name] = self.constant(name, values[node["inputs"][0]])
            for src in dead:
                del values[src]
        return from_graph_output(values[self.spec["output"]], self.unshuffle, x.shape[-2:])

    def constant(self, node: str, like: Tensor) -> Tensor:
        """A ``const`` node's channels at ``like``'s batch and spatial size."""
        const = getattr(self, f"const_{node}").to(like.dtype)
        return const[None, :, None, None].expand(like.shape[0], -1, *like.shape[-2:])

    def _add(self, values: dict[str, Tensor], node: Mapping[str, Any]) -> Tensor:
        widths = [self.channels[i] for i in node["inputs"]]
        return add_node(self, node, self._gated(values, node), widths)

    def conv_nodes(self) -> list[Mapping[str, Any]]:
        return [n for n in self.spec["nodes"] if n["op"] == "conv"]


def node_readers(spec: Mapping[str, Any]) -> Counter[str]:
    """How many times each node is read as an input (a node read by one convolution only can be
    changed together with it: folding, switching off branches)."""
    return Counter(src for node in spec["nodes"] for src in node["inputs"])


def dead_after(spec: Mapping[str, Any]) -> list[list[str]]:
    """Per node, the values no later node reads (the output excepted): a forward pass drops them
    there, so that its peak memory is the largest set of values alive at once, not all of them,
    and new buffers reuse freed ones that are still in the cache."""
    last_reader = {src: i for i, node in enumerate(spec["nodes"]) for src in node["inputs"]}
    dead: list[list[str]] = [[] for _ in spec["nodes"]]
    for src, i in last_reader.items():
        if src != spec["output"]:
            dead[i].append(src)
    return dead


def graph_like(net: GraphNet, spec: Mapping[str, Any], state: Mapping[str, Tensor]) -> GraphNet:
    """A GraphNet of ``spec`` holding ``state`` (cast to ``net``'s dtype), on ``net``'s device and in
    its training mode: how compaction, folding and alignment hand back a rebuilt network."""
    rebuilt = GraphNet(spec).train(net.training)
    reference = next(iter(net.parameters()), None)
    if reference is not None:
        rebuilt = rebuilt.to(device=reference.device, dtype=reference.dtype)
    rebuilt.load_state_dict(state)  # copies cast each tensor to the parameter's dtype
    return rebuilt


def add_node(
    net: GraphNet, node: Mapping[str, Any], inputs: list[Tensor], widths: list[int], copies: int = 1
) -> Tensor:
    """An ``add`` node: the sum of its (gated) ``inputs``, each input's channels ``take`` placed at
    output channels ``to``, plus the ``offset``. The tensors' channels may come in ``copies`` blocks
    of ``widths[i]`` (one per weight set, :mod:`recon.nets.stacked`); every block is combined alike.

    Choosing and placing channels is a 1×1 convolution with a 0/1 matrix (exact for finite inputs):
    on channels-last tensors several times faster than ``index_select`` / ``index_add``, and
    ``torch.func.vmap`` batches it. Channel blocks (``copies`` > 1, channels-last) are placed by
    one matrix product of the ``(pixels·copies, width)`` view instead: 2–3× faster than the
    grouped 1×1 convolution with 4–16 blocks. On channels-last tensors a placed input is added to
    the sum of the one-to-one inputs by one ``addmm`` on their ``(pixels, channels)`` views (placing
    and adding in one pass: 0.19 against 0.39 ms for 19 → 32 channels at 128²)."""
    channels = net.channels[node["name"]]
    takes = node.get("take") or [None] * len(inputs)
    tos = node.get("to") or [None] * len(inputs)
    out = None
    placed = []
    for t, width, take, to in zip(inputs, widths, takes, tos, strict=True):
        if (take is None or take == list(range(width))) and (to is None or to == list(range(channels))):
            out = t if out is None else out + t
        else:
            placed.append((t, _placement(take, to, width, channels, t)))
    for t, matrix in placed:
        if copies > 1:
            t = _place_blocks(t, matrix)
        elif out is not None and _channels_last(out) and _channels_last(t):
            out = _add_placed(out, t, matrix)
            continue
        else:
            t = F.conv2d(t, matrix[:, :, None, None])
        out = t if out is None else out + t
    if node.get("offset"):
        offset = getattr(net, f"offset_{node['name']}").to(out.dtype).repeat(copies)
        out = out + offset.view(1, -1, 1, 1)
    return out


def _placement(
    take: list[int] | None, to: list[int] | None, width: int, channels: int, like: Tensor
) -> Tensor:
    """The 0/1 matrix ``(channels, width)`` that puts input channels ``take`` at output channels ``to``."""
    matrix = like.new_zeros(channels, width)
    rows = torch.tensor(to if to is not None else range(channels), device=like.device)
    cols = torch.tensor(take if take is not None else range(width), device=like.device)
    matrix[rows, cols] = 1
    return matrix


def _channels_last(t: Tensor) -> bool:
    """Whether ``t`` is a channels-last 4-D tensor, read from its strides. ``is_contiguous`` with a
    memory format raises inside ``torch.func.vmap``; strides are defined there (per sample)."""
    if t.dim() != 4:
        return False
    _, c, h, w = t.shape
    expected = (h * w * c, 1, w * c, c)
    return all(
        size == 1 or stride == want for size, stride, want in zip(t.shape, t.stride(), expected, strict=True)
    )


def _add_placed(out: Tensor, t: Tensor, matrix: Tensor) -> Tensor:
    """``out`` plus ``t`` placed by ``matrix``, both channels-last: one ``addmm`` on the pixel rows."""
    n, c, h, w = out.shape
    rows = torch.addmm(
        out.permute(0, 2, 3, 1).reshape(-1, c), t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]), matrix.T
    )
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _place_blocks(t: Tensor, matrix: Tensor) -> Tensor:
    """``matrix`` applied to each channel block of the channels-last ``t``."""
    n, _, h, w = t.shape
    rows = t.permute(0, 2, 3, 1).reshape(-1, matrix.shape[1])  # a view when t is channels-last
    return (rows @ matrix.T).view(n, h, w, -1).permute(0, 3, 1, 2)


def upsample(node: Mapping[str, Any], src: Tensor, like: Tensor | None) -> Tensor:
    """An ``upsample`` node: bilinear resize of ``src`` to ``like``'s spatial size, or by ``scale``."""
    size = (
        like.shape[-2:] if like is not None else tuple(int(node.get("scale", 2)) * d for d in src.shape[-2:])
    )
    return (
        src if src.shape[-2:] == size else F.interpolate(src, size=size, mode="bilinear", align_corners=False)
    )


def spatial_sizes(spec: Mapping[str, Any], size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Spatial size of every node's output for an image of ``size`` (the graph's input is 1/f of
    it with ``pixel_unshuffle`` f)."""
    f = unshuffle_factor(spec)
    sizes = {"input": (-(-int(size[0]) // f), -(-int(size[1]) // f))}
    for node in spec["nodes"]:
        first = sizes[node["inputs"][0]]
        if node["op"] == "conv":
            k, s = int(node.get("kernel", 3)), int(node.get("stride", 1))
            p = k // 2
            sizes[node["name"]] = tuple((d + 2 * p - k) // s + 1 for d in first)
        elif node["op"] == "upsample":
            scale = int(node.get("scale", 2))
            sizes[node["name"]] = (
                sizes[node["inputs"][1]] if len(node["inputs"]) > 1 else (first[0] * scale, first[1] * scale)
            )
        else:
            sizes[node["name"]] = first
    return sizes


def flops(spec: Mapping[str, Any], size: tuple[int, int]) -> int:
    """Floating-point operations of one forward pass on one image of ``size``: 2 per convolution
    multiply-add, 1 per element of additions (bias, sums, gates); resizing counted as 4 per element."""
    channels, sizes = node_channels(spec), spatial_sizes(spec, size)
    total = 0
    for node in spec["nodes"]:
        pixels = math.prod(sizes[node["name"]])
        out = channels[node["name"]]
        if node["op"] == "conv":
            cin = sum(channels[i] for i in node["inputs"])
            total += (2 * cin * int(node.get("kernel", 3)) ** 2 + 1) * out * pixels
        elif node["op"] == "add":
            total += len(node["inputs"]) * out * pixels
        elif node["op"] == "upsample":
            total += 4 * out * pixels
    return total


def save_graph(
    net: GraphNet, path: str | Path, metadata: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``path.safetensors`` (weights) and ``path.json`` (graph + metadata) atomically."""
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
    weights, description = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_outputs(weights, description) as (w_tmp, d_tmp):
        save_file(tensors, str(w_tmp), metadata={"format": FORMAT})
        d_tmp.write_text(json.dumps({"graph": net.spec, "metadata": dict(metadata or {})}, indent=1) + "\n")
    return weights, description


def load_graph(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GraphNet, dict[str, Any]]:
    """Load a GraphNet from ``path.json`` + ``path.safetensors`` (no unpickling); returns (net, metadata)."""
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
    description, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for f in (description, weights):
        if not f.is_file():
            raise InputError("model file not found", f)
    try:
        document = json.loads(description.read_text())
        net = GraphNet(document["graph"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a recon network description ({exc})", description) from None
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise InputError(f"cannot read weights ({exc})", weights) from None
    expected = net.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise InputError("weights do not match the network description", weights)
    net.load_state_dict(tensors)
    return net.to(map_location), dict(document.get("metadata", {}))
