r"""A trained codec: the float analysis transform, the integer synthesis and the integer tables.

Stored as ``NAME.safetensors`` + ``NAME.json`` (never pickled). The *identity* of a codec is the
SHA-256 of everything the decoder uses (integer synthesis, latent and residual tables, their
settings); files record it and are decoded only by the codec with the same identity.

Residual contexts: the synthesis' fixed-point log scale :math:`L \approx 2^{FA}\log b` (b in units
of the full intensity range) and the per-slice integer offset :math:`O` (written in the file) give
the context :math:`s = \mathrm{clamp}(\lfloor (L + O)/T + \frac12 \rfloor, 0, S-1)` with
:math:`T` = ``context_step``; context ``s`` holds the token table of a Laplace law of scale
:math:`b_s = e^{\log b_{min} + sT/2^{FA}}` residual units, refined by token counts on training data.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon.codec import subbands
from recon.codec.entropy import (
    CHUNK,
    CHUNK_GROWTH,
    PRIOR_WEIGHT,
    TOKENS,
    laplace_token_probabilities,
    quantize_table,
)
from recon.codec.network import FA, CodecNet, IntegerSynthesis
from recon.codec.polyphase import CONTEXT_CLASSES, ZERO_CLASS
from recon.errors import InputError
from recon.files import read_pair, write_pair

FORMAT = "recon.codec/1"
BUNDLED = Path(__file__).resolve().parent.parent / "bundled" / "codec"
CONTEXTS = 64
LOG_SCALE_MIN = math.log(0.15)  # smallest residual scale (in residual units) with its own context
LOG_SCALE_MAX = math.log(20000.0)
LATENT_RANGE = 63  # latents are clamped to [-63, 63]


def context_step() -> int:
    return round((LOG_SCALE_MAX - LOG_SCALE_MIN) / (CONTEXTS - 1) * (1 << FA))


def context_scales() -> np.ndarray:
    """Laplace scale of every context, in residual units."""
    return np.exp(LOG_SCALE_MIN + np.arange(CONTEXTS) * context_step() / (1 << FA))


def context_offset(levels: int, delta: int) -> int:
    """:math:`O = \\mathrm{round}(2^{FA}(\\log(\\text{levels}/(2\\delta+1)) - \\log b_{min}))`, computed
    by the encoder and stored in the file (the decoder does no float maths)."""
    return round((math.log(max(levels, 1) / (2 * delta + 1)) - LOG_SCALE_MIN) * (1 << FA))


def contexts_of(log_scale: Tensor, offset: int) -> np.ndarray:
    """Context index of every pixel from the fixed-point log scale (exact integer arithmetic)."""
    step = context_step()
    s = torch.floor((log_scale + offset + step // 2) / step).clamp_(0, CONTEXTS - 1)
    return s.to(torch.int64).cpu().numpy()


def latent_tables(location: Tensor, log_scale: Tensor) -> np.ndarray:
    """Integer tables ``(C, 2R+1)`` of the discretised logistic laws (tails folded into the ends)."""
    q = np.arange(-LATENT_RANGE, LATENT_RANGE + 1, dtype=np.float64)
    tables = []
    for mu, ls in zip(location.double().tolist(), log_scale.double().tolist(), strict=True):
        s = math.exp(ls)
        cdf = 1 / (1 + np.exp(-(np.concatenate([q - 0.5, [q[-1] + 0.5]]) - mu) / s))
        cdf[0], cdf[-1] = 0.0, 1.0
        tables.append(quantize_table(np.diff(cdf) + 1e-12))
    return np.stack(tables)


def residual_tables(token_counts: np.ndarray | None = None, prior_weight: float = 2000.0) -> np.ndarray:
    """Token tables ``(CONTEXTS, TOKENS)``: the Laplace law of each context, refined by observed token
    counts (``prior_weight`` pseudo-counts of the Laplace law)."""
    tables = []
    for s, scale in enumerate(context_scales()):
        probs = laplace_token_probabilities(float(scale)) * prior_weight
        if token_counts is not None:
            probs = probs + token_counts[s]
        tables.append(quantize_table(probs))
    return np.stack(tables)


def interpolation_tables(counts: np.ndarray | None = None, prior_weight: float = 2000.0) -> np.ndarray:
    """Token tables ``(3, CONTEXT_CLASSES, TOKENS)`` of the interpolated passes: a Laplace law whose
    scale follows the neighbours' disagreement class, refined by observed token counts."""
    tables = np.zeros((3, CONTEXT_CLASSES, TOKENS), np.int64)
    for k in range(3):
        for c in range(CONTEXT_CLASSES):
            scale = 0.2 if c == ZERO_CLASS else 0.4 * 2.0 ** max(c - 1, 0)
            probs = laplace_token_probabilities(scale) * prior_weight
            if counts is not None:
                probs = probs + counts[k, c]
            tables[k, c] = quantize_table(probs)
    return tables


def wavelet_tables(counts: np.ndarray | None = None, prior_weight: float = 2000.0) -> np.ndarray:
    """Token tables ``(subbands.CONTEXTS, TOKENS)`` of the transform path: a Laplace law whose scale
    grows by √2 per activity class (the low band's differences: scale 8), refined by token counts."""
    tables = np.zeros((subbands.CONTEXTS, TOKENS), np.int64)
    for c in range(subbands.CONTEXTS):
        scale = 8.0 if c == 0 else 0.08 * 2.0 ** (((c - 1) % subbands.CLASSES) / 2)
        probs = laplace_token_probabilities(scale) * prior_weight
        if counts is not None:
            probs = probs + counts[c]
        tables[c] = quantize_table(probs)
    return tables


