"""Learned codec against standard codecs on held-out real MR slices and scikit-image photographs.

    python benchmarks/compression.py [--model PATH] [--json out.json]

Images never used in training: the packaged MR test subjects (dipy ``S0_10``: 10 slices 128×128,
12-bit scanner values; dipy ``t1_coronal_slice``: 256×256, stored as 12-bit), scikit-image's
``camera`` and ``astronaut`` (grayscale, 8-bit), and in colour (RGB, 8-bit; bits per sample)
``astronaut``, ``immunohistochemistry`` and the middle 512×512 of ``retina``. All codecs run in
the same process:

- lossless bits per pixel (from the bytes written) for recon, PNG (level 9), zlib (level 9),
  JPEG-XL lossless, JPEG 2000 reversible, JPEG-LS (imagecodecs), every slice on its own; targets:
  recon ≤ 0.85 × PNG and ≤ JPEG-XL on the MR slices; and recon with each MR volume in one file,
  against JPEG-XL with each volume's slices stacked into one image (its fair peer: JPEG-XL's
  context tree is then learned once per volume);
- lossy: recon's operating points (latent-only, near-lossless δ, rate targets ``--bpp B`` and
  quality targets ``--psnr P``, the targets coded by the ``--fast`` encoder, which picks per slice
  between the polyphase passes and the wavelet transform path) against JPEG 2000 and JPEG at the
  same bpp (each peer's quality bisected per image to the largest setting within recon's bpp);
  target: PSNR above JPEG 2000;
- encode + decode speed in Mpixel/s, best of three runs per image and codec (target ≥ 1 for recon
  on the CPU), for the default encoder
  (it also tries the autoencoder path per slice) and ``--fast`` (no-latent passes only).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import torch

from recon.allocator import retain_freed_memory
from recon.codec import Quality, compress, decompress, load_codec
from recon.codec.model import default_codec
from recon.datasets.builders import VOLUMES


def held_out() -> dict[str, list[np.ndarray]]:
    """Held-out volumes per group, each ``(S, H, W)``; the benchmark codes their slices one by one,
    and recon also each volume as one file."""
    from skimage import color, data

    mr: list[np.ndarray] = []
    for volume in VOLUMES:
        if volume.split != "test":
            continue
        slices = volume.load()
        if not np.allclose(slices, np.round(slices)) or slices.max() <= 1:
            slices = np.round(slices / slices.max() * 4095)
        mr.append(slices.astype(np.uint16))
    natural = [data.camera(), np.round(color.rgb2gray(data.astronaut()) * 255).astype(np.uint8)]
    retina = data.retina()
    middle = (retina.shape[0] - 512) // 2
    colour = [
        data.astronaut(),
        data.immunohistochemistry(),
        retina[middle : middle + 512, middle : middle + 512],
    ]
    return {
        "MR (12-bit)": mr,
        "photographs (8-bit)": [im[None] for im in natural],
        "colour photographs (8-bit RGB, bits per sample)": [im[None] for im in colour],
    }


def peers(bits: int) -> dict[str, tuple[Any, Any]]:
    return {
        "PNG": (lambda x: imagecodecs.png_encode(x, level=9), imagecodecs.png_decode),
        "zlib": (lambda x: imagecodecs.zlib_encode(x.tobytes(), level=9), None),
        "JPEG-XL lossless": (
            lambda x: imagecodecs.jpegxl_encode(x, lossless=True),
            imagecodecs.jpegxl_decode,
        ),
        "JPEG 2000 lossless": (
            lambda x: imagecodecs.jpeg2k_encode(x, level=0, reversible=True, bitspersample=bits),
            imagecodecs.jpeg2k_decode,
        ),
        "JPEG-LS": (lambda x: imagecodecs.jpegls_encode(x, level=0), imagecodecs.jpegls_decode),
    }


REPEATS = 3  # speeds are the best of this many runs (this VM's timings vary by up to ±30%)


def timed(fn, *args):
    """``fn(*args)`` and its best wall time over :data:`REPEATS` runs."""
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def lossless_rows(volumes: list[np.ndarray], model) -> dict[str, dict[str, float]]:
    images = [im for volume in volumes for im in volume]
    bits = max(int(im.max()).bit_length() for im in images)
    pixels = sum(im.size for im in images)
    rows: dict[str, dict[str, float]] = {}
    runs = [("recon", False, images), ("recon --fast", True, images)]
    if len(volumes) < len(images):  # stacks: the adaptive counts carry over from slice to slice
        runs += [("recon, volumes", False, volumes), ("recon --fast, volumes", True, volumes)]
    for name, fast, arrays in runs:
        total, seconds = 0, 0.0
        for array in arrays:
            data, t_enc = timed(lambda x, fast=fast: compress(x, model, fast=fast), array)
            back, t_dec = timed(decompress, data, model)
            assert np.array_equal(back, array), "recon lossless round trip failed"
            total, seconds = total + len(data), seconds + t_enc + t_dec
        rows[name] = {"bpp": 8 * total / pixels, "mpix_per_s": pixels / seconds / 1e6}
    codecs = peers(bits)
    peer_runs = [(name, codec, images) for name, codec in codecs.items()]
    if len(volumes) < len(images):  # JPEG-XL also gets each volume, its slices stacked into one image
        stacked = [volume.reshape(-1, volume.shape[-1]) for volume in volumes]
        peer_runs.append(("JPEG-XL lossless, volumes", codecs["JPEG-XL lossless"], stacked))
    for name, (encode, decode), arrays in peer_runs:
        total, seconds = 0, 0.0
        for image in arrays:
            data, t_enc = timed(encode, image)
            t_dec = 0.0
            if decode is not None:
                back, t_dec = timed(decode, data)
                assert np.array_equal(np.asarray(back).reshape(image.shape), image), f"{name} is not lossless"
            total, seconds = total + len(data), seconds + t_enc + t_dec
        rows[name] = {"bpp": 8 * total / pixels, "mpix_per_s": pixels / seconds / 1e6}
    return rows


def _mse(image: np.ndarray, decoded) -> float:
    return float(np.mean((image.astype(np.float64) - np.asarray(decoded).reshape(image.shape)) ** 2))


def _match_rate(encode, decode, image: np.ndarray, budget_bytes: float, low: float, high: float):
    """Largest peer quality within ``budget_bytes``: (mse, bytes), or None if none fits."""
    best = None
    for _ in range(14):
        mid = (low + high) / 2
        data = encode(image, mid)
        if len(data) <= budget_bytes:
            best = (_mse(image, decode(data)), len(data))
            low = mid
        else:
            high = mid
    return best


def _label(quality: Quality) -> str:
    if quality.latent_only:
        return "latent only"
    if quality.psnr is not None:
        return f"psnr>={quality.psnr:g}"
    return f"delta={quality.delta}" if quality.delta is not None else f"bpp<={quality.bpp}"


def lossy_rows(images: list[np.ndarray], model, points: list[Quality]) -> list[dict[str, Any]]:
    bits = max(int(im.max()).bit_length() for im in images)
    levels = (1 << bits) - 1
    j2k = (lambda x, q: imagecodecs.jpeg2k_encode(x, level=q, bitspersample=bits), imagecodecs.jpeg2k_decode)
    jpeg = (
        lambda x, q: imagecodecs.jpeg8_encode(x, level=round(q), bitspersample=bits),
        imagecodecs.jpeg8_decode,
    )
    rows = []
    for quality in points:
        r = {"point": _label(quality), "recon_bpp": 0.0}
        errors: dict[str, list[float]] = {"recon": [], "JPEG 2000": [], "JPEG": []}  # MSE per image
        pixels = sum(im.size for im in images)
        peer_bits = {"JPEG 2000": 0.0, "JPEG": 0.0}
        for image in images:
            data = compress(image, model, quality, fast=quality.bpp is not None or quality.psnr is not None)
            r["recon_bpp"] += 8 * len(data) / pixels
            errors["recon"].append(_mse(image, decompress(data, model)))
            for name, (encode, decode), span in (("JPEG 2000", j2k, (15, 100)), ("JPEG", jpeg, (1, 100))):
                match = _match_rate(encode, decode, image, len(data), *span)
                errors[name].append(match[0] if match else math.nan)
                peer_bits[name] += 8 * (match[1] if match else 0) / pixels
        for name, values in errors.items():  # PSNR of the group's mean MSE (lossless images count 0)
            r[f"{name}_psnr"] = 10 * math.log10(levels**2 / max(float(np.mean(values)), 1e-300))
        r |= {f"{k}_bpp": v for k, v in peer_bits.items()}
        rows.append(r)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="codec model (default: the bundled one)")
    parser.add_argument("--deltas", default="1,3,8,20", help="near-lossless points (error bound)")
    parser.add_argument("--rates", default="0.5,1,2,3", help="rate-target points, bits per pixel")
    parser.add_argument("--psnrs", default="35,40,45", help="quality-target points, dB")
    parser.add_argument("--groups", default="", help="only these groups (comma-separated prefixes: MR,photo)")
    parser.add_argument("--lossy-only", action="store_true", help="skip the lossless rows (and speeds)")
    parser.add_argument("--json")
    args = parser.parse_args()
    retain_freed_memory()  # the allocator settings recon's CLI runs with (recon.allocator)
    model = load_codec(args.model) if args.model else default_codec()
    out: dict[str, Any] = {
        "benchmark": "compression",
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "codec": {"identity": model.identity.hex(), **model.meta},
        "groups": {},
    }
    points = [Quality(latent_only=True)] + [Quality(delta=int(d)) for d in args.deltas.split(",") if d]
    points += [Quality(bpp=float(b)) for b in args.rates.split(",") if b]
    points += [Quality(psnr=float(p)) for p in args.psnrs.split(",") if p]
    for group, volumes in held_out().items():
        if args.groups and not any(group.startswith(g) for g in args.groups.split(",")):
            continue
        images = [im for volume in volumes for im in volume]
        pixels = sum(im.size for im in images)
        print(f"{group}: {len(images)} images, {pixels / 1e6:.2f} Mpixel", flush=True)
        lossless = {} if args.lossy_only else lossless_rows(volumes, model)
        if lossless:
            ref = lossless["recon"]["bpp"]
            print(f"  {'lossless':26s} {'bpp':>7} {'recon/x':>8} {'Mpix/s':>8}")
        for name, row in lossless.items():
            print(f"  {name:26s} {row['bpp']:7.3f} {ref / row['bpp']:8.3f} {row['mpix_per_s']:8.2f}")
        lossy = lossy_rows(images, model, points)
        print(
            f"  {'lossy point':14s} {'bpp':>6} {'recon':>7} {'J2K':>7} {'JPEG':>7}   (PSNR dB at recon's bpp)"
        )
        for r in lossy:
            print(
                f"  {r['point']:14s} {r['recon_bpp']:6.3f} {r['recon_psnr']:7.2f} "
                f"{r['JPEG 2000_psnr']:7.2f} {r['JPEG_psnr']:7.2f}"
            )
        out["groups"][group] = {"images": len(images), "pixels": pixels, "lossless": lossless, "lossy": lossy}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
