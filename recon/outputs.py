"""Write a reconstruction: ``OUT.h5`` (arrays), ``OUT.png`` (figure) and ``OUT.metrics.json``,
all through temporary names renamed together at the end."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import matplotlib
import numpy as np

from recon.files import atomic_outputs

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def sidecar_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """``(OUT.h5, OUT.png, OUT.metrics.json)`` for an output name ``OUT.h5``."""
    out = Path(out)
    return out, out.with_suffix(".png"), out.with_suffix(".metrics.json")


def write_h5(path: Path, arrays: Mapping[str, np.ndarray | None], attrs: Mapping[str, Any]) -> None:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=np.asarray(value), compression="gzip", compression_opts=4)
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)


def figure(
    path: Path,
    panels: Mapping[str, np.ndarray],
    title: str = "",
    *,
    value_range: tuple[float, float] | None = None,
    error_keys: tuple[str, ...] = (),
) -> None:
    """A row of grayscale panels (one slice each); panels named in ``error_keys`` use a colour map."""
    count = len(panels)
    fig, axes = plt.subplots(1, count, figsize=(3.2 * count, 3.6), squeeze=False)
    if value_range is None:
        stack = np.concatenate([p.ravel() for k, p in panels.items() if k not in error_keys])
        value_range = (0.0, float(np.percentile(stack, 99.5)) or 1.0)
    for ax, (name, image) in zip(axes[0], panels.items(), strict=True):
        if name in error_keys:
            shown = ax.imshow(image, cmap="magma")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.imshow(image, cmap="gray", vmin=value_range[0], vmax=value_range[1])
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_reconstruction(
    out: str | Path,
    arrays: Mapping[str, np.ndarray | None],
    attrs: Mapping[str, Any],
    panels: Mapping[str, np.ndarray],
    title: str,
    metrics: Mapping[str, Any] | None,
    error_keys: tuple[str, ...] = (),
) -> tuple[Path, Path, Path]:
    """Write all three outputs atomically; returns their final paths."""
    paths = sidecar_paths(out)
    with atomic_outputs(*paths) as (h5_tmp, png_tmp, json_tmp):
        write_h5(h5_tmp, arrays, attrs)
        figure(png_tmp, panels, title, error_keys=error_keys)
        json_tmp.write_text(json.dumps(dict(metrics or {}), indent=2) + "\n")
    return paths