@dataclass
class CodecModel:
    """What encoding and decoding need; ``net`` (float) is used by the encoder's analysis only."""

    net: CodecNet
    weights: list[Tensor]
    biases: list[Tensor]
    latent_tables: np.ndarray
    residual_tables: np.ndarray
    interp_tables: np.ndarray
    wavelet_tables: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self, number: int) -> np.ndarray:
        """Token tables of polyphase pass ``number`` (0: anchors by residual scale; ``3·level + k``:
        interpolated pass k of a level, by activity; levels share tables)."""
        return self.residual_tables if number == 0 else self.interp_tables[(number - 1) % 3]

    @classmethod
    def from_net(
        cls,
        net: CodecNet,
        token_counts: np.ndarray | None = None,
        interp_counts: np.ndarray | None = None,
        wavelet_counts: np.ndarray | None = None,
        **meta: Any,
    ) -> CodecModel:
        weights, biases = IntegerSynthesis.from_float(net)
        return cls(
            net.eval(),
            weights,
            biases,
            latent_tables(net.location.detach(), net.log_scale.detach()),
            residual_tables(token_counts),
            interpolation_tables(interp_counts),
            wavelet_tables(wavelet_counts),
            meta,
        )

    @cached_property
    def synthesis(self) -> IntegerSynthesis:
        return IntegerSynthesis(self.weights, self.biases)

    def decoder_tensors(self) -> dict[str, Tensor]:
        out = {f"synthesis.{i}.weight": w.to(torch.int64) for i, w in enumerate(self.weights)}
        out |= {f"synthesis.{i}.bias": b.to(torch.int64) for i, b in enumerate(self.biases)}
        out["latent_tables"] = torch.from_numpy(self.latent_tables.astype(np.int64))
        out["residual_tables"] = torch.from_numpy(self.residual_tables.astype(np.int64))
        out["interp_tables"] = torch.from_numpy(self.interp_tables.astype(np.int64))
        out["wavelet_tables"] = torch.from_numpy(self.wavelet_tables.astype(np.int64))
        return out

    def decoder_config(self) -> dict[str, Any]:
        return {
            "latent": self.net.latent,
            "width": self.net.width,
            "fa": FA,
            "contexts": CONTEXTS,
            "context_step": context_step(),
            "latent_range": LATENT_RANGE,
            "adaptive": {"prior_weight": PRIOR_WEIGHT, "chunk": CHUNK, "chunk_growth": CHUNK_GROWTH},
            "wavelet": subbands.settings(),
        }

    @cached_property
    def identity(self) -> bytes:
        """16-byte SHA-256 prefix of the decoder's tensors and settings."""
        digest = hashlib.sha256(json.dumps(self.decoder_config(), sort_keys=True).encode())
        for name, t in sorted(self.decoder_tensors().items()):
            digest.update(name.encode())
            digest.update(t.contiguous().numpy().astype("<i8").tobytes())
        return digest.digest()[:16]


def save_codec(model: CodecModel, path: str | Path) -> tuple[Path, Path]:
    """Write ``path.json`` + ``path.safetensors`` atomically."""
    tensors = {f"analysis.{k}": v.float() for k, v in model.net.analysis.state_dict().items()}
    tensors |= {k: v.to(torch.int32) for k, v in model.decoder_tensors().items()}  # all fit in 32 bits
    document = {
        "format": FORMAT,
        "identity": model.identity.hex(),
        "decoder": model.decoder_config(),
        "meta": model.meta,
    }
    return write_pair(path, document, tensors)


def load_codec(path: str | Path) -> CodecModel:
    """Load a codec written by :func:`save_codec` (``path`` with or without a suffix)."""
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    document, stored = read_pair(
        path, FORMAT, "codec model", "no codec model here (expected NAME.json and NAME.safetensors)"
    )
    tensors = {k: v if v.is_floating_point() else v.long() for k, v in stored.items()}
    try:
        config = document["decoder"]
        net = CodecNet(int(config["latent"]), int(config["width"]))
        net.analysis.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("analysis.")})
        model = CodecModel(
            net.eval(),
            [tensors[f"synthesis.{i}.weight"] for i in range(3)],
            [tensors[f"synthesis.{i}.bias"] for i in range(3)],
            tensors["latent_tables"].numpy(),
            tensors["residual_tables"].numpy(),
            tensors["interp_tables"].numpy(),
            tensors["wavelet_tables"].numpy(),
            document.get("meta", {}),
        )
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"incompatible codec model ({type(exc).__name__}: {exc})", path) from None
    if model.decoder_config() != config or model.identity.hex() != document.get("identity"):
        raise InputError("codec model does not match its recorded identity (modified or corrupt)", path)
    if (
        model.latent_tables.shape != (net.latent, 2 * LATENT_RANGE + 1)
        or model.residual_tables.shape != (CONTEXTS, TOKENS)
        or model.interp_tables.shape != (3, CONTEXT_CLASSES, TOKENS)
        or model.wavelet_tables.shape != (subbands.CONTEXTS, TOKENS)
    ):
        raise InputError("codec model tables have the wrong shape", path)
    return model


def default_codec() -> CodecModel:
    """The codec shipped with recon (``recon/bundled/codec/default``)."""
    if not (BUNDLED / "default.json").is_file():
        raise InputError(
            "no bundled codec in this installation: train one with `recon train-codec` and pass --model"
        )
    return load_codec(BUNDLED / "default")
